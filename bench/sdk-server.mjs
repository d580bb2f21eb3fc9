// One receiving service for bench/sdk.mjs, in a process of its own so its CPU can be read from /proc:
// a minimal Fastify route over mTLS, bare or guarded by serviceAuth (verified-token cache on or off).
//   node bench/sdk-server.mjs '<json: {variant, port, ca, cert, key, jwks}>'   → prints "ready" once listening
import { readFileSync } from 'node:fs'
import { createVerifier } from '@authz/sdk'
import { serviceAuth } from '@authz/sdk/fastify'
import Fastify from 'fastify'

const opts = JSON.parse(process.argv[2])
const app = Fastify({
  logger: false,
  https: { ca: readFileSync(opts.ca), cert: readFileSync(opts.cert), key: readFileSync(opts.key), requestCert: true, rejectUnauthorized: true },
})
if (opts.variant !== 'bare') {
  const verifier = await createVerifier({
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    keys: opts.jwks,
    ...(opts.variant === 'no-cache' ? { cache: false } : {}),
  })
  await app.register(serviceAuth, { verifier })
}
app.get('/stock/:sku', { config: { scope: 'stock:read' } }, async (request) => ({ sku: request.params.sku, available: 10 }))
await app.listen({ host: '127.0.0.1', port: opts.port })
process.stdout.write('ready\n')
process.on('SIGTERM', () => app.close().then(() => process.exit(0)))
