import { X509Certificate, createHash } from 'node:crypto'
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import t from 'tap'
import { startHarness } from '../helpers/harness.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

t.test('a granted request gets a token with exactly the DESIGN claims', async (t) => {
  const h = await startHarness(t)
  const res = await h.token({ audience: 'inventory-service', scope: 'stock:read stock:deduct' })
  t.equal(res.status, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json<{ access_token: string; token_type: string; expires_in: number; scope: string }>()
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'scope', 'token_type'])
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, 600)
  t.equal(body.scope, 'stock:read stock:deduct')

  const header = decodeProtectedHeader(body.access_token)
  const kid = h.keys.signingKey()?.kid
  t.same(header, { alg: 'RS256', typ: 'at+jwt', kid })

  const jwks = JSON.parse(h.keys.jwks().body.toString()) as JSONWebKeySet
  const { payload } = await jwtVerify(body.access_token, createLocalJWKSet(jwks), {
    issuer: 'https://authz.internal',
    audience: 'inventory-service',
    algorithms: ['RS256'],
    typ: 'at+jwt',
    currentDate: new Date(h.clock.now()),
  })
  const now = Math.floor(h.clock.now() / 1000)
  const der = new X509Certificate(h.pki.client('order-service').certPem).raw
  t.same(payload, {
    iss: 'https://authz.internal',
    sub: 'order-service',
    client_id: 'order-service',
    aud: 'inventory-service',
    iat: now,
    nbf: now,
    exp: now + 600,
    jti: payload.jti,
    scope: 'stock:read stock:deduct',
    cnf: { 'x5t#S256': createHash('sha256').update(der).digest('base64url') },
  })
  t.match(payload.jti, UUID)
  t.equal(typeof payload.aud, 'string', 'aud is one string, not an array')
})

t.test('every token has a fresh jti', async (t) => {
  const h = await startHarness(t)
  const jtis = new Set<string>()
  for (let i = 0; i < 5; i++) {
    const res = await h.token({ audience: 'inventory-service' })
    const [, payload] = res.json<{ access_token: string }>().access_token.split('.')
    jtis.add((JSON.parse(Buffer.from(payload as string, 'base64url').toString()) as { jti: string }).jti)
  }
  t.equal(jtis.size, 5)
})

t.test('scopes: all granted when none requested; the requested subset; array form; duplicates folded', async (t) => {
  const h = await startHarness(t)
  t.equal((await h.token({ audience: 'inventory-service' })).json().scope, 'stock:read stock:deduct')
  t.equal((await h.token({ audience: 'inventory-service', scope: 'stock:deduct' })).json().scope, 'stock:deduct')
  t.equal((await h.token({ audience: 'inventory-service', scope: ['stock:read'] })).json().scope, 'stock:read')
  t.equal((await h.token({ audience: 'inventory-service', scope: 'stock:read stock:read' })).json().scope, 'stock:read')
  t.equal((await h.token({ audience: 'inventory-service', scope: '' })).json().scope, 'stock:read stock:deduct')
})

t.test('a grant without scopes gives a token without a scope claim', async (t) => {
  const h = await startHarness(t, {
    policy: { audiences: ['inventory-service'], grants: { 'order-service': { 'inventory-service': [] } } },
  })
  const res = await h.token({ audience: 'inventory-service' })
  t.equal(res.status, 200)
  t.notOk('scope' in res.json())
  const [, payload] = res.json<{ access_token: string }>().access_token.split('.')
  t.notOk('scope' in JSON.parse(Buffer.from(payload as string, 'base64url').toString()))
})

t.test('form bodies: grant_type, audience, resource, scope, client_id', async (t) => {
  const h = await startHarness(t)
  const form = (body: string) =>
    h.call({
      method: 'POST',
      path: '/token',
      client: h.pki.client('order-service'),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body,
    })
  const ok = await form('grant_type=client_credentials&audience=inventory-service&scope=stock%3Aread')
  t.equal(ok.status, 200)
  t.equal(ok.json().scope, 'stock:read')
  t.equal((await form('grant_type=client_credentials&resource=inventory-service')).status, 200, 'resource is a synonym')
  t.equal((await form('audience=inventory-service&resource=inventory-service')).status, 200, 'both, equal')
  t.equal((await form('audience=inventory-service&client_id=order-service')).status, 200, 'client_id equal to the CN')
  t.same((await form('audience=inventory-service&audience=order-service')).json(), { error: 'invalid_request' }, 'repeated')
  t.same((await form('audience=inventory-service&resource=order-service')).json(), { error: 'invalid_request' })
  t.same((await form('grant_type=password&audience=inventory-service')).json(), { error: 'unsupported_grant_type' })
  t.same((await form('audience=inventory-service&client_id=payment-service')).json(), { error: 'invalid_client' })
  t.same((await form('audience=a&audience=b&client_id=evil')).json(), { error: 'invalid_client' }, 'a wrong client_id outranks a repeated parameter')
  t.same((await form('scope=stock%3Aread&scope=stock%3Adeduct&audience=inventory-service')).json(), { error: 'invalid_request' }, 'repeated scope')
  t.same((await form('audience=inventory-service&sub=payment-service')).json(), { error: 'invalid_request' })
  t.equal((await form('audience=inventory-service; charset=utf-8')).status, 400)
})

