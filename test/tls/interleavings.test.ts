/**
 * Every connection is judged by trust material at least as new as its handshake, whatever the order of
 * TCP accept, ClientHello, reload and request. Node fixes a TLS socket's secure context (CA bundle, CRLs)
 * when it accepts the TCP connection: a client that connects before a CRL or CA change and handshakes
 * after it is verified against the old material. Each interleaving runs for a CRL that revokes the caller
 * and for a CA bundle that drops its CA, over TLS 1.2 and TLS 1.3, with real sockets.
 */
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createCa, createCertificate, createClientCert, createCrl, type KeyPairPem } from '../../src/pki/dev-pki.js'
import { openTlsConnection, rawTokenRequest, type RawResponse } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { VALID_FROM } from '../helpers/material.js'
import { testPki } from '../helpers/pki.js'
import { stallingProxy } from '../helpers/stalling-proxy.js'

const VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const
type Change = 'crl' | 'ca'

/**
 * A server trusting the test CA and a second CA (each with a CRL), and a caller from the second CA. `change`
 * takes the caller's trust away: a CRL that revokes it, or a CA bundle without its CA.
 */
async function server(t: Test) {
  const pki = testPki()
  const second = createCa('second client CA')
  const caller = createClientCert(second, 'order-service', VALID_FROM)
  const { dir, env } = await install(t, { clientCa: pki.ca.certPem + second.certPem, crl: createCrl(pki.ca, []) + createCrl(second, []) })
  const { server, port, logs } = await startInstalled(t, { ...env, AUTHZ_RATE_LIMIT: '0' }, { pollMs: 3_600_000 })
  const change = async (kind: Change): Promise<void> => {
    if (kind === 'crl') await writeFile(join(dir, 'crl.pem'), createCrl(pki.ca, []) + createCrl(second, [caller]))
    else await writeFile(join(dir, 'ca.pem'), pki.ca.certPem)
    const reloaded = logs.next((r) => r.event === 'reloaded' && r.what === 'tls')
    await server.reload()
    await reloaded
  }
  return { pki, caller, server, port, change }
}

/** What the caller gets for one token request on a connection: a status, or the handshake/connection refused. */
async function outcome(open: () => ReturnType<typeof openTlsConnection>): Promise<number | 'refused'> {
  let conn
  try {
    conn = await open()
  } catch {
    return 'refused'
  }
  try {
    const res: RawResponse = await conn.send(rawTokenRequest())
    return res.status
  } catch {
    return 'refused'
  } finally {
    conn.end()
  }
}

/** A TCP connection the server has accepted (its `connection` event has fired). */
async function accepted(port: number, s: Awaited<ReturnType<typeof server>>['server']): Promise<Socket> {
  const seen = once(s.main.server, 'connection')
  const raw = connect(port, '127.0.0.1')
  raw.on('error', () => undefined)
  await Promise.all([once(raw, 'connect'), seen])
  return raw
}

