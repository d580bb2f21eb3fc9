/**
 * serviceFetch against a guarded service over real mTLS: the token and the certificate travel together,
 * a revoked key's 401 is retried once with a fresh token, and a callee that refuses everything costs authz
 * a bounded number of token requests.
 */
import { createServer } from 'node:https'
import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import { serviceFetch } from '../../packages/sdk/src/service-fetch.js'
import { TokenClient, type TokenClientOptions } from '../../packages/sdk/src/token-client.js'
import { revokeKey } from '../../src/keys/admin.js'
import { createServerCert } from '../../src/pki/dev-pki.js'
import { startCallee } from '../helpers/callee.js'
import { startHarness, type Harness } from '../helpers/harness.js'

const issued = (h: Harness): number => h.logs.records().filter((r) => r.event === 'token_issued').length

function tokensOf(t: Test, h: Harness, extra: Partial<TokenClientOptions> = {}): TokenClient {
  const order = h.pki.client('order-service')
  const tokens = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, ca: h.pki.ca.certPem, cert: order.certPem, key: order.keyPem, clock: h.clock, backgroundRefresh: false, ...extra })
  t.teardown(() => tokens.close())
  return tokens
}

/** The README's emergency revoke: the signing key leaves the JWKS, the callee's verifier refetches. */
async function revoke(h: Harness, verifier: { refresh(): Promise<boolean> }): Promise<void> {
  const kid = h.keys.signingKey()?.kid as string
  await revokeKey({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: h.clock }, kid)
  await h.keys.reload()
  await verifier.refresh()
}

t.test('a token for the callee on every request, over the certificate it is bound to', async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h)
  const tokens = tokensOf(t, h)
  const inventory = serviceFetch(tokens, 'inventory-service', 'stock:read')
  const res = await inventory(`https://localhost:${callee.port}/stock/sku-1`)
  t.equal(res.status, 200)
  t.same(await res.json(), { sku: 'sku-1', caller: 'order-service' })
  const posted = await inventory(`https://localhost:${callee.port}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 1 }) })
  t.same(await posted.json(), { body: { n: 1 }, caller: 'order-service' })
  t.equal((await inventory(new URL(`https://localhost:${callee.port}/admin`))).status, 403, 'a 403 as it came')
  t.equal(issued(h), 1, 'one token for all three')
  t.same(new Set(callee.seen.map((s) => s.peer === s.boundTo)), new Set([true]))
  await t.rejects(inventory(`http://localhost:${callee.port}/stock/sku-1`), TypeError, 'https only: a token never travels in clear')
  await t.rejects(inventory(`https://localhost:${callee.port}/stock/sku-1`, { body: 'x' }), TypeError, 'a GET has no body')
  await t.rejects(inventory('https://127.0.0.1:1/stock/sku-1'), { name: 'TypeError', message: 'fetch failed', cause: { code: 'ECONNREFUSED' } })
  await t.rejects(serviceFetch(tokens, 'payment-service')(`https://localhost:${callee.port}/stock/sku-1`), { code: 'ERR_TOKEN_DENIED' }, 'no token: the TokenClientError')
  const aborted = new AbortController()
  aborted.abort()
  await t.rejects(inventory(`https://localhost:${callee.port}/stock/sku-1`, { signal: aborted.signal }), { name: 'AbortError' })
})

t.test("after the README's emergency revoke, a request is retried once with a fresh token: the caller sees no 401", async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h)
  const tokens = tokensOf(t, h)
  const retries: string[] = []
  const inventory = serviceFetch(tokens, 'inventory-service', 'stock:read', { onRetry: (i) => retries.push(`${i.method} ${i.path}`) })
  const url = `https://localhost:${callee.port}/stock/sku-1`
  t.equal((await inventory(url)).status, 200)
  await revoke(h, callee.verifier)
  const results = await Promise.all(Array.from({ length: 20 }, () => inventory(url).then((r) => r.status)))
  t.same(new Set(results), new Set([200]), '20 concurrent requests, every one answered 200')
  t.equal(issued(h), 2, 'one new token for all of them')
  t.ok(retries.length >= 1 && retries.length <= 20, `${retries.length} request(s) retried once`)
  t.equal(callee.counters.snapshot().denied.ERR_TOKEN_UNKNOWN_KID, retries.length, 'each retried request was refused once, never twice')
  const posted = await inventory(`https://localhost:${callee.port}/echo`, { method: 'POST', body: new Blob([JSON.stringify({ a: 1 })], { type: 'application/json' }) })
  t.same(await posted.json(), { body: { a: 1 }, caller: 'order-service' }, 'a Blob body, its type as content-type')
})

