import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, SignJWT } from 'jose'
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import { initKeys, revokeKey, rotateKeys } from '../../src/keys/admin.js'
import { createCrl } from '../../src/pki/dev-pki.js'
import { explainDecision } from '../../src/policy/explain.js'
import { decide, parsePolicy } from '../../src/policy/policy.js'
import { SAMPLE_POLICY, startHarness, type Harness } from '../helpers/harness.js'
import { cli, harnessEnv, type Run } from '../helpers/authz-cli.js'
import { freePort } from '../helpers/http.js'
import { pooledKey } from '../helpers/material.js'

async function issue(h: Harness, body: Record<string, unknown>, cn = 'order-service'): Promise<string> {
  const res = await h.token(body, h.pki.client(cn))
  if (res.status !== 200) throw new Error(`token request failed: ${res.text}`)
  return res.json<{ access_token: string }>().access_token
}

/** The one thing inspect must never do: print a token's signature (or the token). */
function assertNoSignature(t: Test, token: string, run: Run): void {
  const signature = token.split('.')[2] as string
  t.notOk(run.out.includes(signature) || run.err.includes(signature), 'the signature is never printed')
  t.notOk(run.out.includes(token) || run.err.includes(token), 'the token is never printed')
}

interface ExplainJson {
  allowed: boolean
  error?: string
  status?: number
  reason?: string
  scopes?: string[]
  missing?: string[]
  malformed?: string[]
  granted?: string[]
  grants: Record<string, string[]> | null
  expiresIn?: number
  detail: string
}

t.test('explain answers what /token answers, for every caller × audience × scope; the debug log says the same', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '0' } })
  const run = cli(harnessEnv(h))
  const callers = ['order-service', 'payment-service', 'billing-service']
  const audiences = ['inventory-service', 'order-service', 'payment-service', 'billing-service', 'x'.repeat(256)]
  const scopes = [undefined, '', 'stock:read', 'stock:deduct stock:read', 'stock:read stock:write', 'order:read', 'bad"scope', 'order:read order:read']
  const seen = new Set<string>()
  const unknownLogged = new Set<string>()
  for (const caller of callers) {
    for (const audience of audiences) {
      for (const scope of scopes) {
        const name = `${caller} → ${audience.slice(0, 20)} ${JSON.stringify(scope)}`
        const args = ['explain', '--caller', caller, '--audience', audience, ...(scope === undefined ? [] : ['--scope', scope]), '--json']
        const explained = await run(...args)
        const e = explained.json<ExplainJson>()
        const logsBefore = h.logs.lines.length
        const res = await h.token({ audience, ...(scope === undefined ? {} : { scope }) }, h.pki.client(caller))
        const records = h.logs.lines.slice(logsBefore).map((l) => JSON.parse(l) as Record<string, unknown>)
        if (res.status === 200) {
          t.equal(e.allowed, true, `${name}: allowed`)
          t.equal(explained.code, 0)
          t.equal(res.json().scope ?? '', (e.scopes ?? []).join(' '), `${name}: same scopes`)
          t.equal(res.json().expires_in, e.expiresIn, `${name}: same lifetime`)
          seen.add('allowed')
          continue
        }
        const wire = res.json<{ error: string }>().error
        t.equal(e.allowed, false, `${name}: denied`)
        t.equal(explained.code, 1)
        t.equal(e.error, wire, `${name}: same error code (${wire})`)
        t.equal(e.status, res.status, `${name}: same HTTP status`)
        seen.add(`${wire}/${e.reason}`)
        // (a summary line of earlier repeats, `interval_s`, may land here: it is not this request's line)
        const info = records.find((r) => r.event === 'token_denied' && r.interval_s === undefined)
        if (wire === 'invalid_client' && unknownLogged.has(caller)) {
          // An unknown caller is refused before the rate limit: its repeats are summarised (one line at
          // once, then a count per interval), never a line per request.
          t.equal(info, undefined, `${name}: summarised, not a line per request`)
        } else {
          t.match(info, { level: 30, error: wire, sub: caller }, `${name}: info line has the code and the caller`)
          if (wire === 'invalid_client') unknownLogged.add(caller)
        }
        const debug = records.find((r) => r.event === 'policy_denied')
        if (e.reason === 'malformed_request') {
          t.equal(debug, undefined, `${name}: refused before the policy decision`)
          continue
        }
        if (e.reason === 'unknown_caller') {
          // Refused before the body is read: the debug line names the caller and the reason, no audience.
          t.match(debug, { level: 20, error: 'invalid_client', reason: 'unknown_caller', sub: caller }, `${name}: debug line`)
          continue
        }
        t.ok(debug, `${name}: debug line`)
        t.equal(debug?.level, 20)
        t.same(
          { error: debug?.error, reason: debug?.reason, missing: debug?.missing, malformed: debug?.malformed, granted: debug?.granted, detail: debug?.detail },
          { error: e.error, reason: e.reason, missing: e.missing, malformed: e.malformed, granted: e.granted, detail: e.detail },
          `${name}: the log explains it as explain does`,
        )
      }
    }
  }
  t.same(
    [...seen].sort(),
    [
      'allowed',
      'invalid_client/unknown_caller',
      'invalid_request/malformed_request',
      'invalid_scope/malformed_scope',
      'invalid_scope/scope_not_granted',
      'invalid_target/no_grant',
      'invalid_target/unknown_audience',
    ],
    'the table covers every outcome',
  )
})

