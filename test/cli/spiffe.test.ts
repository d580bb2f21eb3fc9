/** The operator CLI with AUTHZ_IDENTITY=spiffe: callers are SPIFFE IDs in explain, policy check, token inspect and status. */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { cli, harnessEnv } from '../helpers/authz-cli.js'
import { ORDER, PAYMENT, SPIFFE_ENV, SPIFFE_POLICY, spiffeHarness } from '../helpers/spiffe.js'

t.test('explain: a SPIFFE ID is a caller; a CN or a foreign trust domain gets a note saying why it never can be', async (t) => {
  const h = await spiffeHarness(t)
  const run = cli(harnessEnv(h, SPIFFE_ENV))
  const allowed = await run('explain', '--caller', ORDER, '--audience', 'inventory-service', '--scope', 'stock:read', '--json')
  t.equal(allowed.code, 0)
  t.match(allowed.json(), { allowed: true, caller: ORDER, identity: 'spiffe', scopes: ['stock:read'] })
  t.equal(allowed.json().note, undefined)
  // explain and /token agree, over real mTLS with the SVID.
  t.equal((await h.token({ audience: 'inventory-service', scope: 'stock:read' }, h.pki.svid(ORDER))).status, 200)
  const text = await run('explain', '--caller', PAYMENT, '--audience', 'inventory-service')
  t.equal(text.code, 1)
  t.match(text.out, /error: {4}invalid_target \(HTTP 400\)/)
  t.match(text.out, /identity: spiffe \(the certificate URI SAN; trust domains example\.org, prod\.example\.org\)/)
  const cn = await run('explain', '--caller', 'order-service', '--audience', 'inventory-service', '--json')
  t.match(cn.json(), { allowed: false, error: 'invalid_client', reason: 'unknown_caller', note: /^"order-service" is not a SPIFFE ID \(AUTHZ_IDENTITY=spiffe\)/ })
  const foreign = await run('explain', '--caller', 'spiffe://evil.org/ns/default/sa/order', '--audience', 'inventory-service')
  t.match(foreign.out, /note: {5}"spiffe:\/\/evil\.org\/ns\/default\/sa\/order" trust domain "evil\.org" is not in AUTHZ_SPIFFE_TRUST_DOMAINS/)
  // In cn mode, a SPIFFE ID is named for what it is.
  const cnMode = await cli(harnessEnv(h))('explain', '--caller', ORDER, '--audience', 'inventory-service')
  t.equal(cnMode.code, 1, 'the spiffe policy does not even load in cn mode')
  t.match(cnMode.err, /caller is a SPIFFE ID, but AUTHZ_IDENTITY is cn/)
})

t.test('policy check: callers are checked against AUTHZ_IDENTITY and its trust domains', async (t) => {
  const dir = t.testdir({})
  const good = join(dir, 'spiffe.json')
  const cnPolicy = join(dir, 'cn.json')
  const foreign = join(dir, 'foreign.json')
  await writeFile(good, JSON.stringify(SPIFFE_POLICY))
  await writeFile(cnPolicy, JSON.stringify({ audiences: ['a'], grants: { 'order-service': { a: [] } } }))
  await writeFile(foreign, JSON.stringify({ audiences: ['a'], grants: { [ORDER]: { a: [] }, 'spiffe://staging.example.org/x': { a: [] } } }))
  const spiffe = cli(SPIFFE_ENV)
  const ok = await spiffe('policy', 'check', good, '--json')
  t.equal(ok.code, 0)
  t.match(ok.json(), { valid: true, identity: 'spiffe', callers: 2 })
  t.match((await spiffe('policy', 'check', good)).out, /valid \(2 callers \(SPIFFE IDs\), 2 audiences/)
  const cn = await spiffe('policy', 'check', cnPolicy, '--json')
  t.equal(cn.code, 1)
  t.match(cn.json(), { valid: false, code: 'ERR_POLICY_INVALID', error: /grants\["order-service"\]: caller is not a SPIFFE ID/ })
  const td = await spiffe('policy', 'check', foreign)
  t.equal(td.code, 1)
  t.match(td.err, /grants\["spiffe:\/\/staging\.example\.org\/x"\]: caller trust domain "staging\.example\.org" is not in AUTHZ_SPIFFE_TRUST_DOMAINS \(example\.org, prod\.example\.org\)/)
  const inCnMode = await cli({})('policy', 'check', good)
  t.equal(inCnMode.code, 1)
  t.match(inCnMode.err, /is a SPIFFE ID, but AUTHZ_IDENTITY is cn/)
  const badEnv = await cli({ AUTHZ_IDENTITY: 'spiffe' })('policy', 'check', good)
  t.equal(badEnv.code, 1)
  t.match(badEnv.err, /AUTHZ_SPIFFE_TRUST_DOMAINS: required when AUTHZ_IDENTITY=spiffe/)
})

t.test('token inspect: sub is the SPIFFE ID, the binding checks against the SVID', async (t) => {
  const h = await spiffeHarness(t)
  const svid = h.pki.svid(ORDER)
  const res = await h.token({ audience: 'inventory-service' }, svid)
  const token = res.json<{ access_token: string }>().access_token
  const dir = t.testdir({ 'svid.pem': svid.certPem, 'other.pem': h.pki.svid(PAYMENT).certPem })
  const run = cli(harnessEnv(h, SPIFFE_ENV), h.clock)
  const inspect = await run('token', 'inspect', token, '--cert', join(dir, 'svid.pem'), '--json')
  t.equal(inspect.code, 0, inspect.out)
  t.match(inspect.json(), {
    ok: true,
    payload: { sub: ORDER, client_id: ORDER },
    checks: { sub: { ok: true, detail: `${ORDER} (SPIFFE ID)` }, cnf: { ok: true, binding: 'match' } },
  })
  const text = await run('token', 'inspect', token, '--cert', join(dir, 'other.pem'))
  t.equal(text.code, 1)
  t.match(text.out, new RegExp(`ok {4}sub {8}${ORDER.replaceAll('.', '\\.')} \\(SPIFFE ID\\)`))
  t.match(text.out, /FAIL {2}cnf .* is another certificate/)
  // The same token read by an operator whose environment says cn: sub cannot be a caller there.
  const cnView = await cli(harnessEnv(h, { AUTHZ_POLICY: join(dir, 'none.json') }), h.clock)('token', 'inspect', token, '--json')
  t.match(cnView.json(), { ok: false, checks: { sub: { ok: false, detail: /is a SPIFFE ID, but AUTHZ_IDENTITY is cn/ } } })
})

t.test('status: says that callers are SPIFFE IDs, and from which trust domains', async (t) => {
  const h = await spiffeHarness(t)
  const run = cli(harnessEnv(h, SPIFFE_ENV), h.clock)
  const json = await run('status', '--json')
  t.equal(json.code, 0)
  t.match(json.json(), { identity: { mode: 'spiffe', trustDomains: ['example.org', 'prod.example.org'] }, policy: { ok: true, callers: 2 } })
  const text = await run('status')
  t.match(text.out, /^identity: spiffe: callers are the certificates' SPIFFE IDs \(URI SAN\), trust domains example\.org, prod\.example\.org$/m)
  t.match((await cli(harnessEnv(h))('status', '--json')).json(), { identity: { mode: 'cn' }, policy: { ok: false, error: /is a SPIFFE ID, but AUTHZ_IDENTITY is cn/ } })
})
