/**
 * order-service as a standalone process, for docker-compose.yml: a calling service. It keeps one
 * TokenClient (mTLS to authz, tokens cached and refreshed in the background) on its certificate files
 * (TlsFiles: a renewed certificate is followed without a restart), and calls inventory-service every few
 * seconds with serviceFetch (the token bound to the certificate of the connection, one retry with a fresh
 * token on a 401), printing one JSON line per call: an allowed read, an allowed deduct, and a deduct with
 * a read-only token that inventory-service must refuse (403).
 *
 * Environment: TOKEN_URL (authz's /token), INVENTORY_URL, TLS_CA, TLS_CERT, TLS_KEY (this service's
 * client certificate, CN=order-service), INTERVAL_MS (default 5000), ROUNDS (default 0: run until stopped).
 */
import { serviceFetch, TlsFiles, TokenClient } from '@authz/sdk'
import { required as requiredEnv } from './env.js'

const required = (name: string): string => requiredEnv('order-service', name)

const tls = new TlsFiles({ caFile: required('TLS_CA'), certFile: required('TLS_CERT'), keyFile: required('TLS_KEY') })
const inventory = required('INVENTORY_URL').replace(/\/+$/, '')
const tokens = new TokenClient({ tokenUrl: required('TOKEN_URL'), tls })
const intervalMs = Number(process.env.INTERVAL_MS ?? 5000)
const rounds = Number(process.env.ROUNDS ?? 0)

// One fetch per scope set, made once: each keeps its keep-alive connections to inventory-service.
const fetchers = new Map<string, ReturnType<typeof serviceFetch>>()
async function call(method: string, path: string, scope: string): Promise<{ status: number; body: string }> {
  let inventoryFetch = fetchers.get(scope)
  if (inventoryFetch === undefined) fetchers.set(scope, (inventoryFetch = serviceFetch(tokens, 'inventory-service', scope)))
  const res = await inventoryFetch(`${inventory}${path}`, { method })
  return { status: res.status, body: await res.text() }
}

async function round(): Promise<boolean> {
  const steps: [string, string, string, number][] = [
    ['GET', '/stock/sku-1', 'stock:read', 200],
    ['POST', '/stock/sku-1/deduct', 'stock:deduct', 200],
    ['POST', '/stock/sku-1/deduct', 'stock:read', 403],
  ]
  let ok = true
  for (const [method, path, scope, expected] of steps) {
    try {
      const res = await call(method, path, scope)
      ok &&= res.status === expected
      console.log(JSON.stringify({ call: `${method} ${path}`, scope, expected, status: res.status, body: res.body }))
    } catch (err) {
      ok = false
      console.log(JSON.stringify({ call: `${method} ${path}`, scope, expected, error: (err as Error).message }))
    }
  }
  return ok
}

let stopped = false
const stop = (): void => {
  stopped = true
  tokens.close()
  tls.close()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)

let failures = 0
for (let i = 1; !stopped && (rounds === 0 || i <= rounds); i++) {
  if (!(await round())) failures++
  if (!stopped && (rounds === 0 || i < rounds)) await new Promise((r) => setTimeout(r, intervalMs))
}
if (!stopped) stop()
process.exitCode = failures === 0 ? 0 : 1