t.test('the error table, one row at a time', async (t) => {
  const h = await startHarness(t)
  const cases: [string, unknown, number, string][] = [
    ['unknown field', { audience: 'inventory-service', foo: 1 }, 400, 'invalid_request'],
    ['body sets sub', { audience: 'inventory-service', sub: 'payment-service' }, 400, 'invalid_request'],
    ['body sets iss', { audience: 'inventory-service', iss: 'https://evil' }, 400, 'invalid_request'],
    ['body sets exp', { audience: 'inventory-service', exp: 9999999999 }, 400, 'invalid_request'],
    ['body sets the lifetime', { audience: 'inventory-service', expires_in: 86400 }, 400, 'invalid_request'],
    ['missing audience', {}, 400, 'invalid_request'],
    ['empty audience', { audience: '' }, 400, 'invalid_request'],
    ['audience array', { audience: ['inventory-service'] }, 400, 'invalid_request'],
    ['audience number', { audience: 7 }, 400, 'invalid_request'],
    ['audience and resource differ', { audience: 'inventory-service', resource: 'order-service' }, 400, 'invalid_request'],
    ['scope number', { audience: 'inventory-service', scope: 5 }, 400, 'invalid_request'],
    ['body is an array', [{ audience: 'inventory-service' }], 400, 'invalid_request'],
    ['body is a string', '"inventory-service"', 400, 'invalid_request'],
    ['body is null', 'null', 400, 'invalid_request'],
    ['malformed JSON', '{"audience":', 400, 'invalid_request'],
    ['__proto__ key', '{"audience":"inventory-service","__proto__":{"x":1}}', 400, 'invalid_request'],
    ['grant_type password', { grant_type: 'password', audience: 'inventory-service' }, 400, 'unsupported_grant_type'],
    ['audience not in policy', { audience: 'billing-service' }, 400, 'invalid_target'],
    ['no grant for audience', { audience: 'payment-service' }, 400, 'invalid_target'],
    ['resource not in policy', { resource: 'billing-service' }, 400, 'invalid_target'],
    ['scope not granted', { audience: 'inventory-service', scope: 'stock:read stock:write' }, 400, 'invalid_scope'],
    ['malformed scope token', { audience: 'inventory-service', scope: ['stock read'] }, 400, 'invalid_scope'],
    ['client_id is not the CN', { audience: 'inventory-service', client_id: 'payment-service' }, 401, 'invalid_client'],
    ['client_id is not a string', { audience: 'inventory-service', client_id: 5 }, 401, 'invalid_client'],
  ]
  for (const [name, body, status, error] of cases) {
    const res = await h.token(body)
    t.equal(res.status, status, `${name}: status`)
    t.same(res.json(), { error }, `${name}: body is only the code`)
    t.equal(res.headers['cache-control'], 'no-store', `${name}: no-store`)
  }
})

t.test('faults are reported in DESIGN order', async (t) => {
  const h = await startHarness(t)
  const cases: [unknown, string][] = [
    [{ client_id: 'payment-service', foo: 1, grant_type: 'password', audience: 'nope' }, 'invalid_client'],
    [{ foo: 1, grant_type: 'password', audience: 'nope' }, 'invalid_request'],
    [{ grant_type: 'password', audience: 'nope', scope: 'x' }, 'unsupported_grant_type'],
    [{ audience: 'nope', scope: 'nope:nope' }, 'invalid_target'],
    [{ audience: 'inventory-service', scope: 'nope:nope' }, 'invalid_scope'],
  ]
  for (const [body, error] of cases) t.same((await h.token(body)).json(), { error }, error)
  // An unknown caller is invalid_client even when everything else is wrong too.
  t.same((await h.token('{not json', h.pki.client('billing-service'))).json(), { error: 'invalid_client' })
})

t.test('content types: wrong or missing is 400 invalid_request, not 415', async (t) => {
  const h = await startHarness(t)
  const post = (headers: Record<string, string>, body?: string) =>
    h.call({ method: 'POST', path: '/token', client: h.pki.client('order-service'), headers, ...(body === undefined ? {} : { body }) })
  for (const type of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/jsonx']) {
    const res = await post({ 'content-type': type }, '{"audience":"inventory-service"}')
    t.equal(res.status, 400, type)
    t.same(res.json(), { error: 'invalid_request' }, type)
  }
  const none = await post({}, '{"audience":"inventory-service"}')
  t.equal(none.status, 400, 'no content type')
  t.same(none.json(), { error: 'invalid_request' })
  const empty = await post({ 'content-type': 'application/json' })
  t.equal(empty.status, 400, 'empty JSON body')
  const emptyNoType = await post({})
  t.same(emptyNoType.json(), { error: 'invalid_request' }, 'no body at all')
  t.equal((await post({ 'content-type': 'Application/JSON; charset=utf-8' }, '{"audience":"inventory-service"}')).status, 200)
})

