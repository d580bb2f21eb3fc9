/**
 * Refused handshakes are counted by reason (`authz_tls_handshake_failures_total{reason}`) and logged at most
 * once per reason per interval with a count, never once per attempt. Before, a revoked, expired or
 * unknown-CA caller's handshake left no trace at all.
 */
import { once } from 'node:events'
import { connect } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import t from 'tap'
import { createClientCert, createCrl, type KeyPairPem } from '../../src/pki/dev-pki.js'
import { handshakeFailureReason } from '../../src/tls/handshake-failures.js'
import { startHarness, type Harness } from '../helpers/harness.js'
import { testPki } from '../helpers/pki.js'

const HOUR = 3_600_000

t.test('reasons from what Node reports: the verify error first, then the error code', async (t) => {
  const cases: [string | undefined, string | null, number, string | undefined][] = [
    ['ECONNRESET', 'CERT_REVOKED', 2000, 'revoked'],
    ['ECONNRESET', 'CERT_HAS_EXPIRED', 2000, 'expired'],
    ['ECONNRESET', 'CERT_NOT_YET_VALID', 2000, 'not_yet_valid'],
    ['ECONNRESET', 'CRL_HAS_EXPIRED', 2000, 'crl_expired'],
    ['ECONNRESET', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 2000, 'unknown_ca'],
    ['ECONNRESET', 'SELF_SIGNED_CERT_IN_CHAIN', 2000, 'unknown_ca'],
    ['ECONNRESET', 'UNABLE_TO_GET_CRL', 2000, 'other'],
    ['ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', null, 400, 'no_certificate'],
    ['ERR_TLS_HANDSHAKE_TIMEOUT', null, 0, 'timeout'],
    ['ERR_SSL_HTTP_REQUEST', null, 18, 'protocol'],
    ['ERR_SSL_UNSUPPORTED_PROTOCOL', null, 200, 'protocol'],
    ['ECONNRESET', null, 367, 'other'],
    ['ECONNRESET', null, 0, undefined],
    ['EPIPE', null, 10, 'other'],
  ]
  for (const [code, verify, bytes, reason] of cases) t.equal(handshakeFailureReason(code, verify, bytes), reason, `${code} ${verify ?? ''} ${bytes} bytes`)
})

/** One TLS connection attempt; resolves once the server has handled its end (counted, or not). */
async function attempt(h: Harness, options: ConnectionOptions): Promise<void> {
  const handled = once(h.main.server, 'tlsClientError')
  const socket = tlsConnect({ host: '127.0.0.1', port: h.port, servername: 'localhost', ca: h.pki.ca.certPem, ...options })
  socket.on('error', () => undefined)
  socket.on('secureConnect', () => socket.write('GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n'))
  await handled
  socket.destroy()
}

const as = (client: KeyPairPem): ConnectionOptions => ({ cert: client.certPem, key: client.keyPem })

async function failures(h: Harness): Promise<Record<string, number>> {
  const text = (await h.opsCall('/metrics')).text
  return Object.fromEntries([...text.matchAll(/^authz_tls_handshake_failures_total\{reason="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]))
}

t.test('each refusal is counted under its reason; a flood is one line per reason, not one per attempt (regression: invisible)', async (t) => {
  const pki = testPki()
  const revoked = createClientCert(pki.ca, 'order-service', { notBefore: new Date(Date.UTC(2025, 0, 1)) })
  const h = await startHarness(t, { crl: createCrl(pki.ca, [revoked]), limits: { handshakeMs: 300 }, env: { AUTHZ_HANDSHAKE_RATE_PER_SOURCE: '0' } })
  t.same(Object.keys(await failures(h)).sort(), ['crl_expired', 'expired', 'no_certificate', 'not_yet_valid', 'other', 'protocol', 'revoked', 'timeout', 'unknown_ca'], 'every reason is a series from the start')

  for (let i = 0; i < 20; i++) await attempt(h, as(revoked))
  await attempt(h, {})
  await attempt(h, as(pki.foreign))
  await attempt(h, as(pki.expired))
  await attempt(h, as(createClientCert(pki.ca, 'order-service', { notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) })))
  // Not TLS at all: HTTP on the TLS port.
  let handled = once(h.main.server, 'tlsClientError')
  const plain = connect(h.port, '127.0.0.1', () => plain.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  plain.on('error', () => undefined)
  await handled
  // A silent connection, cut at the handshake timeout.
  handled = once(h.main.server, 'tlsClientError')
  const silent = connect(h.port, '127.0.0.1')
  silent.on('error', () => undefined)
  await handled
  // A client that does not trust the server's certificate gives up half way.
  await attempt(h, { ...as(pki.client('order-service')), ca: pki.otherCa.certPem })
  // A TCP probe (connect, close, nothing sent) was refused nothing: not counted.
  handled = once(h.main.server, 'tlsClientError')
  const probe = connect(h.port, '127.0.0.1', () => probe.end())
  await handled

  t.same(await failures(h), { no_certificate: 1, unknown_ca: 1, revoked: 20, expired: 1, not_yet_valid: 1, crl_expired: 0, protocol: 1, timeout: 1, other: 1 })
  const lines = h.logs.records().filter((r) => r.event === 'tls_handshake_refused')
  t.equal(lines.length, 8, 'one line per reason seen')
  t.match(
    lines.find((r) => r.reason === 'revoked'),
    { level: 40, reason: 'revoked', detail: 'CERT_REVOKED', source: '127.0.0.1', count: 1 },
    'the first revoked attempt is a line; the 19 others wait for the summary',
  )
  t.notMatch(h.logs.text, /BEGIN CERTIFICATE|order-service/, 'no certificate, no subject in the log')
})

t.test('an expired CRL in force: every handshake is refused as crl_expired', async (t) => {
  const pki = testPki()
  const h = await startHarness(t, { crl: createCrl(pki.ca, [], { thisUpdate: new Date(Date.now() - 2 * HOUR), nextUpdate: new Date(Date.now() - HOUR) }) })
  await attempt(h, as(pki.client('order-service')))
  t.match(await failures(h), { crl_expired: 1 })
})
