import type { Server as TlsServer, TLSSocket } from 'node:tls'
import t from 'tap'
import { identityOf } from '../../src/identity/peer.js'
import type { KeyPairPem } from '../../src/pki/dev-pki.js'
import { startHarness, type Harness } from '../helpers/harness.js'

/** 'refused' when the TLS handshake failed (no HTTP response at all), else the status and body. */
async function outcome(h: Harness, client: KeyPairPem | undefined): Promise<'refused' | { status: number; body: string }> {
  try {
    const res = await h.call({
      method: 'POST',
      path: '/token',
      client,
      headers: { 'content-type': 'application/json' },
      body: '{"audience":"inventory-service"}',
    })
    return { status: res.status, body: res.text }
  } catch {
    return 'refused'
  }
}

t.test('the handshake refuses clients without a valid certificate: no HTTP response at all', async (t) => {
  const h = await startHarness(t)
  t.equal(await outcome(h, undefined), 'refused', 'no client certificate')
  t.equal(await outcome(h, h.pki.foreign), 'refused', 'certificate from another CA')
  t.equal(await outcome(h, h.pki.expired), 'refused', 'expired certificate')
  t.equal(await outcome(h, { certPem: h.pki.client('order-service').certPem, keyPem: h.pki.client('payment-service').keyPem }).catch(() => 'refused'), 'refused', 'key does not match the certificate')
  t.equal(h.logs.text.includes('token_issued'), false)
})

t.test('TLS 1.1 and older are refused', async (t) => {
  const h = await startHarness(t)
  const { request } = await import('node:https')
  const err = await new Promise<Error | undefined>((resolve) => {
    const req = request({
      host: '127.0.0.1',
      port: h.port,
      servername: 'localhost',
      method: 'POST',
      path: '/token',
      ca: h.pki.ca.certPem,
      cert: h.pki.client('order-service').certPem,
      key: h.pki.client('order-service').keyPem,
      maxVersion: 'TLSv1.1',
      minVersion: 'TLSv1',
      agent: false,
    })
    req.on('error', resolve)
    req.on('response', () => resolve(undefined))
    req.end()
  })
  t.ok(err, 'handshake failed')
})

t.test('a certificate the CA signed but that is not usable as a client identity is invalid_client', async (t) => {
  const h = await startHarness(t)
  const bare = { status: 401, body: '{"error":"invalid_client"}' }
  t.same(await outcome(h, h.pki.twoCns), bare, 'two CNs')
  t.same(await outcome(h, h.pki.emptyCn), bare, 'empty CN')
  t.same(await outcome(h, h.pki.noCn), bare, 'no CN')
  t.same(await outcome(h, h.pki.client('billing-service')), bare, 'a CN the policy does not know')
  const serverOnly = await outcome(h, h.pki.serverAuthOnly)
  t.ok(serverOnly === 'refused' || (serverOnly.status === 401 && serverOnly.body === bare.body), 'EKU without clientAuth: refused at the handshake or 401')
  t.match(await outcome(h, h.pki.noEku), { status: 200 }, 'no EKU extension: any use allowed')
})

t.test('identityOf judges Node peer certificates', async (t) => {
  const raw = Buffer.from('der')
  const base = { raw, subject: { CN: 'order-service' } }
  t.match(identityOf(base as never), { ok: true, identity: { subject: 'order-service' } })
  t.same(identityOf(undefined), { ok: false, reason: 'no_certificate' })
  t.same(identityOf({} as never), { ok: false, reason: 'no_certificate' })
  t.same(identityOf({ raw, subject: { CN: ['a', 'b'] } } as never), { ok: false, reason: 'several_common_names' })
  t.same(identityOf({ raw, subject: { CN: '  ' } } as never), { ok: false, reason: 'no_common_name' })
  t.same(identityOf({ raw, subject: { O: 'x' } } as never), { ok: false, reason: 'no_common_name' })
  t.same(identityOf({ ...base, ext_key_usage: ['1.3.6.1.5.5.7.3.1'] } as never), { ok: false, reason: 'not_for_client_auth' })
  t.match(identityOf({ ...base, ext_key_usage: ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'] } as never), { ok: true })
})

t.test('the identity is per connection: a keep-alive connection keeps its caller', async (t) => {
  const h = await startHarness(t)
  const { Agent } = await import('node:https')
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: h.pki.ca.certPem, cert: h.pki.client('payment-service').certPem, key: h.pki.client('payment-service').keyPem })
  t.teardown(() => agent.destroy())
  for (let i = 0; i < 3; i++) {
    const res = await h.call({ method: 'POST', path: '/token', agent, headers: { 'content-type': 'application/json' }, body: '{"audience":"order-service"}' })
    t.equal(res.status, 200)
  }
})

t.test('a resumed TLS session keeps its verified identity; a rotated ticket key forces a full handshake', async (t) => {
  const h = await startHarness(t)
  const { Agent, request } = await import('node:https')
  const client = h.pki.client('payment-service')
  // keepAlive off: every request is a new connection; the agent caches the TLS session between them.
  const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 })
  t.teardown(() => agent.destroy())
  /** One request on a new connection; `session` settles when the server's session ticket has arrived. */
  let session: Promise<void> = Promise.resolve()
  const call = () =>
    new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          servername: 'localhost',
          port: h.port,
          method: 'POST',
          path: '/token',
          ca: h.pki.ca.certPem,
          cert: client.certPem,
          key: client.keyPem,
          agent,
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          const reused = (res.socket as TLSSocket).isSessionReused()
          res.resume()
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reused }))
        },
      )
      req.on('error', reject)
      req.on('socket', (socket) => (session = new Promise((ticket) => socket.once('session', () => ticket()))))
      req.end('{"audience":"order-service"}')
    })
  t.same(await call(), { status: 200, reused: false })
  // TLS 1.3 tickets arrive after the handshake: the agent stores the session when it does.
  await session
  const second = await call()
  t.same(second, { status: 200, reused: true }, 'resumed, and still order-service-granted payment-service')
  const sub = h.logs.records().filter((r) => r.event === 'token_issued').map((r) => r.sub)
  t.same(sub, ['payment-service', 'payment-service'])
  ;(h.main.server as unknown as TlsServer).setTicketKeys(Buffer.alloc(48, 7))
  t.match(await call(), { status: 200, reused: false }, 'old tickets no longer resume')
})