t.test('explain: fields for an operator, AUTHZ_TOKEN_TTL as the lifetime, usage and policy errors', async (t) => {
  const dir = t.testdir({ 'policy.json': JSON.stringify(SAMPLE_POLICY), 'bad.json': '{"audiences": [], "grants": {"a": {"b": []}}}' })
  const run = cli({ AUTHZ_POLICY: join(dir, 'policy.json'), AUTHZ_TOKEN_TTL: '300' })

  const allowed = await run('explain', '--caller', 'order-service', '--audience', 'inventory-service', '--json')
  t.equal(allowed.code, 0)
  t.match(allowed.json(), { allowed: true, scopes: ['stock:read', 'stock:deduct'], expiresIn: 300, granted: ['stock:read', 'stock:deduct'] })
  const text = await run('explain', '--caller', 'order-service', '--audience', 'inventory-service')
  t.match(text.out, /^decision: allowed$/m)
  t.match(text.out, /lifetime 300s/)

  const missing = await run('explain', '--caller', 'order-service', '--audience', 'inventory-service', '--scope', 'stock:read stock:write', '--json')
  t.equal(missing.code, 1)
  t.match(missing.json(), {
    allowed: false,
    error: 'invalid_scope',
    status: 400,
    reason: 'scope_not_granted',
    missing: ['stock:write'],
    granted: ['stock:read', 'stock:deduct'],
    grants: { 'inventory-service': ['stock:read', 'stock:deduct'] },
  })
  const noGrant = (await run('explain', '--caller', 'payment-service', '--audience', 'inventory-service', '--json')).json()
  t.match(noGrant, { error: 'invalid_target', reason: 'no_grant', grants: { 'order-service': ['order:read'] } })
  t.notOk('granted' in noGrant, 'nothing granted for that audience')
  const unknown = (await run('explain', '--caller', 'billing-service', '--audience', 'order-service', '--json')).json()
  t.match(unknown, { error: 'invalid_client', status: 401, reason: 'unknown_caller', grants: null })
  const text2 = await run('explain', '--caller', 'order-service', '--audience', 'inventory-service', '--scope', 'stock:write')
  t.match(text2.out, /^error: +invalid_scope \(HTTP 400\)$/m)
  t.match(text2.out, /^missing: +stock:write$/m)

  t.equal((await run('explain', '--caller', 'order-service')).code, 2, '--audience is required')
  t.equal((await run('explain', '--audience', 'x', '--caller', 'y', '--bogus')).code, 2)
  const bad = await cli({ AUTHZ_POLICY: join(dir, 'bad.json') })('explain', '--caller', 'a', '--audience', 'b')
  t.equal(bad.code, 1, 'an invalid live policy is a failure')
  t.match(bad.err, /grants\["a"\]\["b"\]: audience is not listed in "audiences"/)
  t.equal((await cli({ AUTHZ_TOKEN_TTL: '5' })('explain', '--caller', 'a', '--audience', 'b')).code, 1, 'bad configuration')
})

