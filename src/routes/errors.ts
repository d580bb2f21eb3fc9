/**
 * The one place that turns an error into an HTTP answer. OAuth errors go out as `{"error": code}`; any
 * parser or framework 4xx is `invalid_request` (413 keeps its status); everything else is a bare 500
 * `server_error` whose details only reach the log.
 */
import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { OAuthError, SlowDown, type OAuthErrorCode } from '../errors.js'
import type { Metrics } from '../metrics.js'

export interface WireError {
  readonly statusCode: number
  readonly code: OAuthErrorCode
}

/** Maps any thrown value to the status and OAuth code a caller sees. */
export function toWireError(err: unknown): WireError {
  if (err instanceof OAuthError) return { statusCode: err.statusCode, code: err.code }
  const status = (err as Partial<FastifyError> | undefined)?.statusCode
  if (status === 413) return { statusCode: 413, code: 'invalid_request' }
  if (typeof status === 'number' && status >= 400 && status < 500) return { statusCode: 400, code: 'invalid_request' }
  return { statusCode: 500, code: 'server_error' }
}

/** What a denial log line knows about the caller (set by the identity hook). */
declare module 'fastify' {
  interface FastifyRequest {
    callerName?: string
  }
}

export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown, metrics?: Metrics): FastifyReply {
  const wire = toWireError(err)
  if (wire.statusCode >= 500) {
    request.log.error({ err, path: request.routeOptions.url ?? request.url }, 'request failed')
  } else {
    request.log.info(
      { event: 'token_denied', error: wire.code, path: request.routeOptions.url ?? request.url, sub: request.callerName },
      'request denied',
    )
  }
  metrics?.tokenDenied.inc({ error: wire.code })
  if (err instanceof SlowDown) void reply.header('retry-after', String(err.retryAfterSeconds))
  return reply
    .code(wire.statusCode)
    .header('cache-control', 'no-store')
    .header('content-type', 'application/json; charset=utf-8')
    .send(`{"error":"${wire.code}"}`)
}

const notFound = (reply: FastifyReply): FastifyReply =>
  reply.code(404).header('cache-control', 'no-store').header('content-type', 'application/json; charset=utf-8').send('{"error":"not_found"}')

const CLIENT_ERROR_BODY = '{"error":"invalid_request"}'

/**
 * Node's answer to bytes that are not HTTP (or too slow, or headers too large), replacing Fastify's: our
 * body (or none), and a log line that names the error code only. The error carries the raw bytes
 * received (`rawPacket`), X-Service-Token values included: they never reach a log.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400
  this.log.debug({ event: 'client_error', code: err.code, status }, 'malformed request')
  const body = status === 408 ? '' : CLIENT_ERROR_BODY
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nCache-Control: no-store\r\n` +
        (body === '' ? 'Content-Length: 0\r\n\r\n' : `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
    )
  }
  socket.destroy()
}

/** Installs the error and not-found handlers on an app. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => sendError(request, reply, err))
  // A method or path the app does not serve is 404 before anything else runs: whatever its body (an
  // OPTIONS or DELETE with an empty JSON body must not reach the body parser and its 400).
  app.addHook('onRequest', async (request, reply) => {
    if (request.is404) return notFound(reply)
  })
  app.setNotFoundHandler((_request, reply) => notFound(reply))
}
