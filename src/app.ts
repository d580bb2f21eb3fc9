/**
 * The two Fastify apps, built but never listening (server.ts listens; tests listen on port 0):
 *   - main: HTTPS with mandatory client certificates; /token, JWKS and discovery
 *   - ops: plain HTTP for probes and Prometheus; health, readiness, metrics and the JWKS
 */
import type { Server as HttpsServer } from 'node:https'
import type { TLSSocket } from 'node:tls'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type RawServerBase } from 'fastify'
import type { Logger } from 'pino'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import type { KeyStore } from './keys/store.js'
import type { Metrics } from './metrics.js'
import type { PolicyStore } from './policy/store.js'
import { RateLimiter } from './rate-limit.js'
import { discoveryRoutes } from './routes/discovery.js'
import { clientErrorHandler, denialLogs, installErrorHandling } from './routes/errors.js'
import { jwksRoutes } from './routes/jwks.js'
import { opsRoutes } from './routes/ops.js'
import { TOKEN_BODY_LIMIT, tokenRoutes } from './routes/token.js'
import { HandshakeAdmission } from './tls/admission.js'
import { ConnectionLifetimes } from './tls/connections.js'
import { watchHandshakeFailures } from './tls/handshake-failures.js'
import { DEFAULT_LIMITS, tlsOptions, type ConnectionLimits, type TlsMaterial } from './tls/options.js'
import { rotateTicketKeys } from './tls/tickets.js'

export type { ConnectionLimits, TlsMaterial }

/** What the apps need besides the config: stores, metrics, clock, logger. */
export interface AppDeps {
  readonly keys: KeyStore
  readonly policy: PolicyStore
  readonly metrics: Metrics
  readonly clock: Clock
  /** A pino logger (Fastify's type for it). */
  readonly logger: FastifyBaseLogger
  /** The CRL in force, when AUTHZ_CRL is set: readiness fails once it is past its nextUpdate. */
  readonly crl?: { passed(): boolean }
  /** Overrides jti generation (tests). */
  readonly randomUUID?: () => string
  /** How often the TLS session-ticket key is replaced, ms (default 1 h). */
  readonly ticketKeyRotationMs?: number
  /** Connection limits of the main listener (defaults: DEFAULT_LIMITS). */
  readonly limits?: Partial<ConnectionLimits>
  /** Interval of the summary lines of repeated denials, ms (default 10 s). */
  readonly logSummaryMs?: number
}

const commonOptions = {
  bodyLimit: TOKEN_BODY_LIMIT,
  onProtoPoisoning: 'error',
  onConstructorPoisoning: 'error',
  // While draining, requests that still arrive on open connections are served, not refused with
  // Fastify's own 503 body: a caller never sees a body that is not ours.
  return503OnClosing: false,
  routerOptions: { maxParamLength: 256 },
  trustProxy: false,
  clientErrorHandler,
} as const

/** The main app: Fastify over an HTTPS (TLS) server. */
export type MainApp = FastifyInstance<HttpsServer>

/**
 * The main listener's accept queue. Node's default (511) overflows under a flood of reconnects, and a real
 * caller's SYN that finds it full is retransmitted a second later; the kernel caps it at somaxconn.
 */
export const MAIN_LISTEN_BACKLOG = 4096

const lifetimes = new WeakMap<object, ConnectionLifetimes>()

/** The connection lifetimes of an app built here (retire on trust change, drain on shutdown). */
export function connectionsOf(app: MainApp | FastifyInstance): ConnectionLifetimes {
  const found = lifetimes.get(app)
  if (found === undefined) throw new TypeError('not an app built by buildApp or buildOpsApp')
  return found
}

/**
 * Registers an app's connection lifetimes: retired, too old, refused, or the server is draining, an
 * answer is its connection's last.
 */
function trackLifetimes<S extends RawServerBase>(app: FastifyInstance<S>, connections: ConnectionLifetimes): ConnectionLifetimes {
  lifetimes.set(app, connections)
  app.addHook('onSend', async (request, reply) => {
    if (connections.closeReason(request.raw.socket) !== undefined) void reply.header('connection', 'close')
  })
  return connections
}

/** Builds the main (mTLS) app. It does not listen. */
export async function buildApp(config: Config, tls: TlsMaterial, deps: AppDeps): Promise<MainApp> {
  const limits = { ...DEFAULT_LIMITS, ...deps.limits }
  const app = Fastify({
    ...commonOptions,
    requestTimeout: limits.requestMs,
    keepAliveTimeout: limits.keepAliveMs,
    // Our own lines (one per issuance, one per denial) replace Fastify's per-request log lines.
    logController: new LogController({ disableRequestLogging: true }),
    https: tlsOptions(tls, limits),
    loggerInstance: deps.logger.child({ listener: 'main' }),
  })
  const server = app.server
  // Budgets: authenticated connections, handshaking ones, per source (replaces net's maxConnections,
  // which counted a silent socket like a caller). First: it decides before anything else sees a socket.
  const logger = deps.logger.child({ listener: 'main' }) as unknown as Logger
  const admission = new HandshakeAdmission(server, config, deps.metrics, logger)
  // A connection's certificate, and so its identity, must not change under us (TLS 1.2 renegotiation).
  server.on('secureConnection', (socket: TLSSocket) => socket.disableRenegotiation())
  const connections = trackLifetimes(app, new ConnectionLifetimes(server, { clock: deps.clock, maxAgeMs: config.maxConnectionAge * 1000 }))
  const failures = watchHandshakeFailures(server, deps.metrics, logger, {
    closedByServer: (raw) => admission.shedSocket(raw) || connections.draining,
    onFailure: (reason) => void (reason === 'crl_expired' && deps.crl?.passed()),
  })
  const stopTickets = rotateTicketKeys(server, deps.ticketKeyRotationMs)
  app.addHook('onClose', async () => {
    stopTickets()
    admission.close()
    failures.close()
  })
  app.removeContentTypeParser('text/plain')
  installErrorHandling(app, deps.metrics, denialLogs(app.log, deps.logSummaryMs))
  const rateLimiter = new RateLimiter(config.rateLimit, deps.clock)
  await app.register(tokenRoutes, { config, rateLimiter, connections, ...deps })
  await app.register(jwksRoutes, { keys: deps.keys, maxAge: config.jwksMaxAge })
  await app.register(discoveryRoutes, { issuer: config.issuer, policy: deps.policy, keys: deps.keys, maxAge: config.jwksMaxAge })
  return app
}

/** Builds the ops (plain HTTP) app. It does not listen. */
export async function buildOpsApp(config: Config, deps: AppDeps): Promise<FastifyInstance> {
  const limits = { ...DEFAULT_LIMITS, ...deps.limits }
  const app = Fastify({
    ...commonOptions,
    // The same hygiene as the main listener: it may face a whole cluster network.
    requestTimeout: limits.requestMs,
    keepAliveTimeout: limits.keepAliveMs,
    http: { headersTimeout: limits.headersMs, maxHeaderSize: limits.maxHeaderBytes, connectionsCheckingInterval: limits.checkIntervalMs },
    logController: new LogController({ disableRequestLogging: true }),
    loggerInstance: deps.logger.child({ listener: 'ops' }),
  })
  trackLifetimes(app, new ConnectionLifetimes(app.server, { clock: deps.clock, maxAgeMs: 0, plain: true }))
  app.removeAllContentTypeParsers()
  installErrorHandling(app, deps.metrics)
  await app.register(opsRoutes, deps)
  await app.register(jwksRoutes, { keys: deps.keys, maxAge: config.jwksMaxAge })
  return app
}
