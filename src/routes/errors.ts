/**
 * The one place that turns an error into an HTTP answer, for every route of both listeners. A WireError
 * goes out as `{"error": code}` with its status; any parser or framework 4xx is `invalid_request` (413
 * keeps its status); everything else is a bare 500 `server_error` whose details only reach the log. Every
 * denial is logged and counted the same way.
 */
import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { NotFound, SlowDown, TemporarilyUnavailable, WireError, type WireErrorCode } from '../errors.js'
import type { PeerIdentity } from '../identity/peer.js'
import type { Metrics } from '../metrics.js'
import { LogSummary, type LogSummaryOptions } from '@authz/sdk'

/** The caller, once its certificate was judged usable (set by /token's identity hook). */
declare module 'fastify' {
  interface FastifyRequest {
    peer?: PeerIdentity
    /** The error code the request was answered with, once sendError answered it (metrics read it). */
    answeredWith?: WireErrorCode
  }
}

/** Maps any thrown value to the status and wire code a caller sees. */
export function toWireError(err: unknown): { readonly statusCode: number; readonly code: WireErrorCode } {
  if (err instanceof WireError) return { statusCode: err.statusCode, code: err.code }
  const status = (err as Partial<FastifyError> | undefined)?.statusCode
  if (status === 413) return { statusCode: 413, code: 'invalid_request' }
  if (typeof status === 'number' && status >= 400 && status < 500) return { statusCode: 400, code: 'invalid_request' }
  return { statusCode: 500, code: 'server_error' }
}

/** The route a metric label may name: the registered pattern, never a caller-chosen URL. */
const routeOf = (request: FastifyRequest): string => request.routeOptions.url ?? 'unserved'

/**
 * The log lines of answers a caller can repeat at will, each summarised (one line at once, then one per
 * interval with a count): 429s per caller, 503s per reason, and `invalid_client` per certificate name —
 * unknown callers are refused before the rate limit, so nothing else bounds them. Other denials come from
 * callers the policy knows, at most `AUTHZ_RATE_LIMIT` per second each: one line per denial.
 */
export interface DenialLogs {
  readonly rateLimited: LogSummary
  readonly refused: LogSummary
  readonly unknownClients: LogSummary
  close(): void
}

export function denialLogs(logger: LogSummaryOptions['logger'], intervalMs?: number): DenialLogs {
  const common = { logger, ...(intervalMs === undefined ? {} : { intervalMs }) }
  const rateLimited = new LogSummary({ ...common, event: 'rate_limited', message: 'caller over its rate limit', level: 'warn' })
  const refused = new LogSummary({ ...common, event: 'request_refused', message: 'request refused', level: 'warn' })
  const unknownClients = new LogSummary({ ...common, event: 'token_denied', message: 'request denied', level: 'info' })
  return {
    rateLimited,
    refused,
    unknownClients,
    close() {
      for (const summary of [rateLimited, refused, unknownClients]) summary.close()
    },
  }
}

function logDenial(request: FastifyRequest, err: unknown, wire: ReturnType<typeof toWireError>, route: string, logs: DenialLogs | undefined): void {
  const sub = request.peer?.subject
  if (wire.statusCode >= 500 && !(err instanceof WireError)) {
    request.log.error({ err, path: route }, 'request failed')
  } else if (err instanceof SlowDown && logs !== undefined) {
    logs.rateLimited.note(sub ?? '', { path: route, sub })
  } else if (err instanceof TemporarilyUnavailable && logs !== undefined) {
    // An answer we chose (503 while no key can sign): its cause is logged where it happens, once.
    logs.refused.note(err.reason, { error: wire.code, reason: err.reason, path: route })
  } else if (wire.statusCode >= 500) {
    request.log.warn({ event: 'request_refused', error: wire.code, path: route, sub }, 'request refused')
  } else if (wire.code === 'invalid_client' && route === '/token' && logs !== undefined) {
    logs.unknownClients.note(sub ?? '', { error: wire.code, path: route, sub })
  } else if (wire.code === 'not_found') {
    // Scanners probe paths all day: not worth a line at info.
    request.log.debug({ event: 'request_denied', error: wire.code, method: request.method }, 'not found')
  } else {
    request.log.info({ event: route === '/token' ? 'token_denied' : 'request_denied', error: wire.code, path: route, sub }, 'request denied')
  }
}

export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown, metrics: Metrics | undefined, logs?: DenialLogs): FastifyReply {
  const wire = toWireError(err)
  const route = routeOf(request)
  logDenial(request, err, wire, route, logs)
  request.answeredWith = wire.code
  metrics?.requestsDenied.inc({ route, error: wire.code })
  if (route === '/token') metrics?.tokenDenied.inc({ error: wire.code })
  if (err instanceof SlowDown || err instanceof TemporarilyUnavailable) void reply.header('retry-after', String(err.retryAfterSeconds))
  return reply
    .code(wire.statusCode)
    .header('cache-control', 'no-store')
    .header('content-type', 'application/json; charset=utf-8')
    .send(`{"error":"${wire.code}"}`)
}

const CLIENT_ERROR_BODY = '{"error":"invalid_request"}'

/**
 * Node's answer to bytes that are not HTTP (or too slow, or headers too large), replacing Fastify's: our
 * body (or none), and a log line that names the error code only. The error carries the raw bytes
 * received (`rawPacket`), X-Service-Token values included: they never reach a log.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  // A TLS handshake that failed (Node reports it here too): there is no HTTP to answer in, and the
  // failure is counted and logged by reason where it is classified (tls/handshake-failures.ts).
  if (!isHttpError(err.code)) {
    socket.destroy()
    return
  }
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

/** Errors of the HTTP layer (llhttp's `HPE_*`, Node's `ERR_HTTP_*`), as opposed to the TLS layer under it. */
const isHttpError = (code: string | undefined): boolean => code !== undefined && (code.startsWith('HPE_') || code.startsWith('ERR_HTTP_'))

/** Installs the error and not-found handlers on an app (with `logs`, repeated denials are summarised). */
export function installErrorHandling(app: FastifyInstance, metrics: Metrics, logs?: DenialLogs): void {
  if (logs !== undefined) app.addHook('onClose', async () => logs.close())
  app.setErrorHandler((err, request, reply) => sendError(request, reply, err, metrics, logs))
  // A method or path the app does not serve is 404 before anything else runs: whatever its body (an
  // OPTIONS or DELETE with an empty JSON body must not reach the body parser and its 400).
  app.addHook('onRequest', async (request, reply) => {
    if (request.is404) return sendError(request, reply, new NotFound(), metrics)
  })
  app.setNotFoundHandler((request, reply) => sendError(request, reply, new NotFound(), metrics))
}
