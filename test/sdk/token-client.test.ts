import { createServer } from 'node:https'
import { decodeJwt } from 'jose'
import t, { type Test } from 'tap'
import { REFRESH_BEFORE_MS, TokenClient, type RefreshEvent } from '../../packages/sdk/src/token-client.js'
import { TokenClientError } from '../../packages/sdk/src/errors.js'
import { ManualClock } from '../../packages/sdk/src/clock.js'
import { thumbprintOf } from '../../packages/sdk/src/certificate.js'
import { TlsFiles } from '../../packages/sdk/src/tls-files.js'
import { createClientCert } from '../../src/pki/dev-pki.js'
import { boundTo } from '../helpers/callee.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { VALID_FROM } from '../helpers/material.js'
import { testPki } from '../helpers/pki.js'
import { kubeletVolume } from '../helpers/tls-files.js'

function clientFor(t: Test, h: Harness, name = 'order-service', extra: Partial<ConstructorParameters<typeof TokenClient>[0]> = {}) {
  const pair = h.pki.client(name)
  const client = new TokenClient({
    tokenUrl: `https://localhost:${h.port}/token`,
    ca: h.pki.ca.certPem,
    cert: pair.certPem,
    key: pair.keyPem,
    clock: h.clock,
    backgroundRefresh: false,
    random: () => 0.5,
    ...extra,
  })
  t.teardown(() => client.close())
  return client
}

const issued = (h: Harness) => h.logs.records().filter((r) => r.event === 'token_issued').length

t.test('getToken returns a token for the audience and caches it', async (t) => {
  const h = await startHarness(t)
  const client = clientFor(t, h)
  const token = await client.getToken('inventory-service', 'stock:read')
  t.match(decodeJwt(token), { sub: 'order-service', aud: 'inventory-service', scope: 'stock:read' })
  t.equal(await client.getToken('inventory-service', ['stock:read']), token, 'same (audience, scopes): cached')
  t.not(await client.getToken('inventory-service'), token, 'other scopes: another token')
  t.equal(issued(h), 2)
})

t.test('100 concurrent callers share one request', async (t) => {
  const h = await startHarness(t)
  const client = clientFor(t, h)
  const tokens = await Promise.all(Array.from({ length: 100 }, () => client.getToken('inventory-service')))
  t.equal(new Set(tokens).size, 1)
  t.equal(issued(h), 1)
})

/** The refreshes a client reports, and a promise for the next one. */
function refreshes() {
  const events: RefreshEvent[] = []
  let waiting: ((e: RefreshEvent) => void) | undefined
  return {
    events,
    onRefresh: (e: RefreshEvent) => {
      events.push(e)
      waiting?.(e)
      waiting = undefined
    },
    next: () => new Promise<RefreshEvent>((resolve) => (waiting = resolve)),
  }
}

t.test('refresh timing: at about half the lifetime, in the background, never later than exp − 60 s', async (t) => {
  const h = await startHarness(t)
  const seen = refreshes()
  const client = clientFor(t, h, 'order-service', { onRefresh: seen.onRefresh })
  const first = await client.getToken('inventory-service')
  const start = h.clock.now()
  h.clock.advance(299_000) // 600 s lifetime × 0.5, jitter 0 with random()=0.5
  t.equal(await client.getToken('inventory-service'), first, 'before the refresh instant: cached')
  h.clock.advance(1_000)
  const refreshed = seen.next()
  t.equal(await client.getToken('inventory-service'), first, 'at the refresh instant: still served from cache...')
  t.match(await refreshed, { ok: true, startedAt: start + 300_000 }, '...while one refresh runs in the background, started then')
  t.same(seen.events.map((e) => e.startedAt - start), [0, 300_000], 'not before')
  t.equal(issued(h), 2)
  const second = await client.getToken('inventory-service')
  t.not(second, first, 'then the fresh token')

  // Jitter bounds and the exp − 60 s cap.
  const late = refreshes()
  const capped = clientFor(t, h, 'order-service', { refreshRatio: 0.95, random: () => 1, onRefresh: late.onRefresh })
  await capped.getToken('inventory-service', 'stock:read')
  const issuedAt = h.clock.now()
  h.clock.advance(539_000)
  await capped.getToken('inventory-service', 'stock:read') // exp − 61 s: not yet
  h.clock.advance(1_000)
  const capRefresh = late.next()
  await capped.getToken('inventory-service', 'stock:read')
  await capRefresh
  t.same(
    late.events.map((e) => e.startedAt - issuedAt),
    [0, 540_000],
    'refreshed at exp − 60 s (not at exp − 61 s) although 95 % + 10 % jitter would be later',
  )
})

