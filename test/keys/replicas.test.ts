import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import t from 'tap'
import { ManualClock } from '../../src/clock.js'
import { rotateKeys } from '../../src/keys/admin.js'
import { startHarness, type Harness } from '../helpers/harness.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }
const min = 60_000

async function kidOfToken(h: Harness): Promise<string> {
  const res = await h.token({ audience: 'inventory-service' })
  return decodeProtectedHeader(res.json<{ access_token: string }>().access_token).kid as string
}

t.test('two replicas sharing one keys directory sign with the same kid before and after an activation', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 12))
  const a = await startHarness(t, { clock })
  const b = await startHarness(t, { clock, keysDir: a.config.keysDir })
  const first = await kidOfToken(a)
  t.equal(await kidOfToken(b), first)

  const { key: next } = await rotateKeys({ dir: a.config.keysDir, timing, clock })
  await Promise.all([a.keys.reload(), b.keys.reload()])
  t.equal((await a.opsCall('/.well-known/jwks.json')).text, (await b.opsCall('/.well-known/jwks.json')).text, 'identical JWKS bytes')
  t.same(a.keys.jwks().kids, [first, next.kid], 'published before it signs')
  t.equal(await kidOfToken(a), first)
  t.equal(await kidOfToken(b), first)

  clock.advance(20 * min)
  t.equal(await kidOfToken(a), next.kid, 'switched at the activation instant')
  t.equal(await kidOfToken(b), next.kid, 'the other replica too, with no coordination')
  t.equal((await a.opsCall('/.well-known/jwks.json')).headers.etag, (await b.opsCall('/.well-known/jwks.json')).headers.etag)
})

t.test('a running server picks up a rotation by itself (directory watch / poll)', async (t) => {
  const h = await startHarness(t, { watchMs: 50 })
  const reloaded = new Promise<void>((resolve) => h.keys.onChange(() => resolve()))
  const { key } = await rotateKeys({ dir: h.config.keysDir, timing, clock: h.clock })
  await reloaded
  t.ok(h.keys.jwks().kids.includes(key.kid), 'new key published without SIGHUP')
  const metrics = (await h.opsCall('/metrics')).text
  t.match(metrics, /authz_keys_published 2/)
  t.ok(metrics.includes(`authz_next_key_activation_timestamp_seconds ${h.clock.now() / 1000 + 1200}\n`), 'the next activation, as a timestamp')
})

t.test('a rotation during a burst loses no request; every token verifies against the JWKS served right then', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '0' } })
  const first = h.keys.signingKey()?.kid
  let rotated: string | undefined
  const one = async (i: number): Promise<string> => {
    if (i === 60) {
      // An emergency-speed rotation in the middle of the burst: active at once (a millisecond after the
      // first key, so "newest activated" is unambiguous).
      h.clock.advance(1)
      rotated = (await rotateKeys({ dir: h.config.keysDir, timing, clock: h.clock }, { activateInMs: 0, force: true })).key.kid
      await h.keys.reload()
    }
    const res = await h.token({ audience: 'inventory-service' })
    if (res.status !== 200) return `status ${res.status}`
    const token = res.json<{ access_token: string }>().access_token
    const jwks = (await h.opsCall('/.well-known/jwks.json')).json<JSONWebKeySet>()
    await jwtVerify(token, createLocalJWKSet(jwks), {
      issuer: 'https://authz.internal',
      audience: 'inventory-service',
      algorithms: ['RS256'],
      currentDate: new Date(h.clock.now()),
    })
    return decodeProtectedHeader(token).kid as string
  }
  const results = await Promise.all(Array.from({ length: 120 }, (_, i) => one(i)))
  t.same(results.filter((r) => r !== first && r !== rotated), [], 'every request got a token that verified')
  t.ok(results.includes(first as string) && results.includes(rotated as string), 'both keys signed during the burst')
  t.equal(h.keys.signingKey()?.kid, rotated)
})