t.test('explainDecision names a malformed scope, bounded, and never needs the policy', async (t) => {
  const policy = parsePolicy(JSON.stringify(SAMPLE_POLICY))
  const long = `é${'x'.repeat(200)}`
  const e = explainDecision(decide(policy, 'order-service', 'inventory-service', ['stock:read', long]), 'order-service', 'inventory-service', ['stock:read', long])
  t.equal(e.reason, 'malformed_scope')
  t.equal(e.malformed?.length, 1)
  t.ok((e.malformed?.[0]?.length ?? 0) <= 65, 'shortened')
  const without = explainDecision(decide(policy, 'order-service', 'inventory-service', 'a\\b'), 'order-service', 'inventory-service')
  t.equal(without.malformed, undefined)
  t.match(without.detail, /not a valid scope-token/)
})

t.test('policy check: valid, invalid with the server message, and the grant diff against the current file', async (t) => {
  const next = {
    audiences: ['inventory-service', 'order-service', 'billing-service'],
    grants: {
      'order-service': { 'inventory-service': ['stock:read', 'stock:reserve'], 'billing-service': ['invoice:create'] },
      'billing-service': { 'order-service': ['order:read'] },
    },
  }
  const dir = t.testdir({
    'current.json': JSON.stringify(SAMPLE_POLICY),
    'next.json': JSON.stringify(next),
    'same.json': JSON.stringify(SAMPLE_POLICY, null, 2),
    'bad.json': JSON.stringify({ audiences: ['inventory-service'], grants: { 'order-service': { 'billing-service': ['x'] } } }),
    'broken.json': '{"audiences": [',
  })
  const run = cli({})
  const at = (f: string): string => join(dir, f)

  const ok = await run('policy', 'check', at('current.json'))
  t.equal(ok.code, 0)
  t.match(ok.out, /valid \(2 callers, 3 audiences/)

  const bad = await run('policy', 'check', at('bad.json'))
  t.equal(bad.code, 1)
  t.match(bad.err, `${at('bad.json')}: grants["order-service"]["billing-service"]: audience is not listed in "audiences"`)
  const badJson = await run('policy', 'check', at('bad.json'), '--json')
  t.equal(badJson.code, 1)
  t.match(badJson.json(), { valid: false, code: 'ERR_POLICY_INVALID', error: /audience is not listed/ })
  t.equal((await run('policy', 'check', at('broken.json'))).code, 1)
  t.equal((await run('policy', 'check', at('missing.json'))).code, 1)
  t.equal((await run('policy', 'check', at('current.json'), '--against', at('bad.json'))).code, 1, 'the current file must be valid too')

  const diff = await run('policy', 'check', at('next.json'), '--against', at('current.json'), '--json')
  t.equal(diff.code, 0)
  t.same(diff.json<{ diff: unknown }>().diff, {
    audiencesAdded: ['billing-service'],
    audiencesRemoved: ['payment-service'],
    callersAdded: ['billing-service'],
    callersRemoved: ['payment-service'],
    grants: [
      { caller: 'billing-service', audience: 'order-service', change: 'added', added: ['order:read'], removed: [] },
      { caller: 'order-service', audience: 'billing-service', change: 'added', added: ['invoice:create'], removed: [] },
      { caller: 'order-service', audience: 'inventory-service', change: 'changed', added: ['stock:reserve'], removed: ['stock:deduct'] },
      { caller: 'payment-service', audience: 'order-service', change: 'removed', added: [], removed: ['order:read'] },
    ],
  })
  const text = await run('policy', 'check', at('next.json'), '--against', at('current.json'))
  t.match(text.out, /^ {2}~ order-service → inventory-service: \+stock:reserve -stock:deduct$/m)
  t.match(text.out, /^ {2}\+ order-service → billing-service: invoice:create$/m)
  const same = await run('policy', 'check', at('same.json'), '--against', at('current.json'), '--json')
  t.same(same.json<{ diff: unknown }>().diff, { audiencesAdded: [], audiencesRemoved: [], callersAdded: [], callersRemoved: [], grants: [] })
  t.match((await run('policy', 'check', at('same.json'), '--against', at('current.json'))).out, /no change in audiences or grants/)

  t.equal((await run('policy', 'check')).code, 2)
  t.equal((await run('policy', 'lint', at('current.json'))).code, 2)
})

interface InspectJson {
  header: Record<string, unknown>
  payload: Record<string, unknown>
  checks: Record<string, { ok: boolean | null; [k: string]: unknown }>
  ok: boolean
}

t.test('token inspect: a fresh token checks out against the local keys, the ops JWKS and the mTLS JWKS', async (t) => {
  const h = await startHarness(t)
  const token = await issue(h, { audience: 'inventory-service', scope: 'stock:read' })
  const [headerPart, payloadPart] = token.split('.')
  const pem = t.testdir({
    'ca.pem': h.pki.ca.certPem,
    'order.pem': h.pki.client('order-service').certPem,
    'order-key.pem': h.pki.client('order-service').keyPem,
    'payment.pem': h.pki.client('payment-service').certPem,
  })
  const run = cli(harnessEnv(h), h.clock)

  const local = await run('token', 'inspect', token, '--cert', join(pem, 'order.pem'), '--json')
  assertNoSignature(t, token, local)
  t.equal(local.code, 0)
  const l = local.json<InspectJson>()
  t.equal(l.ok, true)
  t.same(l.header, JSON.parse(Buffer.from(headerPart as string, 'base64url').toString()))
  t.same(l.payload, JSON.parse(Buffer.from(payloadPart as string, 'base64url').toString()))
  t.match(l.checks, {
    alg: { ok: true },
    typ: { ok: true },
    signature: { ok: true, status: 'valid' },
    kid: { ok: true, status: 'known', state: 'active', kid: h.keys.signingKey()?.kid },
    iss: { ok: true },
    aud: { ok: true, detail: 'inventory-service' },
    exp: { ok: true, secondsLeft: 600 },
    nbf: { ok: true },
    cnf: { ok: true, binding: 'match' },
  })

  const text = await run('token', 'inspect', token)
  assertNoSignature(t, token, text)
  t.equal(text.code, 0)
  t.match(text.out, /^header:$/m)
  t.match(text.out, /^payload:$/m)
  t.match(text.out, /"sub": "order-service"/)
  t.match(text.out, /^ {2}- +cnf +x5t#S256 .*pass --cert/m, 'binding not checked without --cert')
  t.match(text.out, /^result: ok$/m)

  const ops = await run('token', 'inspect', token, '--jwks', `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`, '--json')
  assertNoSignature(t, token, ops)
  t.equal(ops.code, 0)
  t.match(ops.json<InspectJson>().checks, { signature: { ok: true }, kid: { ok: true, status: 'known' } })

  const mtls = await run(
    'token',
    'inspect',
    token,
    '--jwks',
    `https://127.0.0.1:${h.port}/.well-known/jwks.json`,
    '--ca',
    join(pem, 'ca.pem'),
    '--client-cert',
    join(pem, 'order.pem'),
    '--client-key',
    join(pem, 'order-key.pem'),
  )
  assertNoSignature(t, token, mtls)
  t.equal(mtls.code, 0, mtls.err)
  const noClientCert = await run('token', 'inspect', token, '--jwks', `https://127.0.0.1:${h.port}/.well-known/jwks.json`, '--ca', join(pem, 'ca.pem'))
  t.equal(noClientCert.code, 1, 'the main listener wants a client certificate')
  t.match(noClientCert.err, /cannot fetch/)

  const stdin = await cli(harnessEnv(h), h.clock, `${token}\n`)('token', 'inspect', '-', '--json')
  assertNoSignature(t, token, stdin)
  t.equal(stdin.code, 0)

  const mismatch = await run('token', 'inspect', token, '--cert', join(pem, 'payment.pem'), '--json')
  assertNoSignature(t, token, mismatch)
  t.equal(mismatch.code, 1)
  t.match(mismatch.json<InspectJson>().checks.cnf, { ok: false, binding: 'mismatch' })
  const mismatchText = await run('token', 'inspect', token, '--cert', join(pem, 'payment.pem'))
  t.match(mismatchText.out, /^result: FAILED \(cnf\)$/m)

  const otherIssuer = await cli(harnessEnv(h, { AUTHZ_ISSUER: 'https://authz.elsewhere' }), h.clock)('token', 'inspect', token, '--json')
  t.equal(otherIssuer.code, 1)
  t.match(otherIssuer.json<InspectJson>().checks.iss, { ok: false })

  const early = await cli(harnessEnv(h), new ManualClock(h.clock.now() - 60_000))('token', 'inspect', token, '--json')
  t.equal(early.code, 1)
  t.match(early.json<InspectJson>().checks, { nbf: { ok: false }, exp: { ok: true } })
})

t.test('token inspect: expired, tampered, revoked, unknown and malformed tokens fail, and say why', async (t) => {
  const h = await startHarness(t)
  const token = await issue(h, { audience: 'inventory-service' })
  const run = cli(harnessEnv(h), h.clock)
  const jwks = `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`

  h.clock.advance(601_000)
  const expired = await run('token', 'inspect', token, '--json')
  assertNoSignature(t, token, expired)
  t.equal(expired.code, 1)
  t.match(expired.json<InspectJson>().checks, { signature: { ok: true }, exp: { ok: false, secondsLeft: -1 } })
  t.match((await run('token', 'inspect', token)).out, /expired 1s ago/)
  h.clock.advance(-601_000)

  const [header, payload, signature] = token.split('.') as [string, string, string]
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>
  const forged = `${header}.${Buffer.from(JSON.stringify({ ...claims, sub: 'payment-service' })).toString('base64url')}.${signature}`
  const tampered = await run('token', 'inspect', forged, '--json')
  assertNoSignature(t, forged, tampered)
  t.equal(tampered.code, 1)
  t.match(tampered.json<InspectJson>().checks, { signature: { ok: false, status: 'invalid' }, kid: { ok: true } })

  const { privateKey } = await generateKeyPair('RS256')
  const stranger = await new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'A'.repeat(43) })
    .sign(privateKey)
  const unknown = await run('token', 'inspect', stranger, '--json')
  assertNoSignature(t, stranger, unknown)
  t.equal(unknown.code, 1)
  t.match(unknown.json<InspectJson>().checks, { signature: { ok: false, status: 'unverified' }, kid: { ok: false, status: 'unknown', detail: /probably pruned/ } })

  const kid = h.keys.signingKey()?.kid as string
  await revokeKey({ dir: h.config.keysDir, timing: { tokenTtl: h.config.tokenTtl, jwksMaxAge: h.config.jwksMaxAge }, clock: h.clock }, kid)
  const revoked = await run('token', 'inspect', token, '--json')
  assertNoSignature(t, token, revoked)
  t.equal(revoked.code, 1)
  t.match(revoked.json<InspectJson>().checks, { kid: { ok: false, status: 'revoked', kid, revokedAt: new Date(h.clock.now()).toISOString() }, signature: { ok: false } })
  await h.keys.reload()
  const revokedJwks = await run('token', 'inspect', token, '--jwks', jwks, '--json')
  t.equal(revokedJwks.code, 1)
  t.match(revokedJwks.json<InspectJson>().checks.kid, { ok: false, status: 'revoked' }, 'unpublished, and the manifest says why')
  const revokedText = await run('token', 'inspect', token)
  t.match(revokedText.out, /^ {2}FAIL +kid +.*revoked at/m)
  assertNoSignature(t, token, revokedText)

  for (const bad of ['abc.def', 'not a token', `${header}.!!!.${signature}`]) {
    const res = await run('token', 'inspect', bad)
    t.equal(res.code, 1, `malformed: ${bad.slice(0, 12)}`)
    t.notOk(res.err.includes(signature), 'not echoed')
  }
  t.equal((await run('token', 'inspect')).code, 2)
  t.equal((await run('token', 'inspect', token, '--client-cert', 'x.pem')).code, 2, '--client-cert needs --client-key')
  t.equal((await run('token', 'inspect', token, '--jwks', 'ftp://x/jwks')).code, 2)
  t.equal((await run('token', 'show', token)).code, 2)
  const closed = await run('token', 'inspect', token, '--jwks', `http://127.0.0.1:${await freePort()}/jwks`)
  t.equal(closed.code, 1)
  t.match(closed.err, /cannot fetch .*ECONNREFUSED/)
})

