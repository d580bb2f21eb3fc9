/**
 * Authorization server metadata (RFC 8414), served at both well-known names. It describes a client
 * credentials-only server that authenticates clients with mTLS (RFC 8705) and binds tokens to their
 * certificates.
 */
import type { FastifyInstance } from 'fastify'
import type { Policy } from '../policy/policy.js'
import type { Jwks, KeyStore } from '../keys/store.js'
import type { PolicyStore } from '../policy/store.js'
import { JWKS_PATH } from './jwks.js'

/**
 * `algorithms`: the `alg` of every published key, so a verifier configured from this document allows
 * exactly what it may meet (RS256 by default; ES256 once an ES256 key is published).
 */
export function metadata(issuer: string, policy: Policy, algorithms: readonly string[] = ['RS256']): Record<string, unknown> {
  const base = issuer.replace(/\/+$/, '')
  const scopes = new Set<string>()
  for (const byAudience of policy.grants.values()) for (const list of byAudience.values()) for (const s of list) scopes.add(s)
  return {
    issuer,
    token_endpoint: `${base}/token`,
    jwks_uri: `${base}${JWKS_PATH}`,
    grant_types_supported: ['client_credentials'],
    // No authorization endpoint: no response type is supported (RFC 8414 requires the member).
    response_types_supported: [],
    token_endpoint_auth_methods_supported: ['tls_client_auth'],
    tls_client_certificate_bound_access_tokens: true,
    mtls_endpoint_aliases: { token_endpoint: `${base}/token` },
    scopes_supported: [...scopes].sort(),
    access_token_signing_alg_values_supported: algorithms.length === 0 ? ['RS256'] : [...algorithms],
  }
}

export async function discoveryRoutes(app: FastifyInstance, deps: { issuer: string; policy: PolicyStore; keys: KeyStore; maxAge: number }): Promise<void> {
  // It lists the published algorithms, which change with the keys: cached no longer than the JWKS.
  const cacheControl = `public, max-age=${deps.maxAge}`
  let cachedFor: { policy: Policy; jwks: Jwks } | undefined
  let body = ''
  const handler = async (): Promise<string> => {
    const current = { policy: deps.policy.current, jwks: deps.keys.jwks() }
    if (current.policy !== cachedFor?.policy || current.jwks !== cachedFor.jwks) {
      const algorithms = [...new Set(deps.keys.statuses().filter((s) => s.state !== 'expired').map((s) => s.key.alg))].sort().reverse()
      body = JSON.stringify(metadata(deps.issuer, current.policy, algorithms))
      cachedFor = current
    }
    return body
  }
  for (const url of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    app.get(url, async (_request, reply) => {
      void reply.header('content-type', 'application/json; charset=utf-8').header('cache-control', cacheControl)
      return handler()
    })
  }
}
