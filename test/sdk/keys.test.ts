/**
 * Where a verifier's keys come from, and what it takes from them: the JWKS refresh as its max-age says
 * (bounded), fetches bounded before the first load, algorithms from the key set (never the token header),
 * and static key sets from JWKS or PEM text.
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import t, { type Test } from 'tap'
import { ManualClock } from '../../packages/sdk/src/clock.js'
import { createVerifier, type VerifierOptions } from '../../packages/sdk/src/verifier.js'
import { claimsAt, signingKey, startJwksServer } from '../helpers/jwks-server.js'
import { codeOf } from '../helpers/verify.js'


// Key-source tests verify tokens without a peer certificate; the binding is verifier.test.ts's.
const base = { issuer: 'https://authz.internal', audience: 'inventory-service', allowNoPeer: true }
const clock = () => new ManualClock(Date.UTC(2026, 0, 1, 12))

async function verifier(t: Test, options: Partial<VerifierOptions>) {
  const v = await createVerifier({ ...base, clock: clock(), ...options })
  t.teardown(() => v.close())
  return v
}

t.test('the JWKS refresh follows Cache-Control max-age, bounded below and above', async (t) => {
  const rsa = await signingKey('RS256')
  const jwks = await startJwksServer(t, { keys: [rsa.jwk] })
  const cases: [string | undefined, number, string][] = [
    ['public, max-age=120', 120, 'max-age=120: two minutes'],
    ['public, max-age=600', 600, 'the issuer default (AUTHZ_JWKS_MAX_AGE=600)'],
    ['max-age=0', 30, 'max-age=0: the lower bound, not a fetch loop'],
    ['no-store', 30, 'no-store: the lower bound'],
    ['max-age=31536000', 3600, 'a year: the upper bound'],
    [undefined, 300, 'no Cache-Control: the fallback'],
  ]
  for (const [header, seconds, name] of cases) {
    jwks.headers = header === undefined ? {} : { 'cache-control': header }
    const v = await verifier(t, { jwksUrl: jwks.url })
    t.equal(v.nextRefreshMs, seconds * 1000, name)
  }
  jwks.headers = { 'cache-control': 'max-age=0' }
  const bounded = await verifier(t, { jwksUrl: jwks.url, jwksMaxAge: { min: 60, max: 120 } })
  t.equal(bounded.nextRefreshMs, 60_000, 'bounds are options')
  await t.rejects(createVerifier({ ...base, jwksUrl: jwks.url, jwksMaxAge: { min: 0 } }), TypeError)
})

t.test('a JWKS endpoint answering garbage: the last good set stays, retried with backoff', async (t) => {
  const rsa = await signingKey('RS256')
  const jwks = await startJwksServer(t, { keys: [rsa.jwk] })
  const c = clock()
  const v = await createVerifier({ ...base, jwksUrl: jwks.url, clock: c })
  t.teardown(() => v.close())
  const token = await rsa.sign(claimsAt(c.now()))
  for (const garbage of ['not json', '{"keys": "no"}', '[]', '{"keys": [{"kty"', '{"keys": []}', JSON.stringify({ keys: [{ ...rsa.jwk, n: 'AQAB', kid: 'x' }] }) /* a 17-bit RSA key */]) {
    jwks.body = garbage
    t.equal(await v.refresh(), false, `garbage ${JSON.stringify(garbage)}: refresh fails`)
    t.same(v.kids, [rsa.kid], 'the last good set stays')
    t.equal(await codeOf(v.verify(token)), 'accepted')
  }
  t.ok((v.nextRefreshMs ?? Infinity) <= 30_000, 'retried within the cooldown, not at the next max-age')
})

t.test('an issuer that moved to algorithms this verifier does not allow: no old key stays trusted (regression)', async (t) => {
  const rsa = await signingKey('RS256')
  const ec = await signingKey('ES256')
  const jwks = await startJwksServer(t, { keys: [rsa.jwk, ec.jwk] })
  const c = clock()
  const rsOnly = await createVerifier({ ...base, jwksUrl: jwks.url, clock: c })
  t.teardown(() => rsOnly.close())
  const old = await rsa.sign(claimsAt(c.now()))
  t.equal(await codeOf(rsOnly.verify(old)), 'accepted')
  // The RSA key is pruned after the migration: the JWKS holds only the ES256 key.
  jwks.body = JSON.stringify({ keys: [ec.jwk] })
  await rsOnly.refresh()
  t.same(rsOnly.kids, [], 'the set is empty: the pruned RSA key is no longer trusted (before: kept for ever)')
  t.not(await codeOf(rsOnly.verify(old)), 'accepted', 'a token of the pruned key is refused')
})