interface StatusJson {
  keys: { ok: boolean; active: string | null; nextActivation: string | null; keys: { kid: string; state: string }[]; revoked: { kid: string }[] }
  policy: { ok: boolean; sha256?: string; callers?: number; audiences?: number }
  tls: { mode: string; files: { name: string; present: boolean; certificates?: { subject: string; daysLeft: number }[]; crls?: { nextUpdate: string; daysLeft: number }[] }[] }
  server: { running: boolean; status?: number; body?: unknown }
}

t.test('status: keys, policy, TLS files, and the running server', async (t) => {
  const h = await startHarness(t)
  const day = 86_400_000
  const clock = h.clock
  const tlsDir = t.testdir({
    'server.pem': h.pki.server.certPem,
    'server-key.pem': h.pki.server.keyPem,
    'ca.pem': `${h.pki.ca.certPem}\n${h.pki.otherCa.certPem}`,
    'crl.pem': createCrl(h.pki.ca, [h.pki.expired], { nextUpdate: new Date(clock.now() + 3 * day + 60_000) }),
  })
  const env = harnessEnv(h, {
    AUTHZ_TLS_CERT: join(tlsDir, 'server.pem'),
    AUTHZ_TLS_KEY: join(tlsDir, 'server-key.pem'),
    AUTHZ_CLIENT_CA: join(tlsDir, 'ca.pem'),
    AUTHZ_CRL: join(tlsDir, 'crl.pem'),
  })
  const run = cli(env, clock)
  const res = await run('status', '--json')
  t.equal(res.code, 0)
  const s = res.json<StatusJson>()
  t.match(s.keys, { ok: true, active: h.keys.signingKey()?.kid, nextActivation: null })
  t.same(s.keys.keys.map((k) => k.state), ['active'])
  t.match(s.policy, { ok: true, sha256: h.policy.current.sha256, callers: 2, audiences: 3 })
  t.equal(s.tls.mode, 'configured')
  t.same(s.tls.files.map((f) => [f.name, f.present]), [['AUTHZ_TLS_CERT', true], ['AUTHZ_CLIENT_CA', true], ['AUTHZ_CRL', true]])
  t.match(s.tls.files[0]?.certificates, [{ subject: /CN=localhost/, daysLeft: Number }])
  t.equal(s.tls.files[1]?.certificates?.length, 2, 'every CA of the bundle')
  t.match(s.tls.files[2]?.crls, [{ daysLeft: 3 }])
  t.match(s.server, { running: true, status: 200, body: { status: 'ready' } })

  const text = await run('status')
  t.match(text.out, /^keys: .*\(1 key\)$/m)
  t.match(text.out, /^policy: .*2 callers, 3 audiences\)$/m)
  t.match(text.out, /AUTHZ_CRL: .*next update .*\(3 days left\)/)
  t.match(text.out, /^server: .*answers 200 \(ready\)/m)

  // A rotation shows up as the next activation.
  const rotated = await rotateKeys({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock })
  const after = (await run('status', '--json')).json<StatusJson>()
  t.equal(after.keys.nextActivation, new Date(rotated.key.activatesAt).toISOString())
  t.match((await run('status')).out, /next +activates .*\(in 20m\)/)
})

