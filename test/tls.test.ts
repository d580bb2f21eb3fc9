import { writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { connect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { join } from 'node:path'
import t from 'tap'
import { createCa, createClientCert, createCrl, createServerCert } from '../src/pki/dev-pki.js'
import { startHarness } from './helpers/harness.js'
import { halfSentRequest, httpCall, httpsCall } from './helpers/http.js'
import { install, startInstalled } from './helpers/install.js'
import { testPki } from './helpers/pki.js'

const tokenBody = { method: 'POST', path: '/token', headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' }

t.test('a CRL refuses revoked client certificates at the handshake; others still get tokens', async (t) => {
  const pki = testPki()
  const revoked = createClientCert(pki.ca, 'order-service')
  const h = await startHarness(t, { crl: createCrl(pki.ca, [revoked]) })
  await t.rejects(h.call({ ...tokenBody, client: revoked }), 'revoked: no HTTP response at all')
  t.equal((await h.call({ ...tokenBody, client: h.pki.client('order-service') })).status, 200, 'not revoked')
})

t.test('TLS material reloads on change without dropping open connections; a bad new file keeps the old', async (t) => {
  const pki = testPki()
  const victim = createClientCert(pki.ca, 'order-service')
  const { dir, env } = await install(t, { crl: createCrl(pki.ca, []) })
  const { server, logs, port } = await startInstalled(t, env, { pollMs: 60_000 })
  const call = (client = victim, agent?: Agent) => httpsCall(port, { ...tokenBody, ca: pki.ca.certPem, client, ...(agent === undefined ? {} : { agent }) })
  const keepAlive = new Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca.certPem, cert: victim.certPem, key: victim.keyPem })
  t.teardown(() => keepAlive.destroy())
  t.equal((await call(victim, keepAlive)).status, 200, 'the victim has an open keep-alive connection')

  // A request in flight while the CRL changes completes; its answer closes the connection.
  const inFlight = halfSentRequest(port, { body: tokenBody.body, ca: pki.ca.certPem, agent: keepAlive })
  await new Promise((resolve) => server.main.server.once('request', resolve))
  await writeFile(join(dir, 'crl.pem'), createCrl(pki.ca, [victim]))
  await server.reload()
  inFlight.finish()
  t.match(await inFlight.done, { status: 200, headers: { connection: 'close' } }, 'the request in flight was not dropped, and the connection closes after it')
  await t.rejects(call(victim), 'a new connection with the revoked certificate is refused')
  await t.rejects(call(victim, keepAlive), 'the keep-alive client reconnects, and its revoked certificate is refused (regression: no tokens on an old connection)')
  t.equal((await call(pki.client('payment-service'))).status !== 0, true, 'others still connect')

  // A broken CRL, then a key that does not match the certificate: both keep the material in force.
  await writeFile(join(dir, 'crl.pem'), '-----BEGIN X509 CRL-----\nbm90IGEgY3Js\n-----END X509 CRL-----\n')
  await server.reload()
  await writeFile(join(dir, 'crl.pem'), createCrl(pki.ca, [victim]))
  await writeFile(join(dir, 'server-key.pem'), createServerCert(pki.ca).keyPem)
  await server.reload()
  // (The directory watcher may report each bad file too, before the explicit reload does.)
  t.ok(logs.records().filter((r) => r.event === 'reload_failed' && r.what === 'tls').length >= 2, 'both failures logged')
  await t.rejects(call(victim), 'still revoked under the previous material')
  t.equal((await call(pki.client('payment-service'))).status, 400, 'and the server still serves (payment-service has no grant: 400)')

  // A new server certificate from a new CA pair: new handshakes see it.
  const ca2 = createCa('rotated CA')
  const server2 = createServerCert(ca2)
  await writeFile(join(dir, 'server-key.pem'), server2.keyPem)
  await writeFile(join(dir, 'server.pem'), server2.certPem)
  await server.reload()
  await t.rejects(call(pki.client('payment-service')), 'the client does not trust the new server CA')
  t.equal((await httpsCall(port, { ...tokenBody, ca: ca2.certPem, client: pki.client('order-service') })).status, 200, 'new server certificate in use')
  // At least the two changes made above; the directory watcher may also have loaded an in-between state
  // (a new CRL written before the key beside it) when the machine is slow between two writes.
  t.match((await httpCall(Number(new URL(server.opsUrl).port), { path: '/metrics' })).text, /authz_tls_reloads_total\{result="changed"\} [2-9]/)
})

t.test('slow-loris: a client that never finishes its headers is cut off; others are served meanwhile', async (t) => {
  const h = await startHarness(t, { limits: { headersMs: 500, checkIntervalMs: 100 } })
  const client = h.pki.client('order-service')
  const closed = new Promise<number>((resolve) => {
    const started = Date.now()
    const socket = tlsConnect({ host: '127.0.0.1', port: h.port, servername: 'localhost', ca: h.pki.ca.certPem, cert: client.certPem, key: client.keyPem }, () => {
      socket.write('POST /token HTTP/1.1\r\nHost: localhost\r\n')
      const drip = setInterval(() => socket.write('X-Drip: 1\r\n'), 100)
      socket.on('close', () => {
        clearInterval(drip)
        resolve(Date.now() - started)
      })
    })
    socket.on('error', () => undefined)
  })
  t.equal((await h.token({ audience: 'inventory-service' })).status, 200, 'served while the slow client drips')
  const after = await closed
  t.ok(after >= 400 && after < 5000, `cut off after ${after} ms`)
})

t.test('a TLS handshake that never starts is dropped; oversize headers are refused', async (t) => {
  const h = await startHarness(t, { limits: { handshakeMs: 300 } })
  const dropped = await new Promise<boolean>((resolve) => {
    const socket = connect(h.port, '127.0.0.1')
    socket.on('close', () => resolve(true))
    socket.on('error', () => undefined)
    setTimeout(() => resolve(false), 3000).unref()
  })
  t.ok(dropped, 'idle TCP connection closed')
  const big = await h.call({ ...tokenBody, client: h.pki.client('order-service'), headers: { 'content-type': 'application/json', 'x-big': 'a'.repeat(10_000) } })
  t.equal(big.status, 431, 'request header fields too large')
  const opsBig = await httpCall(h.opsPort, { path: '/healthz', headers: { 'x-big': 'a'.repeat(10_000) } })
  t.equal(opsBig.status, 431, 'the ops listener too (regression: 200)')
})

t.test('slow-loris on the ops listener is cut off too (regression: 70 s)', async (t) => {
  const h = await startHarness(t, { limits: { headersMs: 500, checkIntervalMs: 100 } })
  const after = await new Promise<number>((resolve) => {
    const started = Date.now()
    const socket = connect(h.opsPort, '127.0.0.1', () => {
      socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n')
      const drip = setInterval(() => socket.write('X-Drip: 1\r\n'), 100)
      socket.on('close', () => {
        clearInterval(drip)
        resolve(Date.now() - started)
      })
    })
    socket.on('error', () => undefined)
  })
  t.ok(after >= 400 && after < 5000, `cut off after ${after} ms`)
})

t.test('the connection cap refuses connections beyond AUTHZ_MAX_CONNECTIONS', async (t) => {
  const h = await startHarness(t, { env: { AUTHZ_MAX_CONNECTIONS: '2' } })
  const client = h.pki.client('order-service')
  const agent = new Agent({ keepAlive: true, maxSockets: 2, ca: h.pki.ca.certPem, cert: client.certPem, key: client.keyPem })
  t.teardown(() => agent.destroy())
  const statuses = await Promise.all([h.call({ ...tokenBody, agent }), h.call({ ...tokenBody, agent })])
  t.same(statuses.map((r) => r.status), [200, 200], 'two open keep-alive connections')
  await t.rejects(h.call({ ...tokenBody, client }), 'a third connection is refused')
})

t.test('every CRL in AUTHZ_CRL counts at the handshake, not only the first (regression)', async (t) => {
  const pki = testPki()
  const revoked = createClientCert(pki.ca, 'order-service', { notBefore: new Date(Date.UTC(2025, 0, 1)) })
  const hour = 3_600_000
  // An older CRL of the CA, then its newer one that revokes the client: OpenSSL uses the newest.
  const older = createCrl(pki.ca, [], { thisUpdate: new Date(Date.now() - 2 * hour) })
  const newer = createCrl(pki.ca, [revoked], { thisUpdate: new Date(Date.now() - hour) })
  const h = await startHarness(t, { crl: older + newer })
  await t.rejects(h.call({ ...tokenBody, client: revoked }), 'revoked by the second CRL of the file: no HTTP response')
  t.equal((await h.call({ ...tokenBody, client: h.pki.client('order-service') })).status, 200, 'others are served')
})

t.test('two client CAs with a CRL each: both CAs’ callers are served, each CRL revokes its own (regression)', async (t) => {
  const pki = testPki()
  const second = createCa('second client CA')
  const fromSecond = createClientCert(second, 'payment-service', { notBefore: new Date(Date.UTC(2025, 0, 1)) })
  const revokedSecond = createClientCert(second, 'payment-service', { notBefore: new Date(Date.UTC(2025, 0, 1)) })
  const { env } = await install(t, { clientCa: pki.ca.certPem + second.certPem, crl: createCrl(pki.ca, []) + createCrl(second, [revokedSecond]) })
  const { port } = await startInstalled(t, env)
  const call = (client: { certPem: string; keyPem: string }) => httpsCall(port, { ...tokenBody, ca: pki.ca.certPem, client })
  t.equal((await call(pki.client('order-service'))).status, 200, 'the first CA’s caller')
  t.equal((await call(fromSecond)).status, 400, 'the second CA’s caller is served (payment-service has no inventory grant: 400, not a refused handshake)')
  await t.rejects(call(revokedSecond), 'revoked by the second CA’s CRL')
})
