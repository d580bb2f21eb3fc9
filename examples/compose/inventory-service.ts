/**
 * inventory-service as a standalone process, for docker-compose.yml: a receiving service over mTLS that
 * verifies authz tokens offline against authz's JWKS (ops listener) and applies its own route policy.
 * HTTP only (the in-process demo, examples/demo.ts, also shows gRPC).
 *
 * Environment: JWKS_URL, ISSUER (default https://authz.internal), TLS_CA, TLS_CERT, TLS_KEY (this
 * service's server certificate), CALLEE_POLICY (default examples/inventory-policy.json), PORT (default 8443).
 */
import { readFileSync } from 'node:fs'
import Fastify from 'fastify'
import { CalleePolicy, createVerifier } from '@authz/sdk'
import { serviceAuth } from '@authz/sdk/fastify'
import { required as requiredEnv } from './env.js'

const required = (name: string): string => requiredEnv('inventory-service', name)

const verifier = await createVerifier({
  issuer: process.env.ISSUER ?? 'https://authz.internal',
  audience: 'inventory-service',
  jwksUrl: required('JWKS_URL'),
  // authz may still be starting: keep trying in the background instead of failing the start.
  startWithoutKeys: true,
})
// Watched from the start (a 2 s poll): a bad new file is reported once and the rules in force stay.
const policy = await CalleePolicy.load(process.env.CALLEE_POLICY ?? 'examples/inventory-policy.json', {
  onReload: (err) => err && console.error(`inventory-service: callee policy reload failed: ${err.message}`),
})

const stock = new Map<string, number>([['sku-1', 1000]])
const app = Fastify({
  https: {
    ca: readFileSync(required('TLS_CA')),
    cert: readFileSync(required('TLS_CERT')),
    key: readFileSync(required('TLS_KEY')),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
  },
  logger: true,
})
await app.register(serviceAuth, { verifier, policy })
app.get('/healthz', { config: { serviceAuth: false } }, async () => ({ status: 'ok' }))
app.get<{ Params: { sku: string } }>('/stock/:sku', async (request) => ({
  sku: request.params.sku,
  available: stock.get(request.params.sku) ?? 0,
  caller: request.caller?.service,
}))
app.post<{ Params: { sku: string } }>('/stock/:sku/deduct', { config: { scope: 'stock:deduct', callers: ['order-service'] } }, async (request) => {
  const left = (stock.get(request.params.sku) ?? 0) - 1
  stock.set(request.params.sku, left)
  return { sku: request.params.sku, available: left, caller: request.caller?.service }
})

await app.listen({ host: '0.0.0.0', port: Number(process.env.PORT ?? 8443) })

const stop = (): void => {
  verifier.close()
  policy.close()
  app.close().then(
    () => process.exit(0),
    () => process.exit(1),
  )
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
