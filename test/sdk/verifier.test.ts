import { createPrivateKey, createPublicKey, randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { SignJWT, decodeProtectedHeader, type JWTPayload } from 'jose'
import t from 'tap'
import { rotateKeys } from '../../src/keys/admin.js'
import type { VerifyError } from '../../packages/sdk/src/errors.js'
import { createVerifier } from '../../packages/sdk/src/verifier.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { codeOf, harnessVerifier } from '../helpers/verify.js'


async function issue(h: Harness, body: unknown = { audience: 'inventory-service' }, client = h.pki.client('order-service')): Promise<string> {
  return (await h.token(body, client)).json<{ access_token: string }>().access_token
}

/** The issuer's private key, to forge tokens that differ from a real one in exactly one way. */
async function signingKey(h: Harness) {
  const kid = h.keys.signingKey()?.kid as string
  return { kid, key: createPrivateKey(await readFile(join(h.config.keysDir, `${kid}.pem`), 'utf8')) }
}

async function forge(h: Harness, claims: JWTPayload, header: Record<string, unknown> = {}, alg = 'RS256'): Promise<string> {
  const { kid, key } = await signingKey(h)
  const now = Math.floor(h.clock.now() / 1000)
  return new SignJWT({
    iss: 'https://authz.internal',
    sub: 'order-service',
    aud: 'inventory-service',
    iat: now,
    nbf: now,
    exp: now + 600,
    jti: randomUUID(),
    ...claims,
  })
    .setProtectedHeader({ alg, typ: 'at+jwt', kid, ...header })
    .sign(key)
}

/** Counts the requests the ops listener (the JWKS) receives from now on. */
function countRequests(h: Harness): { readonly count: number } {
  const counter = { count: 0 }
  h.ops.server.on('request', () => {
    counter.count++
  })
  return counter
}


t.test('a real token verifies, with its certificate binding', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h)
  const token = await issue(h, { audience: 'inventory-service', scope: 'stock:read' })
  const caller = await v.verify(token, { peerCertificate: h.pki.client('order-service').certPem })
  t.match(caller, { service: 'order-service', audience: 'inventory-service', scopes: ['stock:read'], tokenId: String })
  t.same(v.kids, [h.keys.signingKey()?.kid])
  t.equal(await codeOf(v.verify(token)), 'accepted', 'no peer certificate given, allowNoPeer')
})

t.test('rejections, each with its code', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h)
  const good = await issue(h)
  const other = await harnessVerifier(t, h, { audience: 'order-service' })
  const otherIssuer = await harnessVerifier(t, h, { issuer: 'https://other.internal' })
  const [encHeader, encPayload] = good.split('.') as [string, string]
  const publicPem = createPublicKey((await signingKey(h)).key).export({ type: 'spki', format: 'pem' }) as string
  const noneHeader = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid: decodeProtectedHeader(good).kid })).toString('base64url')
  const hs256 = await new SignJWT(JSON.parse(Buffer.from(encPayload, 'base64url').toString()) as JWTPayload)
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: decodeProtectedHeader(good).kid as string })
    .sign(new TextEncoder().encode(publicPem))
  const cases: [string, () => Promise<unknown>, string][] = [
    ['missing', async () => v.verify(undefined), 'ERR_TOKEN_MISSING'],
    ['garbage', async () => v.verify('not.a.jwt'), 'ERR_TOKEN_MALFORMED'],
    ['alg none', async () => v.verify(`${noneHeader}.${encPayload}.`), 'ERR_TOKEN_ALG'],
    ['HS256 keyed with the public key', async () => v.verify(hs256), 'ERR_TOKEN_ALG'],
    ['RS384', async () => v.verify(await forge(h, {}, {}, 'RS384')), 'ERR_TOKEN_ALG'],
    ['PS256', async () => v.verify(await forge(h, {}, {}, 'PS256')), 'ERR_TOKEN_ALG'],
    ['tampered payload', async () => v.verify(`${encHeader}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(encPayload, 'base64url').toString()), sub: 'payment-service' })).toString('base64url')}.${good.split('.')[2]}`), 'ERR_TOKEN_SIGNATURE'],
    ['wrong audience', async () => other.verify(good), 'ERR_TOKEN_AUDIENCE'],
    ['aud as an array', async () => v.verify(await forge(h, { aud: ['inventory-service'] })), 'ERR_TOKEN_AUDIENCE'],
    ['wrong issuer', async () => otherIssuer.verify(good), 'ERR_TOKEN_ISSUER'],
    ['typ JWT', async () => v.verify(await forge(h, {}, { typ: 'JWT' })), 'ERR_TOKEN_TYP'],
    ['no sub', async () => v.verify(await forge(h, { sub: undefined })), 'ERR_TOKEN_CLAIMS'],
    ['no jti', async () => v.verify(await forge(h, { jti: undefined })), 'ERR_TOKEN_CLAIMS'],
    ['bound to another certificate', async () => v.verify(good, { peerCertificate: h.pki.client('payment-service').certPem }), 'ERR_BINDING_MISMATCH'],
    ['unbound token from an mTLS peer', async () => v.verify(await forge(h, {}), { peerCertificate: h.pki.client('order-service').certPem }), 'ERR_BINDING_REQUIRED'],
  ]
  for (const [name, run, code] of cases) t.equal(await codeOf(run()), code, name)
})

