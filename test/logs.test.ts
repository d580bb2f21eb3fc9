import t from 'tap'
import { startHarness } from './helpers/harness.js'

t.test('one line per issuance with sub, aud, scope, jti, kid, x5t; never the token', async (t) => {
  const h = await startHarness(t)
  const tokens: string[] = []
  for (const body of [{ audience: 'inventory-service' }, { audience: 'inventory-service', scope: 'stock:read' }]) {
    tokens.push((await h.token(body)).json<{ access_token: string }>().access_token)
  }
  await h.token({ audience: 'nope' })
  await h.token({ audience: 'inventory-service' }, h.pki.client('billing-service'))
  await h.token('{bad json')
  await h.opsCall('/.well-known/jwks.json')
  await h.opsCall('/metrics')

  const records = h.logs.records()
  const issued = records.filter((r) => r.event === 'token_issued')
  t.equal(issued.length, 2)
  t.match(issued[0], {
    sub: 'order-service',
    aud: 'inventory-service',
    scope: 'stock:read stock:deduct',
    jti: String,
    kid: h.keys.signingKey()?.kid,
    x5t: String,
  })
  const denied = records.filter((r) => r.event === 'token_denied')
  t.same(
    denied.map((r) => [r.error, r.path, r.sub]),
    [
      ['invalid_target', '/token', 'order-service'],
      ['invalid_client', '/token', 'billing-service'],
      ['invalid_request', '/token', 'order-service'],
    ],
  )
  for (const token of tokens) {
    const [header, payload, signature] = token.split('.') as [string, string, string]
    t.notOk(h.logs.text.includes(signature), 'no signature in the logs')
    t.notOk(h.logs.text.includes(`${header}.${payload}`), 'no token in the logs')
  }
  t.notOk(h.logs.text.includes('PRIVATE KEY'))
})

t.test('the logger redacts anything that could carry a token or key', async (t) => {
  const { createLogger } = await import('../src/logger.js')
  const { LogCapture } = await import('./helpers/harness.js')
  const capture = new LogCapture()
  const log = createLogger('info', capture)
  log.info({ access_token: 'AAA', headers: { authorization: 'Bearer BBB', 'x-service-token': 'CCC' }, body: 'DDD', privateKey: 'EEE' }, 'x')
  log.info({ req: { headers: { authorization: 'FFF' } }, err: { token: 'GGG' }, passphrase: 'HHH' }, 'y')
  for (const secret of ['AAA', 'BBB', 'CCC', 'DDD', 'EEE', 'GGG', 'HHH']) t.notOk(capture.text.includes(secret), secret)
  t.notOk(capture.text.includes('FFF'), 'request serializer copies no headers')
})

t.test('at trace level no line carries raw request bytes; broken HTTP gets our body or none (regression)', async (t) => {
  const { connect } = await import('node:net')
  const { openTlsConnection } = await import('./helpers/http.js')
  const h = await startHarness(t, { env: { AUTHZ_LOG_LEVEL: 'trace' }, limits: { headersMs: 300, requestMs: 300, checkIntervalMs: 50 } })
  const secret = 'eyJzZWNyZXQiOiJ0b2tlbiJ9.c2VjcmV0.c2lnbmF0dXJl'
  /** Sends raw bytes on a fresh connection and returns everything the server answered before closing. */
  const raw = async (bytes: string, tls = true): Promise<string> => {
    if (!tls) {
      const socket = connect(h.opsPort, '127.0.0.1')
      socket.on('error', () => undefined)
      let answer = ''
      socket.on('data', (c: Buffer) => (answer += c.toString('latin1')))
      await new Promise((r) => socket.once('connect', r))
      socket.write(bytes)
      await new Promise((r) => socket.once('close', r))
      return answer
    }
    const conn = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client: h.pki.client('order-service') })
    let answer = ''
    conn.socket.on('data', (c: Buffer) => (answer += c.toString('latin1')))
    conn.socket.write(bytes)
    await conn.closed
    return answer
  }
  const answers = [
    // Not HTTP at all, with a token in a header line.
    await raw(`POST /token HTTP/1.1\r\nX-Service-Token: ${secret}\r\nBad Header Line\r\n\r\n`),
    // Header block over the limit, the token in it.
    await raw(`GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Service-Token: ${secret}\r\nX-Pad: ${'a'.repeat(9000)}\r\n\r\n`),
    // A request whose headers never end (timeout).
    await raw(`POST /token HTTP/1.1\r\nX-Service-Token: ${secret}\r\n`),
    // The same on the ops listener.
    await raw(`GET /healthz HTTP/1.1\r\nX-Service-Token: ${secret}\r\nBad Header Line\r\n\r\n`, false),
  ]
  t.match(answers[0], /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*\r\n\r\n\{"error":"invalid_request"\}$/, 'not HTTP: 400 with our body')
  t.match(answers[1], /^HTTP\/1\.1 431 [\s\S]*\r\n\r\n\{"error":"invalid_request"\}$/, 'headers too large: 431 with our body')
  t.ok(answers[2] === '' || /^HTTP\/1\.1 408 [\s\S]*Content-Length: 0\r\n\r\n$/.test(answers[2] as string), 'too slow: 408 with no body, or closed')
  t.match(answers[3], /^HTTP\/1\.1 400 [\s\S]*\{"error":"invalid_request"\}$/, 'ops listener too')
  for (const a of answers) t.notMatch(a, /Client Error|statusCode/, 'never Fastify’s own body')
  t.ok(h.logs.lines.length > 0, 'trace level logs')
  t.notOk(h.logs.text.includes(secret), 'the token never reaches a log line')
  t.notOk(h.logs.text.includes('rawPacket'), 'no raw bytes at all')
})