t.test('when authz is down: the cached token is served until it expires, with backoff; then a typed error', async (t) => {
  const h = await startHarness(t)
  const seen = refreshes()
  const client = clientFor(t, h, 'order-service', { retry: { initialMs: 1000, maxMs: 8000 }, onRefresh: seen.onRefresh })
  const token = await client.getToken('inventory-service')
  const start = h.clock.now()
  await h.main.close()
  h.clock.advance(300_000)
  const failed = seen.next()
  t.equal(await client.getToken('inventory-service'), token, 'refresh fails, cached token still served')
  t.match(await failed, { ok: false, error: { code: 'ERR_TOKEN_NETWORK' } }, 'the background refresh failed')
  h.clock.advance(400) // within the backoff (0.5–1 s after the first failure)
  t.equal(await client.getToken('inventory-service'), token, 'within the backoff: cached token')
  h.clock.set(start + 600_000) // the token's exp
  const err = await client.getToken('inventory-service').catch((e: unknown) => e)
  t.ok(err instanceof TokenClientError)
  t.equal((err as TokenClientError).code, 'ERR_TOKEN_NETWORK', 'expired and unreachable')
  t.same(
    seen.events.map((e) => [e.startedAt - start, e.ok]),
    [
      [0, true],
      [300_000, false],
      [600_000, false],
    ],
    'no attempt within the backoff',
  )
})

t.test('a refusal is ERR_TOKEN_DENIED with the OAuth error', async (t) => {
  const h = await startHarness(t)
  const client = clientFor(t, h)
  const err = (await client.getToken('payment-service').catch((e: unknown) => e)) as TokenClientError
  t.equal(err.code, 'ERR_TOKEN_DENIED')
  t.equal(err.oauthError, 'invalid_target')
  t.equal(err.status, 400)
  const scopeErr = (await client.getToken('inventory-service', 'stock:write').catch((e: unknown) => e)) as TokenClientError
  t.equal(scopeErr.oauthError, 'invalid_scope')
  client.close()
  t.equal(((await client.getToken('inventory-service').catch((e: unknown) => e)) as TokenClientError).code, 'ERR_CLIENT_CLOSED')
})

t.test('options are checked', async (t) => {
  t.throws(() => new TokenClient({ tokenUrl: 'http://x/token', ca: '', cert: '', key: '' }), TypeError)
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '', key: '', refreshRatio: 1 }), TypeError)
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '', key: '', jitter: 1 }), TypeError)
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '', key: '', refreshBeforeMs: Number.NaN }), TypeError)
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '', key: '', minRemainingMs: Number.NaN }), TypeError, 'the deprecated name still means it')
  t.equal(REFRESH_BEFORE_MS, 60_000, "the Go kit's DefaultRefreshBefore too")
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '', key: '', retry: { maxMs: -1 } }), TypeError)
})

/**
 * An mTLS token endpoint that destroys the connection of the first `resets` requests (as authz does with
 * old keep-alive connections after a CA or CRL update), then answers a token.
 */
