/**
 * Where trust ends: a certificate's validity on an open connection or a resumed session, a connection's
 * age, a trust change under open connections, and shutdown with connections in every state.
 */
import { writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { connect } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import { createCertificate, createClientCert, createCrl, type KeyPairPem } from '../../src/pki/dev-pki.js'
import { startHarness } from '../helpers/harness.js'
import { halfSentRequest, httpsCall, openTlsConnection, rawTokenRequest } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { testPki } from '../helpers/pki.js'

const HOUR = 3_600_000
const BARE_401 = { status: 401, body: '{"error":"invalid_client"}' }

/** A client certificate valid (in real time, for the handshake) from `from` to `to`. */
const clientValid = (from: number, to: number, name = 'order-service'): KeyPairPem =>
  createClientCert(testPki().ca, name, { notBefore: new Date(from), notAfter: new Date(to) })

t.test('a certificate that expires while its keep-alive connection is open gets no more tokens (regression)', async (t) => {
  const now = Date.now()
  const h = await startHarness(t, { start: now })
  const client = clientValid(now - HOUR, now + HOUR)
  const conn = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client })
  t.teardown(() => conn.end())
  const before = await conn.send(rawTokenRequest())
  t.equal(before.status, 200, 'valid: a token')
  t.equal(before.headers.connection, 'keep-alive', 'and the connection stays open')
  h.clock.advance(HOUR + 1000)
  const after = await conn.send(rawTokenRequest())
  t.match(after, BARE_401, 'one second after notAfter: invalid_client, nothing else')
  t.equal(after.headers.connection, 'close', 'and the connection is closed')
  await conn.closed
})

t.test('a resumed TLS session does not outlive its certificate (regression)', async (t) => {
  const now = Date.now()
  const h = await startHarness(t, { start: now })
  const client = clientValid(now - HOUR, now + HOUR)
  const first = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client })
  const session = new Promise<Buffer>((resolve) => first.socket.once('session', resolve))
  t.equal((await first.send(rawTokenRequest())).status, 200)
  const ticket = await session
  first.end()
  await first.closed
  h.clock.advance(HOUR + 1000)
  const resumed = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client, session: ticket })
  t.teardown(() => resumed.end())
  t.ok(resumed.socket.isSessionReused(), 'the session was resumed (no certificate check at the handshake)')
  t.match(await resumed.send(rawTokenRequest()), BARE_401, 'and still refused: the certificate expired')
})

t.test('a certificate not valid yet by the server clock is refused', async (t) => {
  const now = Date.now()
  // This replica's clock is two hours behind the certificate's notBefore (the handshake uses real time).
  const h = await startHarness(t, { start: now - 2 * HOUR })
  const conn = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client: clientValid(now - HOUR, now + HOUR) })
  t.teardown(() => conn.end())
  t.match(await conn.send(rawTokenRequest()), BARE_401)
})

t.test('a CA certificate (basicConstraints CA:TRUE) is never a caller', async (t) => {
  const h = await startHarness(t, { start: Date.now() })
  const subCa = createCertificate({ subject: [{ shortName: 'CN', value: 'order-service' }], isCa: true }, h.pki.ca)
  const outcome = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client: subCa }).then(
    async (conn) => {
      t.teardown(() => conn.end())
      return conn.send(rawTokenRequest())
    },
    () => 'refused at the handshake' as const,
  )
  t.ok(outcome === 'refused at the handshake' || (outcome.status === 401 && outcome.body === BARE_401.body), 'refused')
})

t.test('a connection older than AUTHZ_MAX_CONNECTION_AGE is closed after its answer', async (t) => {
  const h = await startHarness(t, { start: Date.now(), env: { AUTHZ_MAX_CONNECTION_AGE: '60' } })
  const conn = await openTlsConnection(h.port, { ca: h.pki.ca.certPem, client: h.pki.client('order-service') })
  t.teardown(() => conn.end())
  t.equal((await conn.send(rawTokenRequest())).headers.connection, 'keep-alive')
  h.clock.advance(61_000)
  const last = await conn.send(rawTokenRequest())
  t.equal(last.status, 200, 'the request is served')
  t.equal(last.headers.connection, 'close', 'and closes the connection: the client handshakes again')
  await conn.closed
})

/** A server with its TLS material in files, so the CRL can change under it. */
async function serverWithCrl(t: Test, extra: Record<string, string> = {}) {
  const pki = testPki()
  const clock = new ManualClock(Date.now())
  const { dir, env } = await install(t, { crl: createCrl(pki.ca, []), clock })
  const { server, logs, port } = await startInstalled(t, { ...env, AUTHZ_RATE_LIMIT: '0', ...extra }, { pollMs: 3_600_000, clock })
  /** Writes a CRL revoking `revoked` and reloads: a trust change. */
  const revoke = async (...revoked: KeyPairPem[]): Promise<void> => {
    await writeFile(join(dir, 'crl.pem'), createCrl(pki.ca, revoked))
    await server.reload()
  }
  return { pki, dir, server, port, logs, revoke }
}