t.test('a body over 8 KiB is 413 invalid_request', async (t) => {
  const h = await startHarness(t)
  const big = JSON.stringify({ audience: 'inventory-service', scope: 'a'.repeat(9000) })
  const res = await h.token(big)
  t.equal(res.status, 413)
  t.same(res.json(), { error: 'invalid_request' })
  const form = await h.call({
    method: 'POST',
    path: '/token',
    client: h.pki.client('order-service'),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `audience=inventory-service&scope=${'a'.repeat(9000)}`,
  })
  t.equal(form.status, 413)
})

t.test('only POST: other methods and paths are 404 with a bare body', async (t) => {
  const h = await startHarness(t)
  const get = await h.call({ path: '/token', client: h.pki.client('order-service') })
  t.equal(get.status, 404)
  t.same(get.json(), { error: 'not_found' })
  const other = await h.call({ path: '/admin', client: h.pki.client('order-service') })
  t.equal(other.status, 404)
})

t.test('headers cannot choose the identity', async (t) => {
  const h = await startHarness(t)
  const res = await h.token({ audience: 'order-service' }, h.pki.client('order-service'), {
    'x-forwarded-client-cert': 'Subject="CN=payment-service"',
    'x-client-cn': 'payment-service',
    'x-ssl-client-s-dn': 'CN=payment-service',
  })
  t.same(res.json(), { error: 'invalid_target' }, 'order-service holds no grant for order-service')
  const ok = await h.token({ audience: 'order-service' }, h.pki.client('payment-service'))
  t.equal(ok.status, 200)
})

t.test('no usable signing key: 503 temporarily_unavailable', async (t) => {
  const h = await startHarness(t, { noKey: true })
  const res = await h.token({ audience: 'inventory-service' })
  t.equal(res.status, 503)
  t.same(res.json(), { error: 'temporarily_unavailable' })
})

t.test('rate limit per caller: 429 slow_down with Retry-After; others unaffected', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '3' } })
  for (let i = 0; i < 3; i++) t.equal((await h.token({ audience: 'inventory-service' })).status, 200)
  const limited = await h.token({ audience: 'inventory-service' })
  t.equal(limited.status, 429)
  t.same(limited.json(), { error: 'slow_down' })
  t.equal(limited.headers['retry-after'], '1')
  t.equal((await h.token({ audience: 'order-service' }, h.pki.client('payment-service'))).status, 200, 'another caller')
  h.clock.advance(1000)
  t.equal((await h.token({ audience: 'inventory-service' })).status, 200, 'refilled after a second')
})

t.test('AUTHZ_RATE_LIMIT=0 turns the limit off', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '0' } })
  const statuses = await Promise.all(Array.from({ length: 20 }, () => h.token({ audience: 'inventory-service' })))
  t.same(new Set(statuses.map((r) => r.status)), new Set([200]))
})

t.test('metrics count issued tokens by audience and denials by code', async (t) => {
  const h = await startHarness(t)
  await h.token({ audience: 'inventory-service' })
  await h.token({ audience: 'nope' })
  await h.token({ audience: 'inventory-service' }, h.pki.client('billing-service'))
  const text = (await h.opsCall('/metrics')).text
  t.match(text, /authz_tokens_issued_total\{audience="inventory-service"\} 1/)
  t.match(text, /authz_token_requests_denied_total\{error="invalid_target"\} 1/)
  t.match(text, /authz_token_requests_denied_total\{error="invalid_client"\} 1/)
  t.match(text, /authz_signing_duration_seconds_count 1/)
})

t.test('a JSON key given twice is a repeated parameter, as in a form body (regression: the last one won)', async (t) => {
  const h = await startHarness(t)
  const twice = await h.token('{"audience":"payment-service","audience":"inventory-service"}')
  t.same({ status: twice.status, body: twice.json() }, { status: 400, body: { error: 'invalid_request' } })
  const escaped = await h.token('{"audience":"inventory-service","aud\\u0069ence":"order-service"}')
  t.equal(escaped.status, 400, 'the same key spelled with an escape')
  const clientId = await h.token('{"client_id":"someone-else","client_id":"order-service","audience":"inventory-service"}')
  t.equal(clientId.status, 401, 'a repeated client_id is not the certificate’s CN: invalid_client, as in a form')
  const nested = await h.token('{"audience":"inventory-service","scope":["stock:read","stock:read"]}')
  t.equal(nested.status, 200, 'a repeated value inside an array is not a repeated key')
  t.equal((await h.token('{"audience":"inventory-service","scope":"stock:read"}')).status, 200)
})