t.test('status: a server that is not running is reported, not a failure; unreadable keys or policy are', async (t) => {
  const h = await startHarness(t)
  const port = String(await freePort())
  const down = await cli(harnessEnv(h, { AUTHZ_OPS_PORT: port }))('status', '--json')
  t.equal(down.code, 0)
  const s = down.json<StatusJson>()
  t.match(s.server, { running: false })
  t.equal(s.tls.mode, 'dev')
  t.same(s.tls.files.map((f) => f.present), [false, false], 'no dev PKI under the keys directory yet')
  t.match((await cli(harnessEnv(h, { AUTHZ_OPS_PORT: port }))('status')).out, /^server: not running/m)

  const dir = t.testdir({ 'bad.json': '{}', 'keys': { 'manifest.json': '{"version": 1, "keys": [{"kid": "x"}]}' } })
  const badPolicy = await cli(harnessEnv(h, { AUTHZ_OPS_PORT: port, AUTHZ_POLICY: join(dir, 'bad.json') }))('status', '--json')
  t.equal(badPolicy.code, 1)
  t.match(badPolicy.json(), { policy: { ok: false }, keys: { ok: true } })
  const badKeys = await cli(harnessEnv(h, { AUTHZ_OPS_PORT: port, AUTHZ_KEYS_DIR: join(dir, 'keys') }))('status')
  t.equal(badKeys.code, 1)
  t.match(badKeys.out, /^keys: .*CANNOT READ/m)
  await writeFile(join(h.config.keysDir, 'manifest.json'), JSON.stringify({ version: 1, keys: [{ kid: 'A'.repeat(43), alg: 'RS256', file: `${'A'.repeat(43)}.pem`, createdAt: '2026-01-01T00:00:00Z', activatesAt: '2026-01-01T00:00:00Z' }] }))
  t.equal((await cli(harnessEnv(h, { AUTHZ_OPS_PORT: port }))('status')).code, 1, 'a manifest naming a missing key file')
})