t.test('a trust change answers a request on an older connection instead of resetting it (regression)', async (t) => {
  const { pki, port, revoke } = await serverWithCrl(t)
  const victim = clientValid(Date.now() - HOUR, Date.now() + HOUR)
  const bystander = await openTlsConnection(port, { ca: pki.ca.certPem, client: pki.client('order-service') })
  const revoked = await openTlsConnection(port, { ca: pki.ca.certPem, client: victim })
  t.equal((await bystander.send(rawTokenRequest())).status, 200)
  t.equal((await revoked.send(rawTokenRequest())).status, 200)
  // Both connections are idle keep-alive connections when the CRL changes.
  await revoke(victim, clientValid(0, Date.now() + HOUR, 'nobody'))
  const kept = await bystander.send(rawTokenRequest())
  t.equal(kept.status, 200, 'a still-trusted caller on an old connection is served, not reset')
  t.equal(kept.headers.connection, 'close', 'and its connection is closed: the next request handshakes under the new CRL')
  const refused = await revoked.send(rawTokenRequest())
  t.match(refused, BARE_401, 'the revoked caller on an old connection gets invalid_client, not a token')
  t.equal(refused.headers.connection, 'close')
  await Promise.all([bystander.closed, revoked.closed])
})

t.test('CRL updates under keep-alive load: every request gets an answer, none is reset', async (t) => {
  const { pki, port, revoke } = await serverWithCrl(t)
  const client = pki.client('order-service')
  const agents = Array.from({ length: 8 }, () => new Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem }))
  t.teardown(() => agents.forEach((a) => a.destroy()))
  const statuses = new Map<number | string, number>()
  let running = true
  const loops = agents.map(async (agent) => {
    while (running) {
      const outcome = await httpsCall(port, { method: 'POST', path: '/token', headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}', agent }).then(
        (r) => r.status,
        (err: NodeJS.ErrnoException) => err.code ?? 'error',
      )
      statuses.set(outcome, (statuses.get(outcome) ?? 0) + 1)
    }
  })
  for (let i = 0; i < 6; i++) await revoke(clientValid(0, Date.now() + HOUR, `nobody-${i}`))
  running = false
  await Promise.all(loops)
  const total = [...statuses.values()].reduce((a, b) => a + b, 0)
  t.same(Object.fromEntries(statuses), { 200: total }, `all ${total} requests answered 200 across 6 trust changes`)
})

t.test('SIGTERM drain: answers close their connections; idle, silent and handshaking connections close at once', async (t) => {
  const { pki, port, server, logs } = await serverWithCrl(t, { AUTHZ_SHUTDOWN_TIMEOUT: '30' })
  const client = pki.client('order-service')
  // A keep-alive client that holds its connection after its answer.
  const idle = await openTlsConnection(port, { ca: pki.ca.certPem, client })
  t.equal((await idle.send(rawTokenRequest())).status, 200)
  // A TCP connection that never sends a byte, and one that stops in the middle of its ClientHello; on the
  // ops listener, a silent one and one with half its request headers.
  const opsPort = Number(new URL(server.opsUrl).port)
  const silent = connect(port, '127.0.0.1')
  const handshaking = connect(port, '127.0.0.1', () => handshaking.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])))
  const opsSilent = connect(opsPort, '127.0.0.1')
  const opsHalf = connect(opsPort, '127.0.0.1', () => opsHalf.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'))
  const closedSocket = (s: typeof silent) => new Promise<void>((resolve) => s.once('close', () => resolve()))
  for (const s of [silent, handshaking, opsSilent, opsHalf]) s.on('error', () => undefined)
  await Promise.all([silent, handshaking, opsSilent, opsHalf].map((s) => new Promise((r) => s.once('connect', r))))
  // A request whose headers arrived and whose body is on its way.
  const inFlight = halfSentRequest(port, { body: '{"audience":"inventory-service"}', ca: pki.ca.certPem, client })
  await new Promise<void>((resolve) => server.main.server.once('request', () => resolve()))
  const started = Date.now()
  const closing = server.close()
  await Promise.all([idle.closed, closedSocket(silent), closedSocket(handshaking), closedSocket(opsSilent), closedSocket(opsHalf)])
  t.pass('the idle, the silent and the handshaking connections were closed at once, on both listeners (regression: ops waited for the deadline)')
  inFlight.finish()
  t.match(await inFlight.done, { status: 200, headers: { connection: 'close' } }, 'the request in flight is served, and its answer closes the connection')
  await closing
  const elapsed = Date.now() - started
  t.ok(elapsed < 15_000, `closed in ${elapsed} ms, far under the 30 s deadline (regression: waited for the 65 s keep-alive timeout)`)
  t.notOk(logs.records().some((r) => r.event === 'shutdown_deadline'), 'nothing was left for the deadline to cut')
})

t.test('SIGTERM drain: a stalled request is destroyed at the deadline', async (t) => {
  const { pki, port, server, logs } = await serverWithCrl(t, { AUTHZ_SHUTDOWN_TIMEOUT: '1' })
  const stalled = halfSentRequest(port, { body: '{"audience":"inventory-service"}', ca: pki.ca.certPem, client: pki.client('order-service') })
  await new Promise<void>((resolve) => server.main.server.once('request', () => resolve()))
  const started = Date.now()
  await server.close()
  const elapsed = Date.now() - started
  // The deadline is what closed it (its one log line), never earlier; a loaded machine only makes it later.
  t.ok(elapsed >= 900, `closed at the 1 s deadline (${elapsed} ms; regression: never)`)
  t.match(logs.records().filter((r) => r.event === 'shutdown_deadline'), [{ listener: 'main', destroyed: 1, deadline_s: 1 }], 'the deadline destroyed the stalled connection, and said so')
  await t.rejects(stalled.done, 'the stalled request was cut off')
})
