/**
 * The ops listener's routes: liveness, readiness, Prometheus metrics. Plain HTTP, bound to loopback or
 * the cluster network by default; it publishes nothing secret.
 *
 * Two probes, two meanings: /healthz says the process answers (and so serves its JWKS, which it always
 * has: a server never starts without a keyset); /readyz says it can issue tokens now. A replica that cannot
 * sign fails /readyz but keeps serving keys: verifiers need them most exactly then.
 */
import type { FastifyInstance } from 'fastify'
import type { Clock } from '../clock.js'
import type { KeyStore } from '../keys/store.js'
import type { Metrics } from '../metrics.js'
import type { PolicyStore } from '../policy/store.js'

export interface OpsDeps {
  readonly keys: KeyStore
  readonly policy: PolicyStore
  readonly metrics: Metrics
  readonly clock: Clock
  /** The CRL in force, when AUTHZ_CRL is set. */
  readonly crl?: { passed(): boolean }
}

export interface Readiness {
  readonly ready: boolean
  /** `crl` only with AUTHZ_CRL. */
  readonly checks: { readonly signing_key: boolean; readonly policy: boolean; readonly crl?: boolean }
}

/** Whether this replica can issue tokens now: what /readyz answers and `authz_ready` reports. */
export function readiness(deps: Pick<OpsDeps, 'keys' | 'policy' | 'crl'>): Readiness {
  // A key signs now, and can: a PKCS#11 token that is down makes this replica not ready.
  const signing = deps.keys.signingAvailable()
  // A PolicyStore only exists around a validated policy; a bad reload keeps the previous one.
  const policy = deps.policy.current !== undefined
  // Past its nextUpdate, the CRL in force makes OpenSSL refuse every client it covers.
  const crl = deps.crl === undefined ? undefined : !deps.crl.passed()
  return { ready: signing && policy && crl !== false, checks: { signing_key: signing, policy, ...(crl === undefined ? {} : { crl }) } }
}

/** Gauges computed at scrape time from (keyset, now), like everything else about keys. */
export function refreshGauges(deps: OpsDeps): void {
  const { metrics, keys } = deps
  const statuses = keys.statuses()
  const active = statuses.find((s) => s.state === 'active')?.key
  // Keys are in activation order: the first next key is the one that activates next.
  const next = statuses.find((s) => s.state === 'next')?.key
  const jwks = keys.jwks()
  metrics.keysPublished.set(jwks.kids.length)
  for (const state of ['next', 'active', 'retired'] as const) metrics.signingKeys.set({ state }, statuses.filter((s) => s.state === state).length)
  metrics.signingKeyInfo.reset()
  if (active !== undefined) metrics.signingKeyInfo.set({ kid: active.kid, alg: active.alg, store: active.store }, 1)
  metrics.signingKeyActivation.set(active === undefined ? undefined : active.activatesAt / 1000)
  metrics.nextKeyActivation.set(next === undefined ? undefined : next.activatesAt / 1000)
  metrics.jwksInfo.reset()
  metrics.jwksInfo.set({ digest: jwks.etag.replaceAll('"', '') }, 1)
  metrics.ready.set(readiness(deps).ready ? 1 : 0)
}

export async function opsRoutes(app: FastifyInstance, deps: OpsDeps): Promise<void> {
  app.get('/healthz', async (_request, reply) => {
    void reply.header('cache-control', 'no-store')
    return { status: 'ok' }
  })

  app.get('/readyz', async (_request, reply) => {
    const { ready, checks } = readiness(deps)
    void reply.code(ready ? 200 : 503).header('cache-control', 'no-store')
    return { status: ready ? 'ready' : 'not_ready', checks }
  })

  app.get('/metrics', async (_request, reply) => {
    refreshGauges(deps)
    void reply.header('content-type', deps.metrics.registry.contentType).header('cache-control', 'no-store')
    return deps.metrics.registry.metrics()
  })
}
