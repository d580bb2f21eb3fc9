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
