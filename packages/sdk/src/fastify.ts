/**
 * `serviceAuth`: a Fastify plugin for receiving services. Every route (unless its config says
 * `serviceAuth: false`) requires an authorized TLS peer certificate and a valid `X-Service-Token` bound to
 * it, then the route's scopes (`config: { scope: 'stock:deduct' }`) or the callee policy's rule for it.
 * Replies a bare 401 (no or invalid token) or 403 (valid token, not allowed) with an empty body, logs
 * denials with their reason (the shared vocabulary), method, path and — once a token's signature verified —
 * `sub` and `aud`, never the token, bounded (`DenialLog`: a line at once per reason and caller, then a count
 * per interval); sets `request.caller`. The pipeline is `createGuard`'s, the one the gRPC wrappers use.
 * With `tls` (a TlsFiles), the server puts renewed certificates in force for new connections.
 */
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { RouteRule } from './callee-policy.js'
import { peerThumbprintOf } from './certificate.js'
import { DenialLog, type DenialLogOptions } from './denial-log.js'
import { createGuard, type GuardOptions, type Verdict } from './guard.js'
import type { TlsFiles } from './tls-files.js'
import type { VerifiedCaller } from './verifier.js'

/** The request header that carries the token. */
export const SERVICE_TOKEN_HEADER = 'x-service-token'

/** What a route may say in its `config`. */
export interface ServiceAuthRouteConfig {
  /** Scope(s) the caller's token must carry. */
  scope?: string | string[]
  /** Only these callers. */
  callers?: string[]
  /** `false` exempts the route (health checks). */
  serviceAuth?: boolean
}

/**
 * Options of the serviceAuth plugin: the verifier, the policy (used when the route's config has no
 * `scope`), `allowUnlisted` (routes neither config nor policy describe answer 403 unless true), the
 * `onDecision` hook, and these.
 */
export interface ServiceAuthOptions extends GuardOptions {
  /**
   * The server's TLS material from files (the one given to Fastify as `https: tls.serverOptions()`): renewed
   * certificates, keys and CA bundles are put in force for the connections accepted from then on.
   */
  readonly tls?: TlsFiles
  /** The bounded denial log's interval (default 10 s). */
  readonly denialLog?: DenialLogOptions
}

/** The verified caller of a request. */
export interface RequestCaller {
  readonly service: string
  readonly scopes: readonly string[]
  readonly tokenId: string
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: RequestCaller
  }
}

function ruleFromConfig(config: ServiceAuthRouteConfig): RouteRule | undefined {
  if (config.scope === undefined && config.callers === undefined) return undefined
  const scopes = config.scope === undefined ? [] : Array.isArray(config.scope) ? config.scope : [config.scope]
  return { scopes, ...(config.callers === undefined ? {} : { callers: config.callers }) }
}

// A connection's certificate cannot change while it is open (TLS 1.3 has no renegotiation; see the README
// for TLS 1.2), so its thumbprint is computed once per connection, not once per request.
const thumbprints = new WeakMap<TLSSocket, string | null>()
function peerThumbprint(socket: TLSSocket): string | null {
  let thumbprint = thumbprints.get(socket)
  if (thumbprint === undefined) {
    thumbprint = peerThumbprintOf(socket.getPeerCertificate(false)) ?? null
    thumbprints.set(socket, thumbprint)
  }
  return thumbprint
}


/**
 * Every X-Service-Token field as sent, HTTP/1.1 or HTTP/2: two of them are no token (Node's `headers` would
 * join them with ", ", and HTTP/2 requests have no `headersDistinct`).
 */
function tokensOf(rawHeaders: readonly string[]): string[] {
  const tokens: string[] = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === SERVICE_TOKEN_HEADER) tokens.push(rawHeaders[i + 1] as string)
  }
  return tokens
}

/** What a route's config says, read once per route (Fastify's route config object lives as long as the route). */
interface RouteAuth {
  readonly exempt: boolean
  readonly rule: RouteRule | undefined
}
const routeAuth = new WeakMap<object, RouteAuth>()
const NO_CONFIG: RouteAuth = { exempt: false, rule: undefined }
function authOf(config: ServiceAuthRouteConfig | undefined): RouteAuth {
  if (config === undefined) return NO_CONFIG
  let auth = routeAuth.get(config)
  if (auth === undefined) {
    auth = Object.freeze({ exempt: config.serviceAuth === false, rule: ruleFromConfig(config) })
    routeAuth.set(config, auth)
  }
  return auth
}

// One RequestCaller per verified token (the verifier caches the VerifiedCaller), not one per request.
const requestCallers = new WeakMap<VerifiedCaller, RequestCaller>()
function requestCallerOf(caller: VerifiedCaller): RequestCaller {
  let view = requestCallers.get(caller)
  if (view === undefined) {
    view = Object.freeze({ service: caller.service, scopes: caller.scopes, tokenId: caller.tokenId })
    requestCallers.set(caller, view)
  }
  return view
}

async function plugin(app: FastifyInstance, options: ServiceAuthOptions): Promise<void> {
  const guard = createGuard(options)
  const denials = new DenialLog(app.log, options.denialLog)
  const server = app.server as unknown as Partial<TlsServer>
  if (options.tls !== undefined && typeof server.setSecureContext !== 'function') throw new TypeError('serviceAuth: tls needs an https server (Fastify({ https: tls.serverOptions() }))')
  const unwatch = options.tls?.watchServer(server as TlsServer)
  app.addHook('onClose', async () => {
    unwatch?.()
    denials.close()
  })
  app.decorateRequest('caller', undefined)
  // A callback hook, not an async one: a cached token is decided without a promise (the hot path of a
  // receiving service that sees the same token thousands of times).
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    const route = request.routeOptions
    const auth = authOf(route.config as ServiceAuthRouteConfig | undefined)
    if (auth.exempt) return done()
    const socket = request.raw.socket as TLSSocket
    const verified = typeof socket.getPeerCertificate === 'function' && socket.authorized === true
    const answer = (verdict: Verdict): void => {
      if (!verdict.allowed) {
        denials.note(verdict)
        void reply.code(verdict.status).header('cache-control', 'no-store').send()
        return
      }
      request.caller = requestCallerOf(verdict.caller)
      done()
    }
    const verdict = guard({
      peerThumbprint: verified ? (peerThumbprint(socket) ?? undefined) : undefined,
      tokens: tokensOf(request.raw.rawHeaders),
      key: `${request.method} ${route.url ?? request.url}`,
      rule: auth.rule,
      method: request.method,
      path: request.url,
    })
    if (verdict instanceof Promise) verdict.then(answer).catch(done)
    else answer(verdict)
  })
}

/**
 * The plugin. It applies to every route of the app it is registered on (what fastify-plugin does, without
 * the dependency: the SDK's only runtime dependency is jose).
 */
export const serviceAuth: FastifyPluginAsync<ServiceAuthOptions> = Object.assign(plugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'authz-service-auth',
  [Symbol.for('plugin-meta')]: { name: 'authz-service-auth', fastify: '5.x' },
})
