/**
 * The one place that turns an error into an HTTP answer. OAuth errors go out as `{"error": code}`; any
 * parser or framework 4xx is `invalid_request` (413 keeps its status); everything else is a bare 500
 * `server_error` whose details only reach the log.
 */
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

/** Installs the error and not-found handlers on an app. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => sendError(request, reply, err))
  app.setNotFoundHandler((_request, reply) =>
    reply.code(404).header('cache-control', 'no-store').header('content-type', 'application/json; charset=utf-8').send('{"error":"not_found"}'),
  )
}