async function resettingEndpoint(t: Test, resets: number) {
  const pki = testPki()
  const seen = { requests: 0, connections: 0 }
  const server = createServer({ ca: pki.ca.certPem, cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    seen.requests++
    if (seen.requests <= resets) {
      req.socket.destroy()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: `token-${seen.requests}`, token_type: 'Bearer', expires_in: 600 }))
  })
  server.on('secureConnection', () => seen.connections++)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const pair = pki.client('order-service')
  const clock = new ManualClock()
  const client = new TokenClient({
    tokenUrl: `https://localhost:${(server.address() as { port: number }).port}/token`,
    ca: pki.ca.certPem,
    cert: pair.certPem,
    key: pair.keyPem,
    backgroundRefresh: false,
    clock,
  })
  t.teardown(() => client.close())
  return { client, seen, clock }
}

t.test('a first getToken that meets a reset connection retries once, on a fresh connection', async (t) => {
  const { client, seen } = await resettingEndpoint(t, 1)
  t.equal(await client.getToken('inventory-service'), 'token-2', 'the caller never sees the reset')
  t.same(seen, { requests: 2, connections: 2 }, 'the retry came on a new connection')
})

t.test('only once: a second reset is a typed network error', async (t) => {
  const { client, seen, clock } = await resettingEndpoint(t, 2)
  const err = (await client.getToken('inventory-service').catch((e: unknown) => e)) as TokenClientError
  t.equal(err.code, 'ERR_TOKEN_NETWORK')
  t.equal(seen.requests, 2, 'two attempts, no more')
  clock.advance(1000) // the first backoff is 0.5–1 s
  t.equal(await client.getToken('inventory-service'), 'token-3', 'the next call after the backoff asks again')
})

t.test('nothing cached and authz failing: callers within the backoff get the last error, without a request', async (t) => {
  const h = await startHarness(t)
  const seen = refreshes()
  const client = clientFor(t, h, 'order-service', { retry: { initialMs: 1000, maxMs: 8000 }, onRefresh: seen.onRefresh })
  await h.main.close()
  const first = await client.getToken('inventory-service').catch((e: unknown) => e)
  t.match(first, { code: 'ERR_TOKEN_NETWORK' })
  for (let i = 0; i < 50; i++) t.equal(await client.getToken('inventory-service').catch((e: unknown) => e), first, 'the same error, at once')
  t.equal(seen.events.length, 1, 'one request for 51 calls')
  h.clock.advance(999) // random() = 0.5: the first backoff is 750 ms
  t.match(await client.getToken('inventory-service').catch((e: unknown) => e), { code: 'ERR_TOKEN_NETWORK' })
  t.equal(seen.events.length, 2, 'after the backoff: a new request')
  h.clock.advance(1000) // second backoff: 1.5 s
  await client.getToken('inventory-service').catch(() => undefined)
  t.equal(seen.events.length, 2, 'the backoff grows')
})

t.test("authz's Retry-After on a 429 holds every caller back that long", async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '1' } })
  const seen = refreshes()
  const client = clientFor(t, h, 'order-service', { onRefresh: seen.onRefresh })
  await client.getToken('inventory-service')
  const denied = (await client.getToken('inventory-service', 'stock:read').catch((e: unknown) => e)) as TokenClientError
  t.match(denied, { code: 'ERR_TOKEN_DENIED', status: 429, oauthError: 'slow_down' })
  t.ok(denied.retryAfterSeconds !== undefined && denied.retryAfterSeconds >= 1, 'Retry-After is read')
  h.clock.advance((denied.retryAfterSeconds as number) * 1000 - 1)
  t.equal(await client.getToken('inventory-service', 'stock:read').catch((e: unknown) => e), denied, 'not asked again before Retry-After')
  t.equal(seen.events.length, 2)
  h.clock.advance(1)
  t.ok(await client.getToken('inventory-service', 'stock:read'), 'asked again at Retry-After, and granted')
  t.equal(seen.events.length, 3)
})

