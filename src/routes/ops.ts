/**
 * The ops listener's routes: liveness, readiness, Prometheus metrics. Plain HTTP, bound to loopback or
 * the cluster network by default; it publishes nothing secret.
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

/** Key gauges are computed at scrape time from (keyset, now), like everything else about keys. */
export function refreshKeyGauges(deps: OpsDeps): void {
  const now = deps.clock.now()
  const statuses = deps.keys.statuses()
  const active = statuses.find((s) => s.state === 'active')
  const next = statuses.find((s) => s.state === 'next')
  deps.metrics.keysPublished.set(deps.keys.jwks().kids.length)
  deps.metrics.activeKeyAgeSeconds.set(active === undefined ? -1 : (now - active.key.activatesAt) / 1000)
  deps.metrics.nextActivationSeconds.set(next === undefined ? -1 : (next.key.activatesAt - now) / 1000)
}

export async function opsRoutes(app: FastifyInstance, deps: OpsDeps): Promise<void> {
  app.get('/healthz', async (_request, reply) => {
    void reply.header('cache-control', 'no-store')
    return { status: 'ok' }
  })

  app.get('/readyz', async (_request, reply) => {
    // A key signs now, and can: a PKCS#11 token that is down makes this replica not ready.
    const signing = deps.keys.signingAvailable()
    // A PolicyStore only exists around a validated policy; a bad reload keeps the previous one.
    const policy = deps.policy.current !== undefined
    // Past its nextUpdate, the CRL in force makes OpenSSL refuse every client it covers.
    const crl = deps.crl === undefined ? undefined : !deps.crl.passed()
    const ready = signing && policy && crl !== false
    void reply.code(ready ? 200 : 503).header('cache-control', 'no-store')
    return { status: ready ? 'ready' : 'not_ready', checks: { signing_key: signing, policy, ...(crl === undefined ? {} : { crl }) } }
  })

  app.get('/metrics', async (_request, reply) => {
    refreshKeyGauges(deps)
    void reply.header('content-type', deps.metrics.registry.contentType).header('cache-control', 'no-store')
    return deps.metrics.registry.metrics()
  })
}