t.test('expiry and not-before, inside and outside the leeway', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h, { leeway: 30 })
  const token = await issue(h)
  h.clock.advance(600_000 + 29_000)
  t.equal(await codeOf(v.verify(token)), 'accepted', 'expired 29 s ago: inside a 30 s leeway')
  h.clock.advance(2_000)
  t.equal(await codeOf(v.verify(token)), 'ERR_TOKEN_EXPIRED', '31 s: outside')
  const now = Math.floor(h.clock.now() / 1000)
  t.equal(await codeOf(v.verify(await forge(h, { nbf: now + 20, iat: now + 20, exp: now + 600 }))), 'accepted', 'nbf 20 s ahead')
  t.equal(await codeOf(v.verify(await forge(h, { nbf: now + 40, iat: now + 40, exp: now + 600 }))), 'ERR_TOKEN_NOT_YET_VALID', 'nbf 40 s ahead')
  await t.rejects(createVerifier({ issuer: 'x', audience: 'y', jwksUrl: 'http://127.0.0.1:1/', leeway: 31 }), TypeError)
})

t.test('a peer certificate is required by default, as in the Go kit (before: only with requireBinding)', async (t) => {
  const h = await startHarness(t)
  const token = await issue(h)
  const own = { peerCertificate: h.pki.client('order-service').certPem }
  for (const [name, extra] of [
    ['the default', {}],
    ['requireBinding: true (deprecated alias)', { allowNoPeer: undefined, requireBinding: true }],
  ] as const) {
    const v = await harnessVerifier(t, h, { allowNoPeer: undefined, ...extra })
    const refused = await v.verify(token).catch((e: unknown) => e as VerifyError)
    t.match(refused, { code: 'ERR_BINDING_REQUIRED', subject: 'order-service', audience: 'inventory-service' }, `${name}: no peer certificate, no entry; the refusal says whose token`)
    t.equal(await codeOf(v.verify(token, own)), 'accepted', `${name}: its own certificate`)
    t.equal(await codeOf(v.verify(token, { peerCertificate: {} as never })), 'ERR_BINDING_REQUIRED', `${name}: Node's {} for "no certificate" is none`)
  }
  const legacy = await harnessVerifier(t, h, { allowNoPeer: undefined, requireBinding: false })
  t.equal(await codeOf(legacy.verify(token)), 'accepted', 'requireBinding: false (deprecated) still means allowNoPeer')
  t.equal(await codeOf(legacy.verify(token, { peerCertificate: h.pki.client('payment-service').certPem })), 'ERR_BINDING_MISMATCH', 'a peer that is given is always checked')
})

