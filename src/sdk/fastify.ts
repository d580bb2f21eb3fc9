/**
 * `serviceAuth`: a Fastify plugin for receiving services. Every route (unless its config says
 * `serviceAuth: false`) requires an authorized TLS peer certificate and a valid `X-Service-Token` bound to
 * it, then the route's scopes (`config: { scope: 'stock:deduct' }`) or the callee policy's rule for it.
 * Replies a bare 401 (no or invalid token) or 403 (valid token, not allowed) with an empty body, logs
 * `sub`, `aud`, method and path on every denial, never the token, and sets `request.caller`.
 */
import type { TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { satisfies, type CalleePolicy, type RouteRule } from './callee-policy.js'
import { VerifyError } from './errors.js'
import type { VerifiedCaller, Verifier } from './verifier.js'

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

/** Options of the serviceAuth plugin. */
export interface ServiceAuthOptions {
  readonly verifier: Verifier
  /** Route rules from the service's own policy file (used when the route's config has no `scope`). */
  readonly policy?: CalleePolicy
  /** Let through routes that neither config nor policy describe (default false: they answer 403). */
  readonly allowUnlisted?: boolean
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

async function plugin(app: FastifyInstance, options: ServiceAuthOptions): Promise<void> {
  app.decorateRequest('caller', undefined)
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const config = (request.routeOptions.config ?? {}) as ServiceAuthRouteConfig
    if (config.serviceAuth === false) return
    const route = `${request.method} ${request.routeOptions.url ?? request.url}`
    const deny = (status: 401 | 403, reason: string, caller?: VerifiedCaller): FastifyReply => {
      request.log.warn(
        { event: 'service_call_denied', status, reason, sub: caller?.service, aud: caller?.audience, method: request.method, path: request.url },
        'service call denied',
      )
      return reply.code(status).header('cache-control', 'no-store').send()
    }
    const socket = request.raw.socket as TLSSocket
    if (typeof socket.getPeerCertificate !== 'function' || socket.authorized !== true) return deny(401, 'no authorized peer certificate')
    const header = request.headers[SERVICE_TOKEN_HEADER]
    if (typeof header !== 'string') return deny(401, 'ERR_TOKEN_MISSING')
    let caller: VerifiedCaller
    try {
      caller = await options.verifier.verify(header, { peerCertificate: socket.getPeerCertificate(false) })
    } catch (err) {
      return deny(401, err instanceof VerifyError ? err.code : 'ERR_TOKEN_INVALID')
    }
    const rule = ruleFromConfig(config) ?? options.policy?.rule(route)
    if (rule === undefined) {
      if (options.allowUnlisted !== true) return deny(403, 'route not in policy', caller)
    } else if (!satisfies(caller, rule)) {
      return deny(403, 'scope or caller not allowed', caller)
    }
    request.caller = Object.freeze({ service: caller.service, scopes: caller.scopes, tokenId: caller.tokenId })
  })
}

/** The plugin (wrapped with fastify-plugin so it applies to every route of the app). */
export const serviceAuth = fp(plugin, { name: 'authz-service-auth', fastify: '5.x' })