t.test('usage: no verb 2, help 0, unknown verbs 2', async (t) => {
  const run = cli({})
  t.equal((await run()).code, 2)
  t.equal((await run('help')).code, 0)
  t.equal((await run('--help')).code, 0)
  t.equal((await run('spin')).code, 2)
  t.equal((await run('policy')).code, 2)
  t.equal((await run('status', '--verbose')).code, 2)
})

t.test('token inspect: an ES256 token checks out; a header whose alg is not its key’s is refused, whatever it claims', async (t) => {
  const h = await startHarness(t)
  const run = cli(harnessEnv(h), h.clock)
  const rsaKid = h.keys.signingKey()?.kid as string
  h.clock.advance(1) // a millisecond after the first key: "newest activated" is unambiguous
  await rotateKeys({ dir: h.config.keysDir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: h.clock }, { alg: 'ES256', activateInMs: 0, force: true })
  await h.keys.reload()
  const token = await issue(h, { audience: 'inventory-service' })
  const esKid = h.keys.signingKey()?.kid as string
  const jwksUrl = `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`
  for (const source of [[], ['--jwks', jwksUrl]]) {
    const res = await run('token', 'inspect', token, ...source, '--json')
    t.equal(res.code, 0, `ES256 token, ${source.length === 0 ? 'local keys' : 'JWKS'}`)
    t.match(res.json<InspectJson>().checks, { alg: { ok: true, detail: 'ES256' }, signature: { ok: true, detail: `valid (ES256, key ${esKid})` } })
  }
  // Forgeries with the attacker's own keys but the issuer's kids: an ES256 header on the RSA kid, and the reverse.
  const ec = await generateKeyPair('ES256')
  const rsa = await generateKeyPair('RS256')
  const claims = { iss: 'https://authz.internal', aud: 'inventory-service', sub: 'order-service', jti: 'x' }
  const now = Math.floor(h.clock.now() / 1000)
  const esOnRsa = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: rsaKid }).setIssuedAt(now).setExpirationTime(now + 300).sign(ec.privateKey)
  const rsOnEc = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: esKid }).setIssuedAt(now).setExpirationTime(now + 300).sign(rsa.privateKey)
  for (const [name, forged, keyAlg] of [['ES256 header, RSA kid', esOnRsa, 'RS256'], ['RS256 header, EC kid', rsOnEc, 'ES256']] as const) {
    const res = await run('token', 'inspect', forged, '--jwks', jwksUrl, '--json')
    t.equal(res.code, 1, name)
    t.match(res.json<InspectJson>().checks.signature, { ok: false, status: 'invalid', detail: new RegExp(`is not the algorithm of key .* \\(${keyAlg}\\)`) }, name)
  }
})