t.test('a method a path does not serve is 404 whatever the body (regression: 400 for an empty JSON body)', async (t) => {
  const h = await startHarness(t)
  const client = h.pki.client('order-service')
  const json = { 'content-type': 'application/json' }
  for (const [method, path] of [
    ['OPTIONS', '/token'],
    ['DELETE', '/.well-known/openid-configuration'],
    ['PUT', '/.well-known/jwks.json'],
    ['PATCH', '/nowhere'],
  ] as const) {
    const res = await h.call({ method, path, client, headers: { ...json, 'content-length': 0 }, body: '' })
    t.equal(res.status, 404, `${method} ${path}`)
    t.same(res.json(), { error: 'not_found' })
    const broken = await h.call({ method, path, client, headers: { ...json, 'content-length': 8 }, body: '{"broken' })
    t.equal(broken.status, 404, `${method} ${path} with a broken body`)
  }
})

t.test('one caller over its rate limit: one line at once, then one count per interval (regression: a line per 429)', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_RATE_LIMIT: '1' }, logSummaryMs: 60_000 })
  const statuses = []
  for (let i = 0; i < 40; i++) statuses.push((await h.token({ audience: 'inventory-service' })).status)
  t.equal(statuses.filter((s) => s === 429).length, 39)
  const lines = () => h.logs.records().filter((r) => r.event === 'rate_limited' || (r.event === 'token_denied' && r.error === 'slow_down'))
  t.match(lines(), [{ level: 40, event: 'rate_limited', sub: 'order-service', path: '/token', count: 1 }], 'one line for 39 refusals')
  await h.main.close() // what SIGTERM does: pending counts are written
  t.match(lines().at(-1), { event: 'rate_limited', sub: 'order-service', count: 38, interval_s: 60 })
  t.equal(lines().length, 2)
})

t.test('503s while no key signs and an unknown caller repeating itself are summarised the same way', async (t) => {
  const h = await startHarness(t, { noKey: true, logSummaryMs: 150 })
  const summary = h.logs.next((r) => r.event === 'request_refused' && r.interval_s !== undefined)
  for (let i = 0; i < 20; i++) t.equal((await h.token({ audience: 'inventory-service' })).status, 503)
  for (let i = 0; i < 20; i++) t.equal((await h.token({ audience: 'inventory-service' }, h.pki.client('billing-service'))).status, 401)
  const refused = h.logs.records().filter((r) => r.event === 'request_refused')
  t.match(refused[0], { level: 40, reason: 'no_active_key', error: 'temporarily_unavailable', count: 1 })
  const total = (await summary).count as number
  t.ok(total >= 1 && total <= 19, `a summary line counts the repeats (${total})`)
  const unknown = h.logs.records().filter((r) => r.event === 'token_denied' && r.sub === 'billing-service')
  t.match(unknown[0], { level: 30, error: 'invalid_client', sub: 'billing-service', count: 1 })
  t.ok(unknown.length < 20, `fewer lines than requests (${unknown.length} for 20)`)
  const counted = unknown.reduce((n, r) => n + (r.count as number), 0)
  await h.main.close()
  const after = h.logs.records().filter((r) => r.event === 'token_denied' && r.sub === 'billing-service')
  t.equal(after.reduce((n, r) => n + (r.count as number), 0), 20, `every refusal is counted once the summaries are written (${counted} before close)`)
})

t.test('a known caller’s policy denials stay one line each (bounded by its rate limit)', async (t) => {
  const h = await startHarness(t)
  for (let i = 0; i < 3; i++) await h.token({ audience: 'payment-service' })
  t.equal(h.logs.records().filter((r) => r.event === 'token_denied' && r.error === 'invalid_target').length, 3)
})