t.test('before the first JWKS load, tokens cannot turn into fetches (startWithoutKeys while authz is down)', async (t) => {
  const rsa = await signingKey('RS256')
  const jwks = await startJwksServer(t)
  jwks.mode = 'reset'
  const c = clock()
  const v = await createVerifier({ ...base, jwksUrl: jwks.url, clock: c, startWithoutKeys: true })
  t.teardown(() => v.close())
  t.equal(jwks.hits, 1, 'the start fetch')
  const tokens = await Promise.all(Array.from({ length: 500 }, (_, i) => rsa.sign(claimsAt(c.now(), { jti: `t${i}` }))))
  const codes: string[] = []
  for (const token of tokens) codes.push(await codeOf(v.verify(token))) // one after another, as requests come
  t.same(new Set(codes), new Set(['ERR_JWKS_UNAVAILABLE']), 'every token: no keys yet')
  t.ok(jwks.hits <= 2, `500 tokens, ${jwks.hits - 1} more fetch(es) (the background retry at most)`)
  // After the cooldown one token may ask again; the endpoint is back, the keys load.
  jwks.mode = 'serve'
  jwks.body = JSON.stringify({ keys: [rsa.jwk] })
  c.advance(30_000)
  t.equal(await codeOf(v.verify(tokens[0] as string)), 'accepted', 'after the cooldown: one fetch, and the keys are there')
})

t.test('algorithms: from the key set, never the token header; ES256 only when allowed', async (t) => {
  const rsa = await signingKey('RS256')
  const ec = await signingKey('ES256')
  const jwks = await startJwksServer(t, { keys: [rsa.jwk, ec.jwk] })
  const c = clock()
  const rsOnly = await createVerifier({ ...base, jwksUrl: jwks.url, clock: c })
  const both = await createVerifier({ ...base, jwksUrl: jwks.url, clock: c, algorithms: ['RS256', 'ES256'] })
  t.teardown(() => (rsOnly.close(), both.close()))
  t.same(rsOnly.kids, [rsa.kid], 'default: the EC key is not trusted at all')
  t.same([...both.kids].sort(), [rsa.kid, ec.kid].sort())

  const es256 = await ec.sign(claimsAt(c.now()))
  t.equal(await codeOf(both.verify(es256)), 'accepted', 'ES256 verifies when allowed')
  t.equal(await codeOf(rsOnly.verify(es256)), 'ERR_TOKEN_ALG', 'ES256 refused by default')
  t.equal(await codeOf(both.verify(await rsa.sign(claimsAt(c.now())))), 'accepted', 'RS256 still verifies')

  // Forgeries: the header names one algorithm, the kid a key of the other.
  const esOnRsaKid = await ec.sign(claimsAt(c.now()), { kid: rsa.kid })
  const rsOnEcKid = await rsa.sign(claimsAt(c.now()), { kid: ec.kid })
  t.equal(await codeOf(both.verify(esOnRsaKid)), 'ERR_TOKEN_ALG', 'an ES256 header on an RSA kid')
  t.equal(await codeOf(both.verify(rsOnEcKid)), 'ERR_TOKEN_ALG', 'an RS256 header on an EC kid')
  t.equal(await codeOf(rsOnly.verify(esOnRsaKid)), 'ERR_TOKEN_ALG', 'an ES256 header on an RSA kid, RS256 only')

  // A JWKS entry whose alg is RS384, or RS256 on an EC key, is not a key at all.
  const misfits = { keys: [{ ...rsa.jwk, alg: 'RS384' }, { ...ec.jwk, alg: 'RS256' }] }
  t.equal(await codeOf(createVerifier({ ...base, keys: misfits, algorithms: ['RS256', 'ES256'] })), 'ERR_JWKS_INVALID', 'keys whose algorithm does not fit them are left out')
  await t.rejects(createVerifier({ ...base, jwksUrl: jwks.url, algorithms: ['HS256' as 'RS256'] }), TypeError, 'HS256 cannot be allowed')
  await t.rejects(createVerifier({ ...base, jwksUrl: jwks.url, algorithms: [] }), TypeError)
})