t.test('token inspect prints a hostile token’s values escaped: no escape sequence, CR or fake line reaches the terminal (regression)', async (t) => {
  const dir = t.testdir({ keys: {} })
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  await initKeys({ dir: join(dir, 'keys'), timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock, newKey: pooledKey })
  const run = cli({ AUTHZ_KEYS_DIR: join(dir, 'keys') }, clock)
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const hostile = {
    clear: '\u001b[2J\u001b[H',
    title: '\u001b]0;all good\u0007',
    cr: 'evil\rok',
    fake: 'x\n  ok    signature  valid\nresult: ok',
    csi: '\u009b31m',
    bidi: 'abc\u202edcba',
    sep: 'a\u2028b',
  }
  const payload = part({ iss: hostile.fake, aud: hostile.cr, sub: hostile.clear, ...hostile })
  const token = `${part({ alg: 'RS256', typ: 'at+jwt\r', kid: 'k\u001b]0;x\u0007' })}.${payload}.c2ln`
  // eslint-disable-next-line no-control-regex -- what must never reach the terminal
  const RAW = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/
  for (const json of [false, true]) {
    const result = await run('token', 'inspect', token, ...(json ? ['--json'] : []))
    t.equal(result.code, 1, 'it fails its checks')
    t.notMatch(result.out + result.err, RAW, `${json ? '--json' : 'text'}: no raw control character, separator or bidi override`)
    t.notMatch(result.out, /^result: ok$/m, 'no faked "result: ok" line')
    t.notMatch(result.out, /^ {2}ok {4}signature/m, 'no faked check line')
  }
  const text = (await run('token', 'inspect', token)).out
  t.match(text, /^ {2}FAIL {2}signature/m, 'the checks were printed')
  t.match(text, /\\u001b\[2J/, 'the escape sequence is shown, escaped')
  t.match(text, /FAIL +iss +x\\n {2}ok {4}signature {2}valid\\nresult: ok is not AUTHZ_ISSUER/, 'the fake lines stay inside the iss detail, escaped')
  t.match(text, /FAIL +typ +at\+jwt\\u000d/, 'a CR is shown')
  // A header the checks cannot use at all: the failure message is escaped as well.
  const badAlg = await run('token', 'inspect', `${part({ alg: 'RS256\u001b[2J', typ: 'at+jwt' })}.${payload}.c2ln`)
  t.not(badAlg.code, 0)
  t.notMatch(badAlg.out + badAlg.err, RAW, 'an unusable header: nothing raw either')
})