t.test('a callee that answers 401 to everything: N requests, a bounded number of token requests', async (t) => {
  const h = await startHarness(t)
  const server = createServerCert(h.pki.ca)
  const received: string[] = []
  const always401 = createServer({ ca: h.pki.ca.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    received.push(req.headers['x-service-token'] as string)
    req.resume()
    res.writeHead(401).end()
  })
  await new Promise<void>((resolve) => always401.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => always401.close(() => resolve())))
  const tokens = tokensOf(t, h)
  const call = serviceFetch(tokens, 'inventory-service', 'stock:read')
  const url = `https://localhost:${(always401.address() as { port: number }).port}/stock/sku-1`
  for (let i = 0; i < 50; i++) t.equal((await call(url, { method: 'PUT', body: `n=${i}` })).status, 401)
  const concurrent = await Promise.all(Array.from({ length: 50 }, () => call(url).then((r) => r.status)))
  t.same(new Set(concurrent), new Set([401]))
  t.equal(issued(h), 2, '100 requests: the first token and one fresh one, no more')
  t.equal(received.length, 101, 'one retry in all, never a loop')
  h.clock.advance(30_000) // the invalidation cooldown
  t.equal((await call(url)).status, 401)
  t.equal(issued(h), 3, 'one more per key per cooldown')
})

t.test('never for a 403, never for a body that streams; a replayable body is sent again whole', async (t) => {
  const h = await startHarness(t)
  const server = createServerCert(h.pki.ca)
  const bodies: string[] = []
  let status = 403
  const callee = createServer({ ca: h.pki.ca.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      bodies.push(body)
      res.writeHead(bodies.length === 1 ? status : 200).end()
    })
  })
  await new Promise<void>((resolve) => callee.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => callee.close(() => resolve())))
  const url = `https://localhost:${(callee.address() as { port: number }).port}/upload`
  const call = serviceFetch(tokensOf(t, h), 'inventory-service', 'stock:read')
  t.equal((await call(url, { method: 'POST', body: 'x' })).status, 403)
  t.equal(bodies.length, 1, '403: not retried')
  bodies.length = 0
  status = 401
  t.equal((await call(url, { method: 'POST', body: Readable.from([Buffer.from('a'), Buffer.from('b')]) })).status, 401, 'a streamed body: its 401 as it came')
  t.same(bodies, ['ab'], 'sent once (its token dropped for the next request)')
  bodies.length = 0
  h.clock.advance(30_000) // the invalidation cooldown
  t.equal((await call(url, { method: 'POST', body: new Uint8Array([104, 105]) })).status, 200)
  t.same(bodies, ['hi', 'hi'], 'bytes: sent again whole')
})

t.test('a 401 whose body never ends does not hold the retry, nor the caller', async (t) => {
  const h = await startHarness(t)
  const server = createServerCert(h.pki.ca)
  let calls = 0
  let dropped: () => void = () => undefined
  const firstClosed = new Promise<void>((resolve) => (dropped = resolve))
  const endless = createServer({ ca: h.pki.ca.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    if (++calls > 1) return void res.end('second')
    res.on('close', dropped)
    res.writeHead(401, { 'content-type': 'text/plain' })
    const chunk = Buffer.alloc(64 << 10, 0x61)
    const pump = (): void => {
      while (res.write(chunk));
    }
    res.on('drain', pump)
    res.on('close', () => res.off('drain', pump))
    pump()
  })
  await new Promise<void>((resolve) => endless.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    endless.closeAllConnections()
    return new Promise<void>((resolve) => endless.close(() => resolve()))
  })
  const call = serviceFetch(tokensOf(t, h), 'inventory-service', 'stock:read')
  const res = await call(`https://localhost:${(endless.address() as { port: number }).port}/x`)
  t.equal(await res.text(), 'second', 'retried with a fresh token')
  await firstClosed // before: read on in the background for as long as the callee kept sending
  t.pass('the endless 401 was dropped, not read')
})
