/**
 * ES256 beside RS256: a P-256 key is an ordinary key (kid = RFC 7638 thumbprint, published with its own
 * alg), tokens are signed with the active key's algorithm, and moving from RS256 to ES256 is an ordinary
 * rotation in which no token fails verification.
 */
import { generateKeyPairSync } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWK } from 'jose'
import t from 'tap'
import { rotateKeys } from '../../src/keys/admin.js'
import { loadKeyset } from '../../src/keys/keyset.js'
import { createVerifier, type Verifier } from '@authz/sdk'
import { startHarness, type Harness } from '../helpers/harness.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }

/**
 * A token from the harness, verified against the JWKS the server serves right now (both algorithms
 * allowed) with jose, and by the SDK's verifier when one is given (as a receiving service does).
 */
async function verifiedToken(h: Harness, sdk?: Verifier): Promise<{ alg: string; kid: string }> {
  const res = await h.token({ audience: 'inventory-service' })
  if (res.status !== 200) throw new Error(`status ${res.status}`)
  const token = res.json<{ access_token: string }>().access_token
  if (sdk !== undefined) await sdk.verify(token)
  const jwks = (await h.opsCall('/.well-known/jwks.json')).json<JSONWebKeySet>()
  const { protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    algorithms: ['RS256', 'ES256'],
    typ: 'at+jwt',
    currentDate: new Date(h.clock.now()),
  })
  return { alg: protectedHeader.alg, kid: protectedHeader.kid as string }
}

t.test('an ES256 key: P-256, kid = RFC 7638 thumbprint, published with alg ES256 and public members only', async (t) => {
  const h = await startHarness(t)
  const { key } = await rotateKeys({ dir: h.config.keysDir, timing, clock: h.clock }, { alg: 'ES256' })
  t.equal(key.alg, 'ES256')
  await h.keys.reload()
  const jwks = (await h.opsCall('/.well-known/jwks.json')).json<{ keys: JWK[] }>()
  const ec = jwks.keys.find((k) => k.kid === key.kid) as JWK
  t.same(Object.keys(ec).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'], 'public members only (no d)')
  t.match(ec, { kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' })
  t.equal(await calculateJwkThumbprint(ec, 'sha256'), key.kid, 'kid is the RFC 7638 thumbprint')
  t.match(jwks.keys.find((k) => k.kid !== key.kid), { kty: 'RSA', alg: 'RS256' }, 'the RS256 key keeps its own alg')
  const discovery = (await h.call({ path: '/.well-known/openid-configuration', client: h.pki.client('order-service') })).json()
  t.same(discovery.access_token_signing_alg_values_supported, ['RS256', 'ES256'], 'discovery advertises what is published')
})

t.test('RS256 → ES256 is an ordinary rotation: both published meanwhile, no token fails verification', async (t) => {
  // A 60 s JWKS max-age: the new key activates 2 min after it is published, well inside a token's lifetime.
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '0', AUTHZ_JWKS_MAX_AGE: '60' } })
  const timing = { tokenTtl: 600, jwksMaxAge: 60 }
  // A receiving service's verifier, allowing both algorithms, fed from the ops JWKS.
  const sdk = await createVerifier({
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`,
    algorithms: ['RS256', 'ES256'],
    cache: false,
    clock: h.clock,
    allowNoPeer: true, // jose and the SDK verify the same token, without a peer certificate
  })
  t.teardown(() => sdk.close?.())
  const before = await verifiedToken(h, sdk)
  t.equal(before.alg, 'RS256')
  const { key } = await rotateKeys({ dir: h.config.keysDir, timing, clock: h.clock }, { alg: 'ES256' })
  await h.keys.reload()
  t.same([...h.keys.jwks().kids].sort(), [before.kid, key.kid].sort(), 'both keys published before the switch')
  // Requests run while the clock crosses the activation instant: a burst, the switch once its first
  // answer is back, a second burst on top of what is still in flight.
  const first = Array.from({ length: 30 }, () => verifiedToken(h, sdk))
  await Promise.race(first)
  h.clock.advance(2 * timing.jwksMaxAge * 1000)
  const second = Array.from({ length: 30 }, () => verifiedToken(h, sdk))
  const results = await Promise.all([...first, ...second])
  const algs = new Set(results.map((r) => r.alg))
  t.same([...algs].sort(), ['ES256', 'RS256'], 'both algorithms signed during the run, every token verified by jose and the SDK')
  const rsOnly = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`, cache: false, clock: h.clock, allowNoPeer: true })
  t.teardown(() => rsOnly.close?.())
  const esToken = (await h.token({ audience: 'inventory-service' })).json<{ access_token: string }>().access_token
  await t.rejects(rsOnly.verify(esToken), { code: 'ERR_TOKEN_ALG' }, 'a verifier left at its default (RS256 only) refuses ES256 tokens')
  const after = await verifiedToken(h)
  t.same(after, { alg: 'ES256', kid: key.kid }, 'the ES256 key signs after its activation')
  t.same(decodeProtectedHeader((await h.token({ audience: 'inventory-service' })).json<{ access_token: string }>().access_token), {
    alg: 'ES256',
    typ: 'at+jwt',
    kid: key.kid,
  })
  t.ok(h.keys.jwks().kids.includes(before.kid), 'the retired RS256 key stays published for its tokens')
})

t.test('a key file must fit its entry’s algorithm', async (t) => {
  const h = await startHarness(t)
  const { key } = await rotateKeys({ dir: h.config.keysDir, timing, clock: h.clock }, { alg: 'ES256' })
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  await writeFile(join(h.config.keysDir, key.file), rsa.export({ type: 'pkcs8', format: 'pem' }) as string)
  await t.rejects(loadKeyset(h.config.keysDir), { code: 'ERR_KEYSET_INVALID', reason: 'key_type' }, 'an RSA key in an ES256 entry')
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey
  await writeFile(join(h.config.keysDir, key.file), p384.export({ type: 'pkcs8', format: 'pem' }) as string)
  await t.rejects(loadKeyset(h.config.keysDir), { code: 'ERR_KEYSET_INVALID', reason: 'key_type' }, 'a P-384 key in an ES256 entry')
})