t.test('a static key set: JWKS text (an environment variable, a file) or PEM public keys; no fetch ever', async (t) => {
  const rsa = await signingKey('RS256')
  const ec = await signingKey('ES256')
  const c = clock()
  const fromEnv = await createVerifier({ ...base, clock: c, keys: JSON.stringify({ keys: [rsa.jwk] }) })
  t.teardown(() => fromEnv.close())
  t.equal(await codeOf(fromEnv.verify(await rsa.sign(claimsAt(c.now())))), 'accepted', 'JWKS text')
  t.equal(fromEnv.nextRefreshMs, undefined, 'never refreshed')
  t.equal(await fromEnv.refresh(), true)
  t.equal(await codeOf(fromEnv.verify(await ec.sign(claimsAt(c.now())))), 'ERR_TOKEN_ALG')
  const other = await signingKey('RS256')
  t.equal(await codeOf(fromEnv.verify(await other.sign(claimsAt(c.now())))), 'ERR_TOKEN_UNKNOWN_KID', 'an unknown kid: no fetch to make')

  // PEM: the kid is the key's RFC 7638 thumbprint, as authz names it.
  const rsaPair = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ecPair = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = [rsaPair.publicKey, ecPair.publicKey].map((k) => k.export({ type: 'spki', format: 'pem' })).join('\n')
  const fromPem = await createVerifier({ ...base, clock: c, keys: pem, algorithms: ['RS256', 'ES256'] })
  t.equal(fromPem.kids.length, 2)
  const { SignJWT, calculateJwkThumbprint } = await import('jose')
  for (const [pair, alg] of [[rsaPair, 'RS256'], [ecPair, 'ES256']] as const) {
    const kid = await calculateJwkThumbprint(pair.publicKey.export({ format: 'jwk' }) as never, 'sha256')
    const token = await new SignJWT(claimsAt(c.now())).setProtectedHeader({ alg, typ: 'at+jwt', kid }).sign(createPrivateKey(pair.privateKey.export({ type: 'pkcs8', format: 'pem' })))
    t.equal(await codeOf(fromPem.verify(token)), 'accepted', `PEM ${alg}`)
  }

  const privatePem = rsaPair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string
  const privateJwk = rsaPair.privateKey.export({ format: 'jwk' })
  for (const [name, keys] of [
    ['a private PEM', privatePem],
    ['a private JWK', JSON.stringify({ keys: [{ ...privateJwk, kid: 'x' }] })],
    ['garbage', 'not a key'],
    ['broken JSON', '{"keys": ['],
    ['an empty set', '{"keys": []}'],
    ['only keys of another algorithm', JSON.stringify({ keys: [ec.jwk] })],
  ] as const) {
    t.equal(await codeOf(createVerifier({ ...base, keys })), 'ERR_JWKS_INVALID', name)
  }
  await t.rejects(createVerifier({ ...base }), TypeError, 'neither jwksUrl nor keys')
  await t.rejects(createVerifier({ ...base, keys: pem, jwksUrl: 'http://127.0.0.1:1/' }), TypeError, 'both')
})

t.test('clock skew: a replica 20 s ahead verifies with the defaults; 40 s ahead does not', async (t) => {
  const rsa = await signingKey('RS256')
  const jwks = await startJwksServer(t, { keys: [rsa.jwk] })
  const c = clock()
  const v = await createVerifier({ ...base, clock: c, jwksUrl: jwks.url })
  t.teardown(() => v.close())
  const ahead = (s: number) => claimsAt(c.now() + s * 1000)
  t.equal(await codeOf(v.verify(await rsa.sign(ahead(20)))), 'accepted', 'iat = nbf = now + 20 s')
  t.equal(await codeOf(v.verify(await rsa.sign(ahead(40)))), 'ERR_TOKEN_NOT_YET_VALID', 'iat = nbf = now + 40 s')
  t.equal(await codeOf(v.verify(await rsa.sign({ ...claimsAt(c.now()), iat: Math.floor(c.now() / 1000) + 40 }))), 'ERR_TOKEN_ISSUED_IN_FUTURE', 'iat 40 s ahead, nbf now')
  const late = claimsAt(c.now() - 625_000) // expired 25 s ago (a replica 25 s behind)
  t.equal(await codeOf(v.verify(await rsa.sign(late))), 'accepted', 'exp 25 s ago: within the default leeway')
})

t.test('lifetime: a leaked key cannot mint long tokens that verifiers accept', async (t) => {
  const rsa = await signingKey('RS256')
  const jwks = await startJwksServer(t, { keys: [rsa.jwk] })
  const c = clock()
  const v = await createVerifier({ ...base, clock: c, jwksUrl: jwks.url })
  t.teardown(() => v.close())
  const now = Math.floor(c.now() / 1000)
  const life = (s: number) => rsa.sign({ ...claimsAt(c.now()), exp: now + s })
  t.equal(await codeOf(v.verify(await life(900))), 'accepted', '15 min: the longest authz issues')
  t.equal(await codeOf(v.verify(await life(930))), 'accepted', '15 min + the leeway')
  t.equal(await codeOf(v.verify(await life(931))), 'ERR_TOKEN_LIFETIME')
  t.equal(await codeOf(v.verify(await life(10 * 365 * 86_400))), 'ERR_TOKEN_LIFETIME', 'ten years')
  const strict = await createVerifier({ ...base, clock: c, keys: { keys: [rsa.jwk] }, maxLifetime: 600 })
  t.teardown(() => strict.close())
  t.equal(await codeOf(strict.verify(await life(601))), 'ERR_TOKEN_LIFETIME', 'maxLifetime is an option')
  t.equal(await codeOf(v.verify(await rsa.sign({ ...claimsAt(c.now()), iat: undefined }))), 'ERR_TOKEN_CLAIMS', 'no iat: no lifetime to bound')
  await t.rejects(createVerifier({ ...base, keys: { keys: [rsa.jwk] }, maxLifetime: 0 }), TypeError)
})
