/**
 * The verified-token cache: it saves the signature and claims checks, and nothing else. The binding is
 * checked on every request, an entry never outlives the token or a key set change, and only verified
 * tokens enter it, within its size.
 */
import t from 'tap'
import { revokeKey } from '../../src/keys/admin.js'
import { ManualClock } from '../../packages/sdk/src/clock.js'
import { TokenCache } from '../../packages/sdk/src/token-cache.js'
import { createVerifier } from '../../packages/sdk/src/verifier.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { claimsAt, signingKey } from '../helpers/jwks-server.js'
import { codeOf, harnessVerifier } from '../helpers/verify.js'



const issue = async (h: Harness, client = h.pki.client('order-service')): Promise<string> =>
  (await h.token({ audience: 'inventory-service' }, client)).json<{ access_token: string }>().access_token

t.test('a cached token replayed over another certificate fails, every time', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h)
  const token = await issue(h)
  const own = { peerCertificate: h.pki.client('order-service').certPem }
  const stolen = { peerCertificate: h.pki.client('payment-service').certPem }
  t.equal(await codeOf(v.verify(token, own)), 'accepted')
  t.equal(v.cachedTokens, 1, 'cached')
  for (let i = 0; i < 3; i++) t.equal(await codeOf(v.verify(token, stolen)), 'ERR_BINDING_MISMATCH', `replay ${i + 1}`)
  t.equal(await codeOf(v.verify(token, { peerThumbprint: 'not-the-thumbprint' })), 'ERR_BINDING_MISMATCH', 'a thumbprint given directly')
  t.equal(await codeOf(v.verify(token, own)), 'accepted', 'the owner still gets through')
  const strict = await harnessVerifier(t, h, { allowNoPeer: false }) // the default
  t.equal(await codeOf(strict.verify(token, own)), 'accepted')
  t.equal(await codeOf(strict.verify(token)), 'ERR_BINDING_REQUIRED', 'cached, and still no certificate, no entry')
})

t.test('a cached token does not outlive its exp, nor the cache bound', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h, { leeway: 0, cache: { maxAgeMs: 60_000 } })
  const token = await issue(h)
  t.equal(await codeOf(v.verify(token)), 'accepted')
  h.clock.advance(599_000)
  t.equal(await codeOf(v.verify(token)), 'accepted', 'a second before exp (re-verified after the 60 s bound)')
  h.clock.advance(1_000)
  t.equal(await codeOf(v.verify(token)), 'ERR_TOKEN_EXPIRED', 'at exp: verified again, and refused')
})

t.test('a token cached just before a revoke does not outlive the key set change', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h)
  const token = await issue(h)
  t.equal(await codeOf(v.verify(token)), 'accepted')
  t.equal(v.cachedTokens, 1)
  const kid = h.keys.signingKey()?.kid as string
  await revokeKey({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: h.clock }, kid)
  await h.keys.reload()
  t.equal(await v.refresh(), true, 'the periodic refresh sees the new JWKS')
  t.equal(v.cachedTokens, 0, 'cleared')
  t.equal(await codeOf(v.verify(token)), 'ERR_TOKEN_UNKNOWN_KID', 'the revoked key signs nothing any more, cached or not')
})

t.test('garbage, forged and refused tokens never enter the cache; its size is bounded', async (t) => {
  const issuer = await signingKey('RS256')
  const rogue = await signingKey('RS256')
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 12))
  const v = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: { keys: [issuer.jwk] }, clock, cache: { maxEntries: 50 }, allowNoPeer: true })
  const good = await issuer.sign(claimsAt(clock.now()))
  const [header, payload] = good.split('.') as [string, string]
  for (let i = 0; i < 300; i++) {
    await codeOf(v.verify(`garbage-${i}`))
    await codeOf(v.verify(`${header}.${payload}.${Buffer.from(`sig${i}`).toString('base64url')}`))
  }
  for (let i = 0; i < 20; i++) await codeOf(v.verify(await rogue.sign(claimsAt(clock.now()))))
  t.equal(await codeOf(v.verify(await issuer.sign(claimsAt(clock.now(), { aud: 'order-service' })))), 'ERR_TOKEN_AUDIENCE')
  t.equal(v.cachedTokens, 0, '621 bad tokens, none cached')
  const tokens = await Promise.all(Array.from({ length: 120 }, () => issuer.sign(claimsAt(clock.now()))))
  for (const token of tokens) t.equal(await codeOf(v.verify(token)), 'accepted')
  t.equal(v.cachedTokens, 50, 'at most maxEntries')
  t.equal(await codeOf(v.verify(tokens[0] as string)), 'accepted', 'an evicted token is simply verified again')
  const off = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', keys: { keys: [issuer.jwk] }, clock, cache: false, allowNoPeer: true })
  t.equal(await codeOf(off.verify(good)), 'accepted')
  t.equal(off.cachedTokens, 0, 'cache: false')
})

t.test('TokenCache: least recently used out first; options checked', async (t) => {
  const clock = new ManualClock(0)
  const cache = new TokenCache<string>(clock, { maxEntries: 2, maxAgeMs: 1000 })
  cache.set('a', 'A', 10_000)
  cache.set('b', 'B', 10_000)
  t.equal(cache.get('a'), 'A', 'a used: b is now the oldest')
  cache.set('c', 'C', 10_000)
  t.same([cache.get('a'), cache.get('b'), cache.get('c')], ['A', undefined, 'C'])
  clock.advance(1000)
  t.equal(cache.get('a'), undefined, 'the bound')
  t.equal(cache.size, 1)
  t.throws(() => new TokenCache(clock, { maxEntries: 0 }), TypeError)
  t.throws(() => new TokenCache(clock, { maxAgeMs: 0 }), TypeError)
})
