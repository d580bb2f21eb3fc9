import { writeFile } from 'node:fs/promises'
import { connect } from 'node:http2'
import { join } from 'node:path'
import Fastify from 'fastify'
import { Counter, Registry } from 'prom-client'
import t, { type Test } from 'tap'
import { CalleePolicy, parseCalleePolicy } from '../../packages/sdk/src/callee-policy.js'
import { CalleePolicyError } from '../../packages/sdk/src/errors.js'
import { CalleeCounters, reasonLabel } from '../../packages/sdk/src/callee-counters.js'
import { serviceAuth, type ServiceAuthOptions } from '../../packages/sdk/src/fastify.js'
import { createVerifier } from '../../packages/sdk/src/verifier.js'
import { createServerCert } from '../../src/pki/dev-pki.js'
import { LogCapture, startHarness, type Harness } from '../helpers/harness.js'
import { startCallee } from '../helpers/callee.js'
import { httpsCall } from '../helpers/http.js'
import { createLogger } from '../../src/logger.js'

async function receiving(t: Test, h: Harness, policy?: CalleePolicy, allowUnlisted = false, onDecision?: ServiceAuthOptions['onDecision']) {
  const verifier = await createVerifier({
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`,
    clock: h.clock,
  })
  const server = createServerCert(h.pki.ca)
  const logs = new LogCapture()
  const app = Fastify({
    https: { ca: h.pki.ca.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true },
    loggerInstance: createLogger('info', logs),
  })
  await app.register(serviceAuth, { verifier, ...(policy === undefined ? {} : { policy }), allowUnlisted, ...(onDecision === undefined ? {} : { onDecision }) })
  app.get('/open', { config: { serviceAuth: false } }, async () => 'open')
  app.get('/stock/:sku', { config: { scope: 'stock:read' } }, async (request) => request.caller)
  app.post('/deduct', { config: { scope: ['stock:deduct'], callers: ['order-service'] } }, async (request) => request.caller)
  const handled = { count: 0 }
  app.get('/from-policy', async (request) => {
    handled.count++
    return request.caller
  })
  app.get('/unlisted', async () => 'unlisted')
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(async () => {
    verifier.close()
    await app.close()
  })
  const port = (app.server.address() as { port: number }).port
  const call = (method: string, path: string, token?: string | string[], client = h.pki.client('order-service')) =>
    httpsCall(port, { method, path, client, ca: h.pki.ca.certPem, headers: token === undefined ? {} : { 'x-service-token': token as string } })
  return { call, logs, handled }
}

const tokenOf = async (h: Harness, body: unknown, client = h.pki.client('order-service')) =>
  (await h.token(body, client)).json<{ access_token: string }>().access_token

t.test('serviceAuth: scopes from route config, request.caller, bare 401/403 with empty bodies', async (t) => {
  const h = await startHarness(t)
  const counters = new CalleeCounters()
  const { call, logs } = await receiving(t, h, undefined, false, counters.observe)
  const read = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:read' })
  const deduct = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:deduct' })

  const ok = await call('GET', '/stock/sku-1', read)
  t.equal(ok.status, 200)
  t.match(ok.json(), { service: 'order-service', scopes: ['stock:read'], tokenId: String })
  t.equal((await call('POST', '/deduct', deduct)).status, 200)

  for (const [name, res, status] of [
    ['no token', await call('GET', '/stock/sku-1'), 401],
    ['garbage token', await call('GET', '/stock/sku-1', 'x.y.z'), 401],
    ['token for another certificate', await call('GET', '/stock/sku-1', read, h.pki.client('payment-service')), 401],
    ['missing scope', await call('POST', '/deduct', read), 403],
    ['unlisted route, deny by default', await call('GET', '/unlisted', read), 403],
    ['two X-Service-Token lines', await call('GET', '/stock/sku-1', [read, read]), 401],
  ] as const) {
    t.equal(res.status, status, name)
    t.equal(res.text, '', `${name}: empty body`)
  }
  t.equal((await call('GET', '/open')).text, 'open', 'serviceAuth: false exempts a route')

  // A line per denial reason and caller (then a count per interval), with the reason from the shared
  // vocabulary (conformance/codes.json).
  const denials = logs.records().filter((r) => r.event === 'service_call_denied')
  t.same(
    denials.map(({ status, reason, sub, aud, method, path }) => ({ status, reason, sub, aud, method, path })),
    [
      { status: 401, reason: 'ERR_TOKEN_MISSING', sub: undefined, aud: undefined, method: 'GET', path: '/stock/sku-1' },
      { status: 401, reason: 'ERR_TOKEN_MALFORMED', sub: undefined, aud: undefined, method: 'GET', path: '/stock/sku-1' },
      // A replayed token: whose it was, and for whom (before: neither sub nor aud).
      { status: 401, reason: 'ERR_BINDING_MISMATCH', sub: 'order-service', aud: 'inventory-service', method: 'GET', path: '/stock/sku-1' },
      // before: "scope or caller not allowed", "route not in policy"
      { status: 403, reason: 'ERR_ROUTE_FORBIDDEN', sub: 'order-service', aud: 'inventory-service', method: 'POST', path: '/deduct' },
      { status: 403, reason: 'ERR_ROUTE_UNLISTED', sub: 'order-service', aud: 'inventory-service', method: 'GET', path: '/unlisted' },
      // two X-Service-Token lines: ERR_TOKEN_MISSING again (before: ERR_TOKEN_MALFORMED, Node joins repeated
      // headers with ", "), counted for the next summary line rather than written again
    ],
  )
  t.notOk(logs.text.includes(read.split('.')[2] as string), 'never the token')
  const { verified, denied } = counters.snapshot()
  t.equal(verified, 2, 'onDecision: the two calls let through')
  t.match(denied, { ERR_TOKEN_MISSING: 2, ERR_TOKEN_MALFORMED: 1, ERR_BINDING_MISMATCH: 1, ERR_ROUTE_FORBIDDEN: 1, ERR_ROUTE_UNLISTED: 1, ERR_TOKEN_EXPIRED: 0 })
  t.match(counters.prometheus(), /^authz_callee_verified_total 2$/m)
  t.match(counters.prometheus(), /^authz_callee_denied_total\{reason="binding_mismatch"\} 1$/m, 'lower-case label values')
})

t.test('serviceAuth with prom-client counters incremented from onDecision (the README recipe)', async (t) => {
  const h = await startHarness(t)
  const registry = new Registry()
  const verified = new Counter({ name: 'authz_callee_verified_total', help: 'Calls the authz guard let through.', registers: [registry] })
  const denied = new Counter({ name: 'authz_callee_denied_total', help: 'Calls the authz guard refused, by reason.', labelNames: ['reason'], registers: [registry] })
  const { call } = await receiving(t, h, undefined, false, (outcome) => (outcome.allowed ? verified.inc() : denied.inc({ reason: reasonLabel(outcome.reason) })))
  const read = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:read' })
  t.equal((await call('GET', '/stock/sku-1', read)).status, 200)
  t.equal((await call('POST', '/deduct', read)).status, 403)
  t.equal((await call('GET', '/stock/sku-1')).status, 401)
  const text = await registry.metrics()
  t.match(text, /^authz_callee_verified_total 1$/m)
  t.match(text, /^authz_callee_denied_total\{reason="route_forbidden"\} 1$/m)
  t.match(text, /^authz_callee_denied_total\{reason="token_missing"\} 1$/m)
})

t.test('serviceAuth: rules from the callee policy file, reloaded on change; allowUnlisted', async (t) => {
  const h = await startHarness(t)
  const dir = t.testdir({ 'policy.json': JSON.stringify({ routes: { 'GET /from-policy': { scopes: ['stock:deduct'] } } }) })
  const policy = await CalleePolicy.load(join(dir, 'policy.json'))
  const { call } = await receiving(t, h, policy, true)
  const read = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:read' })
  t.equal((await call('GET', '/from-policy', read)).status, 403)
  t.equal((await call('GET', '/unlisted', read)).status, 200, 'allowUnlisted')
  await writeFile(join(dir, 'policy.json'), JSON.stringify({ routes: { 'GET /from-policy': { scopes: ['stock:read'] } } }))
  t.equal(await policy.reload(), undefined)
  t.equal((await call('GET', '/from-policy', read)).status, 200)
  await writeFile(join(dir, 'policy.json'), '{"routes": {"GET /from-policy": {"scopes": "nope"}}}')
  t.match(await policy.reload(), { code: 'ERR_POLICY_INVALID' })
  await t.rejects(CalleePolicy.load(join(dir, 'missing.json')), { code: 'ERR_POLICY_READ' })
  t.equal((await call('GET', '/from-policy', read)).status, 200, 'a bad file keeps the rules in force')
})

const policyCode = (text: string): string => {
  try {
    parseCalleePolicy(text)
    return 'accepted'
  } catch (err) {
    return err instanceof CalleePolicyError ? err.code : `not a CalleePolicyError: ${String(err)}`
  }
}

t.test('callee policy: validation (typed errors with codes) and decisions', async (t) => {
  const routes = (r: unknown) => JSON.stringify({ routes: r })
  for (const [name, text, code] of [
    ['not JSON', '{', 'ERR_POLICY_JSON'],
    ['not an object', '[]', 'ERR_POLICY_INVALID'],
    ['unknown top-level property', '{"routes": {}, "extra": 1}', 'ERR_POLICY_INVALID'],
    ['no routes', '{}', 'ERR_POLICY_INVALID'],
    ['a route key without a method (it would never match)', routes({ '/stock/:sku': { scopes: [] } }), 'ERR_POLICY_ROUTE_KEY'],
    ['a path without a slash', routes({ 'GET stock': { scopes: [] } }), 'ERR_POLICY_ROUTE_KEY'],
    ['a HEAD key (GET governs HEAD)', routes({ 'HEAD /x': { scopes: [] } }), 'ERR_POLICY_ROUTE_KEY'],
    ['a gRPC method without a package', routes({ '/Inventory/Deduct': { scopes: [] } }), 'ERR_POLICY_ROUTE_KEY'],
    ['a scope with a space', routes({ 'GET /x': { scopes: ['a b'] } }), 'ERR_POLICY_INVALID'],
    ['scopes not an array', routes({ 'GET /x': { scopes: 'a' } }), 'ERR_POLICY_INVALID'],
    ['a repeated scope', routes({ 'GET /x': { scopes: ['a', 'a'] } }), 'ERR_POLICY_INVALID'],
    ['a caller with a space', routes({ 'GET /x': { scopes: [], callers: ['a b'] } }), 'ERR_POLICY_INVALID'],
    ['an unknown rule property', routes({ 'GET /x': { scopes: [], scope: 'a' } }), 'ERR_POLICY_INVALID'],
    ['a bad service name', '{"service": "a b", "routes": {}}', 'ERR_POLICY_INVALID'],
    ['HTTP and gRPC keys', routes({ 'GET /stock/:sku': { scopes: ['stock:read'] }, '/demo.Inventory/Deduct': { scopes: [] } }), 'accepted'],
  ] as const) {
    t.equal(policyCode(text), code, name)
  }
  const err = (() => {
    try {
      parseCalleePolicy('{"routes": {"GET /x": {"scopes": ["a b"]}}}', 'policy.json')
    } catch (e) {
      return e as CalleePolicyError
    }
  })()
  t.match(err, { source: 'policy.json', entry: '/routes/GET ~1x/scopes/0' }, 'the error names the file and the entry')

  const policy = new CalleePolicy(parseCalleePolicy('{"routes": {"GET /x": {"scopes": ["a:b"], "callers": ["svc"]}}}'))
  const caller = (service: string, scopes: string[]) => ({ service, scopes, audience: 'x', tokenId: 'j', expiresAt: 0, claims: {} })
  t.equal(policy.decide('GET /x', caller('svc', ['a:b'])), 'allow')
  t.equal(policy.decide('HEAD /x', caller('svc', ['a:b'])), 'allow', 'HEAD follows the GET rule')
  t.equal(policy.decide('HEAD /x', caller('svc', [])), 'forbidden', 'HEAD follows the GET rule, both ways')
  t.equal(policy.decide('GET /x', caller('other', ['a:b'])), 'forbidden')
  t.equal(policy.decide('GET /x', caller('svc', [])), 'forbidden')
  t.equal(policy.decide('GET /y', caller('svc', ['a:b'])), 'unlisted')
  t.equal(policy.decide('GET /y', caller('svc', ['a:b']), { allowUnlisted: true }), 'allow')
  t.equal(policy.decide('GET /y', caller('svc', []), { rule: { scopes: ['a:b'] } }), 'forbidden', 'a route rule wins')
  t.equal(policy.decide('constructor', caller('svc', [])), 'unlisted')
})

t.test('serviceAuth: the GET rule governs the automatic HEAD route', async (t) => {
  const h = await startHarness(t)
  const dir = t.testdir({ 'policy.json': JSON.stringify({ routes: { 'GET /from-policy': { scopes: ['stock:deduct'] } } }) })
  const read = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:read' })
  const deduct = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:deduct' })

  // allowUnlisted: HEAD used to miss the GET rule and pass as unlisted, running the handler.
  const open = await receiving(t, h, await CalleePolicy.load(join(dir, 'policy.json')), true)
  t.equal((await open.call('GET', '/from-policy', read)).status, 403)
  t.equal((await open.call('HEAD', '/from-policy', read)).status, 403, 'HEAD without the GET scope: 403, as GET')
  t.equal(open.handled.count, 0, 'the handler never ran')
  t.equal((await open.call('HEAD', '/from-policy', deduct)).status, 200, 'HEAD with the GET scope')
  t.equal((await open.call('HEAD', '/stock/sku-1', deduct)).status, 403, 'a route-config scope governs HEAD too')
  t.equal((await open.call('HEAD', '/stock/sku-1', read)).status, 200)

  // Deny by default: HEAD used to be unlisted and refused to allowed callers.
  const closed = await receiving(t, h, await CalleePolicy.load(join(dir, 'policy.json')), false)
  t.equal((await closed.call('HEAD', '/from-policy', deduct)).status, 200, 'an allowed caller gets HEAD')
  t.equal((await closed.call('HEAD', '/from-policy', read)).status, 403)
  t.equal((await closed.call('HEAD', '/from-policy')).status, 401, 'no token')
  for (const [method, path] of [['OPTIONS', '/from-policy'], ['GET', '/no-such-route'], ['DELETE', '/stock/sku-1']]) {
    const res = await closed.call(method as string, path as string, deduct)
    t.equal(res.status, 403, `${method} ${path} with a valid token: unlisted, 403`)
    t.equal(res.text, '', 'empty body')
    t.equal((await closed.call(method as string, path as string)).status, 401, `${method} ${path} without a token: 401`)
  }
})

t.test('serviceAuth over HTTP/2: the token is read from the stream headers (regression: HTTP/2 requests have no headersDistinct)', async (t) => {
  const h = await startHarness(t)
  const verifier = await createVerifier({ issuer: 'https://authz.internal', audience: 'inventory-service', jwksUrl: `http://127.0.0.1:${h.opsPort}/.well-known/jwks.json`, clock: h.clock })
  const server = createServerCert(h.pki.ca)
  const app = Fastify({ http2: true, https: { ca: h.pki.ca.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true } })
  await app.register(serviceAuth, { verifier })
  app.get('/stock/:sku', { config: { scope: 'stock:read' } }, async (request) => request.caller)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const order = h.pki.client('order-service')
  const session = connect(`https://localhost:${(app.server.address() as { port: number }).port}`, { ca: h.pki.ca.certPem, cert: order.certPem, key: order.keyPem })
  t.teardown(async () => {
    session.close()
    verifier.close()
    await app.close()
  })
  const get = (headers: Record<string, string | string[]>) =>
    new Promise<number>((resolve, reject) => {
      const stream = session.request({ ':path': '/stock/sku-1', ...headers })
      stream.on('response', (res) => resolve(res[':status'] as number))
      stream.on('error', reject)
      stream.resume()
      stream.end()
    })
  const read = await tokenOf(h, { audience: 'inventory-service', scope: 'stock:read' })
  t.equal(await get({ 'x-service-token': read }), 200, 'a token')
  t.equal(await get({ 'x-service-token': [read, read] }), 401, 'two token fields')
  t.equal(await get({}), 401, 'none')
})

t.test('serviceAuth: a flood of forged tokens is a bounded number of log lines; the counters count every one', async (t) => {
  const h = await startHarness(t)
  const callee = await startCallee(t, h, { denialLogMs: 1000 })
  const kid = h.keys.signingKey()?.kid as string
  const header = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid })).toString('base64url')
  const forged = (i: number): string => `${header}.${Buffer.from(JSON.stringify({ sub: 'order-service', i })).toString('base64url')}.c2ln`
  for (let i = 0; i < 200; i++) {
    const res = await httpsCall(callee.port, { path: '/stock/sku-1', client: h.pki.client('order-service'), ca: h.pki.ca.certPem, headers: { 'x-service-token': forged(i) } })
    t.equal(res.status, 401)
  }
  const lines = () => callee.logs.records().filter((r) => r.event === 'service_call_denied')
  const total = () => lines().reduce((n, r) => n + (r.count as number), 0)
  while (total() < 200) await callee.logs.next((r) => r.event === 'service_call_denied')
  t.equal(total(), 200, 'the lines account for every denial')
  // A line at once, then summaries; a machine so loaded that a whole second passes between two denials
  // starts again with a line at once (the key was forgotten).
  const atOnce = lines().filter((r) => r.interval_s === undefined)
  const summaries = lines().filter((r) => r.interval_s !== undefined)
  t.match(atOnce[0], { status: 401, reason: 'ERR_TOKEN_SIGNATURE', method: 'GET', path: '/stock/sku-1', count: 1 }, 'the first denial: one line at once')
  t.match(atOnce, atOnce.map(() => ({ reason: 'ERR_TOKEN_SIGNATURE', path: '/stock/sku-1', count: 1 })))
  t.ok(summaries.length >= 1 && lines().length <= 40, `${atOnce.length} line(s) at once and ${summaries.length} summary line(s) for 200 denials`)
  t.match(summaries, summaries.map(() => ({ reason: 'ERR_TOKEN_SIGNATURE', count: Number, interval_s: 1, msg: /^service call denied \(\d+ more in the last 1s\)$/ })))
  t.equal(callee.counters.snapshot().denied.ERR_TOKEN_SIGNATURE, 200, 'the counter: exact')
})