for (const version of VERSIONS) {
  for (const change of ['crl', 'ca'] as const) {
    const what = change === 'crl' ? 'a CRL revokes the caller' : 'the CA bundle drops its CA'
    t.test(`${version}, ${what}: TCP accepted before the reload, handshake after: no token (regression)`, async (t) => {
      const s = await server(t)
      t.equal(await outcome(() => openTlsConnection(s.port, { ca: s.pki.ca.certPem, client: s.caller, version })), 200, 'trusted before the change')
      const raw = await accepted(s.port, s.server)
      await s.change(change)
      const got = await outcome(() => openTlsConnection(s.port, { ca: s.pki.ca.certPem, client: s.caller, version, socket: raw }))
      t.ok(got === 401 || got === 'refused', `refused (${got}); before the fix, 200: verified against the old material and never re-checked`)
      t.equal(await outcome(() => openTlsConnection(s.port, { ca: s.pki.ca.certPem, client: s.caller, version })), 'refused', 'a connection accepted after the reload is refused at the handshake')
    })

    t.test(`${version}, ${what}: the reload lands during the handshake (after the ClientHello): no token`, async (t) => {
      const s = await server(t)
      const proxy = await stallingProxy(t, s.port)
      const connecting = openTlsConnection(proxy.port, { ca: s.pki.ca.certPem, client: s.caller, version })
      connecting.catch(() => undefined)
      await proxy.serverAnswered
      await s.change(change)
      proxy.release()
      const got = await outcome(() => connecting)
      t.ok(got === 401 || got === 'refused', `refused (${got})`)
    })

    t.test(`${version}, ${what}: a session from before the reload, offered after it, is not resumed: no token`, async (t) => {
      const s = await server(t)
      const first = await openTlsConnection(s.port, { ca: s.pki.ca.certPem, client: s.caller, version })
      t.equal((await first.send(rawTokenRequest())).status, 200)
      const ticket = await first.ticket
      first.end()
      await first.closed
      await s.change(change)
      let reused: boolean | undefined
      const got = await outcome(async () => {
        const conn = await openTlsConnection(s.port, { ca: s.pki.ca.certPem, client: s.caller, version, session: ticket })
        reused = conn.socket.isSessionReused()
        return conn
      })
      t.ok(got === 401 || got === 'refused', `refused (${got})`)
      t.not(reused, true, 'the session was not resumed: its ticket key was replaced with the trust material')
    })
  }
}

t.test('an always-on client (one unhandshaken socket kept in reserve) gets no token after its revocation (regression: 200s for an hour)', async (t) => {
  const s = await server(t)
  const ca = s.pki.ca.certPem
  // The client keeps a TCP connection open in reserve and handshakes it when it needs a connection, then
  // uses that connection (keep-alive) until the server closes it.
  let reserve = await accepted(s.port, s.server)
  const conn = async () => {
    const socket = reserve
    reserve = await accepted(s.port, s.server)
    return openTlsConnection(s.port, { ca, client: s.caller, socket })
  }
  const live = await conn()
  t.equal((await live.send(rawTokenRequest())).status, 200, 'served before the revocation')
  live.end()
  await s.change('crl')
  const tally = new Map<number | string, number>()
  const count = (k: number | string) => tally.set(k, (tally.get(k) ?? 0) + 1)
  // 40 requests after the revocation, each on the live connection, or on the reserve when it is gone.
  let current: Awaited<ReturnType<typeof conn>> | undefined
  for (let i = 0; i < 40; i++) {
    try {
      current ??= await conn()
      const res = await current.send(rawTokenRequest())
      count(res.status)
      if (res.headers.connection === 'close') current = undefined
    } catch {
      count('refused')
      current = undefined
    }
  }
  reserve.destroy()
  t.equal(tally.get(200) ?? 0, 0, `no token after the revocation (${JSON.stringify(Object.fromEntries(tally))})`)
})

t.test('a revoked certificate issued by an intermediate CA is caught on an old connection (regression: PKI.js checked the intermediate)', async (t) => {
  const pki = testPki()
  const intermediate = createCertificate({ subject: [{ shortName: 'CN', value: 'intermediate CA' }], isCa: true }, pki.ca)
  const leaf = createClientCert(intermediate, 'order-service', VALID_FROM)
  const chain: KeyPairPem = { certPem: leaf.certPem + intermediate.certPem, keyPem: leaf.keyPem }
  const { dir, env } = await install(t, { crl: createCrl(pki.ca, []) + createCrl(intermediate, []) })
  const { server, port } = await startInstalled(t, { ...env, AUTHZ_RATE_LIMIT: '0' }, { pollMs: 3_600_000 })
  const conn = await openTlsConnection(port, { ca: pki.ca.certPem, client: chain })
  t.teardown(() => conn.end())
  t.equal((await conn.send(rawTokenRequest())).status, 200, 'a keep-alive connection, trusted')
  await writeFile(join(dir, 'crl.pem'), createCrl(pki.ca, []) + createCrl(intermediate, [leaf]))
  await server.reload()
  t.match(await conn.send(rawTokenRequest()), { status: 401, headers: { connection: 'close' } }, 'the intermediate’s CRL revokes the leaf: invalid_client')
})
