/**
 * The two Fastify apps, built but never listening (server.ts listens; tests listen on port 0):
 *   - main: HTTPS with mandatory client certificates; /token, JWKS and discovery
 *   - ops: plain HTTP for probes and Prometheus; health, readiness, metrics and the JWKS
 */
import { constants, randomBytes } from 'node:crypto'
import type { SecureContextOptions, Server as TlsServer, TLSSocket } from 'node:tls'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import type { KeyStore } from './keys/store.js'
import type { Metrics } from './metrics.js'
import type { PolicyStore } from './policy/store.js'
import { RateLimiter } from './rate-limit.js'
import { discoveryRoutes } from './routes/discovery.js'
import { installErrorHandling } from './routes/errors.js'
import { jwksRoutes } from './routes/jwks.js'
import { opsRoutes } from './routes/ops.js'
import { TOKEN_BODY_LIMIT, tokenRoutes } from './routes/token.js'

/** TLS 1.2 suites: ECDHE key exchange and AEAD ciphers only (TLS 1.3 suites are all AEAD). */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** The PEM material of the main listener. */
export interface TlsMaterial {
  readonly cert: string | Buffer
  readonly key: string | Buffer
  readonly clientCa: string | Buffer
  readonly crl?: string | Buffer | undefined
}

/** What the apps need besides the config: stores, metrics, clock, logger. */
export interface AppDeps {
  readonly keys: KeyStore
  readonly policy: PolicyStore
  readonly metrics: Metrics
  readonly clock: Clock
  readonly logger: FastifyBaseLogger
  /** Overrides jti generation (tests). */
  readonly randomUUID?: () => string
  /** How often the TLS session-ticket key is replaced, ms (default 1 h). */
  readonly ticketKeyRotationMs?: number
  /** Connection limits of the main listener (defaults: DEFAULT_LIMITS). */
  readonly limits?: Partial<ConnectionLimits>
}

export const DEFAULT_TICKET_KEY_ROTATION_MS = 3_600_000

/** What is re-applied with setSecureContext on a reload: certificates, CA, CRL and the TLS policy. */
export function secureContextOptions(tls: TlsMaterial): SecureContextOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    ca: tls.clientCa,
    ...(tls.crl === undefined ? {} : { crl: tls.crl }),
    minVersion: 'TLSv1.2',
    ciphers: TLS12_CIPHERS,
    honorCipherOrder: true,
    // No TLS compression (CRIME), no renegotiation (a connection's identity must not change).
    secureOptions: constants.SSL_OP_NO_COMPRESSION | constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_CIPHER_SERVER_PREFERENCE,
    sessionTimeout: 300,
  }
}

/** Connection hygiene of the main listener, ms unless said otherwise. */
export interface ConnectionLimits {
  /** Time to complete the TLS handshake. */
  readonly handshakeMs: number
  /** Time to receive the complete request headers (slow-loris). */
  readonly headersMs: number
  /** Time to receive the complete request. */
  readonly requestMs: number
  /** Idle time allowed between requests on a keep-alive connection. */
  readonly keepAliveMs: number
  /** Largest request header block, bytes. */
  readonly maxHeaderBytes: number
  /** How often open connections are checked against the header/request timeouts. */
  readonly checkIntervalMs: number
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  handshakeMs: 10_000,
  headersMs: 10_000,
  requestMs: 15_000,
  keepAliveMs: 65_000,
  maxHeaderBytes: 8192,
  checkIntervalMs: 1_000,
}

/** Server options of the main listener: mTLS required, TLS ≥ 1.2, ECDHE + AEAD only, connection limits. */
export function tlsOptions(tls: TlsMaterial, limits: ConnectionLimits = DEFAULT_LIMITS) {
  return {
    ...secureContextOptions(tls),
    requestCert: true as const,
    rejectUnauthorized: true as const,
    handshakeTimeout: limits.handshakeMs,
    headersTimeout: limits.headersMs,
    requestTimeout: limits.requestMs,
    keepAliveTimeout: limits.keepAliveMs,
    maxHeaderSize: limits.maxHeaderBytes,
    connectionsCheckingInterval: limits.checkIntervalMs,
  }
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
} as const

/** The trust generation of each TLS connection, and of each app (bumped when the client CA or CRL changes). */
const generations = new WeakMap<TLSSocket, number>()
const appGenerations = new WeakMap<FastifyInstance, number>()
const currentGeneration = (app: FastifyInstance): number => appGenerations.get(app) ?? 0

/**
 * Called after the client CA bundle or the CRL changed: every connection opened before is retired. Idle
 * keep-alive connections close now; busy ones close after the answer they are working on.
 */
export function retireConnections(app: FastifyInstance): void {
  appGenerations.set(app, currentGeneration(app) + 1)
  ;(app.server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.()
}

/** Builds the main (mTLS) app. It does not listen. */
export async function buildApp(config: Config, tls: TlsMaterial, deps: AppDeps): Promise<FastifyInstance> {
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
  app.server.maxConnections = config.maxConnections
  // A connection's certificate, and so its identity, must not change under us (TLS 1.2 renegotiation).
  app.server.on('secureConnection', (socket: TLSSocket) => {
    socket.disableRenegotiation()
    generations.set(socket, currentGeneration(app))
  })
  // A connection authenticated under a client CA or CRL that has since been replaced must not be used
  // for new requests: its certificate may be revoked now. A request in flight completes and its answer
  // closes the connection; a new request on such a connection closes it unanswered, so the client
  // reconnects and the handshake checks its certificate against the new CRL.
  app.addHook('onRequest', async (request, reply) => {
    const socket = request.raw.socket as TLSSocket
    const born = generations.get(socket)
    if (born !== undefined && born < currentGeneration(app)) {
      socket.destroy()
      // Stop here: no handler runs (and no token is signed) for a request nobody will receive.
      reply.hijack()
    }
  })
  app.addHook('onSend', async (request, reply) => {
    const born = generations.get(request.raw.socket as TLSSocket)
    if (born !== undefined && born < currentGeneration(app)) void reply.header('connection', 'close')
  })
  // Session tickets let a reconnecting caller skip the full handshake (the resumed session keeps the
  // verified client certificate). The ticket key is replaced regularly so a stolen key opens little.
  const tlsServer = app.server as unknown as TlsServer
  tlsServer.setTicketKeys(randomBytes(48))
  const ticketTimer = setInterval(() => tlsServer.setTicketKeys(randomBytes(48)), deps.ticketKeyRotationMs ?? DEFAULT_TICKET_KEY_ROTATION_MS)
  ticketTimer.unref()
  app.addHook('onClose', async () => clearInterval(ticketTimer))
  app.removeContentTypeParser('text/plain')
  installErrorHandling(app)
  const rateLimiter = new RateLimiter(config.rateLimit, deps.clock)
  await app.register(tokenRoutes, { config, rateLimiter, ...deps })
  await app.register(jwksRoutes, { keys: deps.keys, maxAge: config.jwksMaxAge })
  await app.register(discoveryRoutes, { issuer: config.issuer, policy: deps.policy })
  return app
}

/** Builds the ops (plain HTTP) app. It does not listen. */
export async function buildOpsApp(config: Config, deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    ...commonOptions,
    logController: new LogController({ disableRequestLogging: true }),
    loggerInstance: deps.logger.child({ listener: 'ops' }),
  })
  app.removeAllContentTypeParsers()
  installErrorHandling(app)
  await app.register(opsRoutes, deps)
  await app.register(jwksRoutes, { keys: deps.keys, maxAge: config.jwksMaxAge })
  return app
}