t.test('a rotation on the issuer: the new kid verifies after exactly one JWKS refetch', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h, { unknownKidCooldownMs: 30_000 })
  const jwksFetches = countRequests(h)
  const before = v.kids
  // Later than the cooldown after the verifier's start fetch (a refetch never comes sooner than that).
  h.clock.advance(31_000)
  const { key } = await rotateKeys({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: h.clock }, { activateInMs: 0, force: true })
  await h.keys.reload()
  const token = await issue(h)
  t.equal(decodeProtectedHeader(token).kid, key.kid)
  t.equal(await codeOf(v.verify(token)), 'accepted')
  t.equal(jwksFetches.count, 1, 'one refetch on the unknown kid')
  t.not(v.kids, before)
  t.equal(await codeOf(v.verify(await issue(h))), 'accepted')
  t.equal(jwksFetches.count, 1, 'no more')
})

t.test('an unknown kid refetches at most once per cooldown', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h, { unknownKidCooldownMs: 30_000 })
  const jwksFetches = countRequests(h)
  for (let i = 0; i < 5; i++) t.equal(await codeOf(v.verify(await forge(h, {}, { kid: `forged-${i}` }))), 'ERR_TOKEN_UNKNOWN_KID')
  t.equal(jwksFetches.count, 0, 'the start fetch counts: within the cooldown, no refetch at all')
  h.clock.advance(30_000)
  await codeOf(v.verify(await forge(h, {}, { kid: 'forged-x' })))
  await codeOf(v.verify(await forge(h, {}, { kid: 'forged-y' })))
  t.equal(jwksFetches.count, 1, 'after the cooldown: one')
})

t.test('JWKS endpoint down: the last good set stays; down at start: start fails unless told to wait', async (t) => {
  const h = await startHarness(t)
  const v = await harnessVerifier(t, h)
  const token = await issue(h)
  await h.ops.close()
  t.equal(await v.refresh(), false, 'refresh failed')
  t.equal(await codeOf(v.verify(token)), 'accepted', 'verified with the last good set')
  const down = { issuer: 'https://authz.internal', audience: 'inventory-service', jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json` }
  t.equal(await codeOf(createVerifier(down)), 'ERR_JWKS_UNAVAILABLE')
  const waiting = await createVerifier({ ...down, startWithoutKeys: true, clock: h.clock })
  t.teardown(() => waiting.close())
  const legacy = await createVerifier({ ...down, waitForJwks: true, clock: h.clock }) // the deprecated alias
  t.teardown(() => legacy.close())
  t.equal(await codeOf(legacy.verify(token)), 'ERR_JWKS_UNAVAILABLE')
  t.equal(await codeOf(waiting.verify(token)), 'ERR_JWKS_UNAVAILABLE')
})

t.test('JWKS over mTLS from the main listener', async (t) => {
  const h = await startHarness(t)
  const pair = h.pki.client('inventory-service')
  const v = await harnessVerifier(t, h, { jwksUrl: `https://localhost:${h.port}/.well-known/jwks.json`, ca: h.pki.ca.certPem, cert: pair.certPem, key: pair.keyPem })
  t.equal(await codeOf(v.verify(await issue(h))), 'accepted')
})

t.test('the issuer signs ES256: its JWKS entry carries the alg, and the verifier takes it when allowed', async (t) => {
  const h = await startHarness(t)
  const both = await harnessVerifier(t, h, { algorithms: ['RS256', 'ES256'] })
  const rsOnly = await harnessVerifier(t, h)
  const rsToken = await issue(h)
  h.clock.advance(31_000) // past the unknown-kid cooldown of both verifiers' start fetch
  const { key } = await rotateKeys({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: h.clock }, { activateInMs: 0, force: true, alg: 'ES256' })
  await h.keys.reload()
  const esToken = await issue(h)
  t.match(decodeProtectedHeader(esToken), { alg: 'ES256', kid: key.kid })
  t.equal(await codeOf(both.verify(esToken, { peerCertificate: h.pki.client('order-service').certPem })), 'accepted', 'a real ES256 token, after one refetch')
  t.equal(await codeOf(both.verify(rsToken)), 'accepted', 'the retired RS256 key still verifies its tokens')
  t.equal(await codeOf(rsOnly.verify(esToken)), 'ERR_TOKEN_ALG', 'an RS256-only verifier refuses it')
})