t.test('an onRefresh listener that throws changes nothing: the token is cached and served', async (t) => {
  const h = await startHarness(t)
  let calls = 0
  const client = clientFor(t, h, 'order-service', {
    onRefresh: () => {
      calls++
      throw new Error('metrics down')
    },
  })
  const token = await client.getToken('inventory-service')
  t.equal(await client.getToken('inventory-service'), token, 'cached')
  t.equal(await client.getToken('inventory-service'), token)
  t.equal(issued(h), 1, 'one request to authz')
  t.equal(calls, 1)
})

t.test('invalidate: the next getToken fetches; at most once per key per cooldown; a token already replaced stays', async (t) => {
  const h = await startHarness(t)
  const client = clientFor(t, h, 'order-service', { invalidateCooldownMs: 10_000 })
  const first = await client.getToken('inventory-service', 'stock:read')
  t.equal(client.invalidate('inventory-service', ['stock:read']), true, 'dropped')
  const second = await client.getToken('inventory-service', 'stock:read')
  t.not(second, first, 'a new token')
  t.equal(issued(h), 2)
  t.equal(client.invalidate('inventory-service', 'stock:read', first), true, 'a 401 for the token already replaced: nothing to drop...')
  t.equal(await client.getToken('inventory-service', 'stock:read'), second, '...the new one stays')
  t.equal(client.invalidate('inventory-service', 'stock:read', second), false, 'within the cooldown: kept')
  t.equal(await client.getToken('inventory-service', 'stock:read'), second)
  t.equal(client.invalidate('inventory-service', 'stock:read'), false)
  h.clock.advance(10_000)
  t.equal(client.invalidate('inventory-service', 'stock:read', second), true, 'after it: dropped')
  t.not(await client.getToken('inventory-service', 'stock:read'), second)
  t.equal(issued(h), 3, 'one request per drop, never more')
  t.equal(client.invalidate('inventory-service', 'stock:deduct'), true, 'nothing cached for that key: the next getToken fetches anyway')
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '', key: '', invalidateCooldownMs: -1 }), TypeError)
  t.throws(() => new TokenClient({ tokenUrl: 'https://x/token', ca: '', cert: '' }), TypeError, 'a key is needed')
})

t.test('with TLS files: a renewal drops the old certificate’s tokens; new tokens are bound to the new one', async (t) => {
  const h = await startHarness(t)
  const first = h.pki.client('order-service')
  const dir = kubeletVolume(t.testdir(), first, h.pki.ca.certPem)
  const files = new TlsFiles(dir.paths, { pollMs: 0 })
  t.teardown(() => files.close())
  const seen = refreshes()
  const client = new TokenClient({ tokenUrl: `https://localhost:${h.port}/token`, tls: files, clock: h.clock, backgroundRefresh: false, onRefresh: seen.onRefresh })
  t.teardown(() => client.close())
  const old = await client.getToken('inventory-service')
  t.equal(boundTo(old), thumbprintOf(first.certPem))
  const oldMaterial = client.tls
  const renewed = createClientCert(h.pki.ca, 'order-service', VALID_FROM)
  dir.write(renewed, h.pki.ca.certPem)
  t.equal(await files.reload(), true)
  t.not(client.tls, oldMaterial, 'the client follows the files')
  const fresh = await client.getToken('inventory-service')
  t.not(fresh, old, 'the old certificate’s token is not served any more')
  t.equal(boundTo(fresh), thumbprintOf(renewed.certPem), 'bound to the renewed certificate')
  t.equal(await client.tokenFor(client.tls, 'inventory-service'), fresh, 'tokenFor the material in force: the cached token')
  const late = await client.tokenFor(oldMaterial, 'inventory-service')
  t.equal(boundTo(late), thumbprintOf(first.certPem), 'tokenFor a replaced material: a token bound to it, for a connection opened with it')
  t.equal(await client.getToken('inventory-service'), fresh, '...which is not cached')
  await t.rejects(client.tokenFor({ ca: '', cert: '', key: '' }, 'inventory-service'), TypeError, 'only material of this client')
  t.same(
    seen.events.map((e) => e.ok),
    [true, true],
    'two requests reported: the one-off request for the replaced material is not a refresh',
  )
})
