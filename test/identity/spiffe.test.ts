/**
 * AUTHZ_IDENTITY=spiffe over real mTLS: X.509-SVIDs made at test time (empty subject, one URI SAN) are
 * callers; every look-alike of one is not.
 */
import { X509Certificate } from 'node:crypto'
import { decodeJwt } from 'jose'
import t from 'tap'
import { thumbprintOf } from '@authz/sdk'
import { identityOf } from '../../src/identity/peer.js'
import { svidOf } from '../../src/identity/svid.js'
import { createCertificate, createSvid, type CertOptions, type KeyPairPem } from '../../src/pki/dev-pki.js'
import type { Harness } from '../helpers/harness.js'
import { VALID_FROM } from '../helpers/material.js'
import { ORDER, PAYMENT, spiffeHarness } from '../helpers/spiffe.js'

/** POST /token as `client`: 'handshake refused' when TLS failed, else the status, error and refusal reason. */
async function attempt(h: Harness, client: KeyPairPem, body: Record<string, unknown> = { audience: 'inventory-service' }): Promise<string> {
  const before = await refusalCounts(h)
  let res
  try {
    res = await h.token(body, client)
  } catch {
    return 'handshake refused'
  }
  if (res.status === 200) return `200 sub=${String(decodeJwt(res.json().access_token as string).sub)}`
  const after = await refusalCounts(h)
  const reasons = Object.keys(after).filter((r) => (after[r] ?? 0) > (before[r] ?? 0))
  return `${res.status} ${String(res.json().error)}${reasons.length > 0 ? ` (${reasons.join(',')})` : ''}`
}

async function refusalCounts(h: Harness): Promise<Record<string, number>> {
  const { values } = await h.metrics.callerCertificatesRefused.get()
  return Object.fromEntries(values.map((v) => [String(v.labels.reason), v.value]))
}

t.test('an X.509-SVID is a caller: sub and client_id are its SPIFFE ID, the token bound to it', async (t) => {
  const h = await spiffeHarness(t)
  const svid = h.pki.svid(ORDER)
  const cert = new X509Certificate(svid.certPem)
  t.equal(cert.subject ?? '', '', 'the SVID has an empty subject (Node reports none)')
  t.equal(cert.subjectAltName, `URI:${ORDER}`)
  const res = await h.token({ audience: 'inventory-service', client_id: ORDER }, svid)
  t.equal(res.status, 200, 'issued')
  const claims = decodeJwt(res.json().access_token as string)
  t.match(claims, { sub: ORDER, client_id: ORDER, aud: 'inventory-service', scope: 'stock:read stock:deduct' })
  t.same(claims.cnf, { 'x5t#S256': thumbprintOf(cert.raw) }, 'cnf.x5t#S256 is the SVID thumbprint, as for a CN certificate')
  t.match(JSON.parse(h.logs.lines.find((l) => l.includes('"token_issued"')) ?? '{}'), { sub: ORDER, x5t: thumbprintOf(cert.raw) })
  // SPIRE's SVIDs carry a subject (O=SPIRE), Istio's may carry DNS SANs: neither plays a part.
  const spireLike = createSvid(h.pki.ca, PAYMENT, { subject: [{ shortName: 'C', value: 'US' }, { shortName: 'O', value: 'SPIRE' }], altNames: [{ uri: PAYMENT }, { dns: 'payments.prod.svc' }], ...VALID_FROM })
  t.equal(await attempt(h, spireLike, { audience: 'order-service' }), `200 sub=${PAYMENT}`)
  // client_id must be the SPIFFE ID: not the CN, not another caller's ID, not another spelling.
  for (const clientId of ['order-service', PAYMENT, `${ORDER}/`, ORDER.toUpperCase()]) {
    t.equal(await attempt(h, svid, { audience: 'inventory-service', client_id: clientId }), '401 invalid_client', `client_id ${clientId}`)
  }
  t.equal(await attempt(h, svid, { audience: 'order-service' }), '400 invalid_target', 'the policy decides as in cn mode')
})

/**
 * A certificate from the test CA shaped by `options` (no subject, EKU clientAuth + serverAuth, key usage
 * digitalSignature, unless said otherwise), for one key shared by all of them: the table makes dozens.
 */
function shaped(h: Harness, options: Partial<CertOptions>): KeyPairPem {
  const keyPem = h.pki.client('order-service').keyPem
  return createCertificate({ subject: [], eku: 'both', keyUsage: { digitalSignature: true }, keyPem, ...VALID_FROM, ...options }, h.pki.ca)
}

t.test('look-alikes of an SVID are refused (the table of the closing note)', async (t) => {
  const h = await spiffeHarness(t)
  const uri = (value: string) => shaped(h, { altNames: [{ uri: value }] })
  const cases: [string, () => KeyPairPem, string][] = [
    ['valid SVID (control)', () => h.pki.svid(ORDER), `200 sub=${ORDER}`],
    ['valid SVID, second trust domain', () => h.pki.svid(PAYMENT), '400 invalid_target'],
    ['no URI SAN: SPIFFE ID in the CN', () => shaped(h, { subject: [{ shortName: 'CN', value: ORDER }] }), '401 invalid_client (no_uri_san)'],
    ['no URI SAN: SPIFFE ID in a DNS SAN', () => shaped(h, { altNames: [{ dns: ORDER }] }), '401 invalid_client (no_uri_san)'],
    ['CN certificate (CN=order-service)', () => h.pki.client('order-service'), '401 invalid_client (no_uri_san)'],
    ['two URI SANs, both SPIFFE IDs', () => shaped(h, { altNames: [{ uri: ORDER }, { uri: PAYMENT }] }), '401 invalid_client (several_uri_sans)'],
    ['two URI SANs, SPIFFE + https', () => shaped(h, { altNames: [{ uri: ORDER }, { uri: 'https://example.org/order' }] }), '401 invalid_client (several_uri_sans)'],
    ['two subjectAltName extensions', () => shaped(h, { altNames: [{ uri: ORDER }], extraAltNames: [[{ dns: 'order.example.org' }]] }), 'handshake refused'],
    ['another trust domain', () => uri('spiffe://evil.org/ns/default/sa/order'), '401 invalid_client (untrusted_trust_domain)'],
    ['trusted domain as a suffix', () => uri('spiffe://evil-example.org/ns/default/sa/order'), '401 invalid_client (untrusted_trust_domain)'],
    ['trusted domain as a prefix', () => uri('spiffe://example.org.evil.org/ns/default/sa/order'), '401 invalid_client (untrusted_trust_domain)'],
    ['subdomain of a trusted domain', () => uri('spiffe://dev.example.org/ns/default/sa/order'), '401 invalid_client (untrusted_trust_domain)'],
    ['uppercase trust domain', () => uri('spiffe://EXAMPLE.org/ns/default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['uppercase scheme', () => uri('SPIFFE://example.org/ns/default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['https scheme', () => uri('https://example.org/ns/default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['no path (trust domain ID)', () => uri('spiffe://example.org'), '401 invalid_client (not_a_spiffe_id)'],
    ['root path', () => uri('spiffe://example.org/'), '401 invalid_client (not_a_spiffe_id)'],
    ['".." segment', () => uri('spiffe://example.org/ns/default/sa/../sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['"." segment', () => uri('spiffe://example.org/ns/./default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['empty segment "//"', () => uri('spiffe://example.org/ns//default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['trailing slash', () => uri(`${ORDER}/`), '401 invalid_client (not_a_spiffe_id)'],
    ['percent-encoding', () => uri('spiffe://example.org/ns/default/sa/%6Frder'), '401 invalid_client (not_a_spiffe_id)'],
    ['percent-encoded "/"', () => uri('spiffe://example.org/ns%2Fdefault/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['query', () => uri(`${ORDER}?x=1`), '401 invalid_client (not_a_spiffe_id)'],
    ['fragment', () => uri(`${ORDER}#x`), '401 invalid_client (not_a_spiffe_id)'],
    ['userinfo', () => uri('spiffe://order@example.org/ns/default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['port', () => uri('spiffe://example.org:443/ns/default/sa/order'), '401 invalid_client (not_a_spiffe_id)'],
    ['NUL byte after the ID', () => uri(`${ORDER}\u0000.evil.org`), '401 invalid_client (not_a_spiffe_id)'],
    ['space in the path', () => uri('spiffe://example.org/ns/default/sa/order service'), '401 invalid_client (not_a_spiffe_id)'],
    // A CA writing UTF-8 into the IA5String: "exаmple.org" with a Cyrillic "а" (the bytes forge writes as given).
    ['non-ASCII look-alike trust domain (UTF-8 bytes)', () => uri(Buffer.from('spiffe://exаmple.org/ns/default/sa/order', 'utf8').toString('latin1')), '401 invalid_client (not_a_spiffe_id)'],
    ['SPIFFE ID over 2048 characters', () => uri(`spiffe://example.org/${'a'.repeat(2048)}`), '401 invalid_client (not_a_spiffe_id)'],
    ['path differs in case (not folded)', () => uri('spiffe://example.org/ns/default/sa/ORDER'), '401 invalid_client'],
    ['unknown workload in a trusted domain', () => h.pki.svid('spiffe://example.org/ns/default/sa/billing'), '401 invalid_client'],
    ['CA certificate with the SPIFFE ID', () => shaped(h, { isCa: true, altNames: [{ uri: ORDER }] }), '401 invalid_client (ca_certificate)'],
    ['key usage without digitalSignature (keyAgreement only)', () => shaped(h, { altNames: [{ uri: ORDER }], keyUsage: { keyAgreement: true } }), '401 invalid_client (no_digital_signature)'],
    ['no key usage extension', () => shaped(h, { altNames: [{ uri: ORDER }], keyUsage: 'none' }), '401 invalid_client (no_digital_signature)'],
    ['leaf with keyCertSign', () => shaped(h, { altNames: [{ uri: ORDER }], keyUsage: { digitalSignature: true, keyCertSign: true } }), '401 invalid_client (signing_key_usage)'],
    ['leaf with cRLSign', () => shaped(h, { altNames: [{ uri: ORDER }], keyUsage: { digitalSignature: true, cRLSign: true } }), '401 invalid_client (signing_key_usage)'],
    ['EKU serverAuth only', () => shaped(h, { altNames: [{ uri: ORDER }], eku: 'serverAuth' }), 'handshake refused'],
    ['SVID from an untrusted CA', () => createSvid(h.pki.otherCa, ORDER, { keyPem: h.pki.client('order-service').keyPem, ...VALID_FROM }), 'handshake refused'],
  ]
  const table: Record<string, string> = {}
  for (const [name, make] of cases) table[name] = await attempt(h, make())
  t.same(table, Object.fromEntries(cases.map(([name, , expected]) => [name, expected])))
  t.comment(['case → result', ...Object.entries(table).map(([c, r]) => `${c} → ${r}`)].join('\n'))
  // Each refusal reason reaches the log (a warning naming the reason, and the trust domain when that is it).
  const lines = h.logs.records().filter((r) => r.event === 'caller_certificate_refused')
  t.same(new Set(lines.map((r) => r.reason)), new Set(Object.values(table).flatMap((r) => /\((\w+)\)/.exec(r)?.[1] ?? [])))
  t.match(lines.find((r) => r.reason === 'untrusted_trust_domain' && r.trust_domain === 'evil.org'), { level: 40, identity: 'spiffe' })
  t.equal(h.logs.text.includes('token_issued'), true)
  t.equal(h.logs.records().filter((r) => r.event === 'token_issued').length, 1, 'only the control got a token')
})

t.test('a look-alike repeated on new connections is counted each time and logged once plus a count', async (t) => {
  const h = await spiffeHarness(t)
  const lookAlike = shaped(h, { altNames: [{ uri: 'spiffe://evil.org/ns/default/sa/order' }] })
  for (let i = 0; i < 20; i++) t.equal(await attempt(h, lookAlike), '401 invalid_client (untrusted_trust_domain)')
  t.equal((await refusalCounts(h)).untrusted_trust_domain, 20, 'the counter moves once per connection')
  const lines = h.logs.records().filter((r) => r.event === 'caller_certificate_refused')
  // The first refusal is a line at once; the rest are summed in a line per 10 s (never a line each).
  t.match(lines[0], { reason: 'untrusted_trust_domain', trust_domain: 'evil.org', count: 1 })
  t.ok(lines.length < 20, `${lines.length} lines for 20 refusals`)
})

t.test('the rate limit is keyed by the SPIFFE ID: two certificates of one ID share a bucket', async (t) => {
  const h = await spiffeHarness(t, { AUTHZ_RATE_LIMIT: '2' })
  const first = h.pki.svid(ORDER)
  const second = createSvid(h.pki.ca, ORDER, VALID_FROM) // a renewed SVID: another key, the same ID
  t.not(thumbprintOf(first.certPem), thumbprintOf(second.certPem))
  t.equal(await attempt(h, first), `200 sub=${ORDER}`)
  t.equal(await attempt(h, second), `200 sub=${ORDER}`)
  t.equal(await attempt(h, second), '429 slow_down', 'the third request of the ID within the second')
  t.equal(await attempt(h, first), '429 slow_down')
  t.equal(await attempt(h, h.pki.svid(PAYMENT), { audience: 'order-service' }), `200 sub=${PAYMENT}`, 'another ID has its own bucket')
  h.clock.advance(1000)
  t.equal(await attempt(h, second), `200 sub=${ORDER}`, 'refilled a second later')
})

t.test('svidOf reads the SAN and key usage from the DER; identityOf judges under a mode', async (t) => {
  const der = (pair: KeyPairPem) => new X509Certificate(pair.certPem).raw
  const pki = (await import('../helpers/pki.js')).testPki()
  const make = (options: Partial<CertOptions>) => createCertificate({ subject: [], eku: 'both', keyUsage: { digitalSignature: true }, ...VALID_FROM, ...options }, pki.ca)
  t.same(svidOf(der(pki.svid(ORDER)), ['example.org']), { ok: true, id: ORDER, trustDomain: 'example.org' })
  t.same(svidOf(der(pki.svid(ORDER)), ['prod.example.org']), { ok: false, reason: 'untrusted_trust_domain', trustDomain: 'example.org' })
  // OpenSSL refuses these at the handshake; the parser refuses them on its own too.
  t.same(svidOf(der(make({ altNames: [{ uri: ORDER }], extraAltNames: [[{ uri: PAYMENT }]] })), ['example.org']), { ok: false, reason: 'unreadable_certificate' }, 'two SAN extensions')
  t.same(svidOf(Buffer.from('not a certificate'), ['example.org']), { ok: false, reason: 'unreadable_certificate' })
  const peer = (pair: KeyPairPem) => {
    const x = new X509Certificate(pair.certPem)
    return { raw: x.raw, subject: x.subject === undefined ? undefined : { CN: 'order-service' }, valid_from: x.validFrom, valid_to: x.validTo, ca: x.ca } as never
  }
  const spiffe = { kind: 'spiffe', trustDomains: ['example.org'] } as const
  t.match(identityOf(peer(pki.svid(ORDER)), Date.now(), spiffe), { ok: true, identity: { subject: ORDER } })
  t.match(identityOf(peer(pki.svid(ORDER)), Date.now()), { ok: false, reason: 'no_common_name' }, 'an SVID has no CN: nobody in cn mode')
  t.match(identityOf(peer(pki.client('order-service')), Date.now(), spiffe), { ok: false, reason: 'no_uri_san' }, 'a CN certificate is nobody in spiffe mode')
})

t.test('cost by certificate shape: reading the SVID of a certificate with 1,000 URI SANs stays linear (asn1js, not PKI.js)', async (t) => {
  // PKI.js's whole-certificate and SAN parse took ~150× Node's native parse of the same certificate (~0.7 s
  // for 3,000 URIs, on the event loop of every caller), and ~5× the handshake's own work for a normal SVID.
  const pki = (await import('../helpers/pki.js')).testPki()
  const big = new X509Certificate(
    createCertificate(
      { subject: [], eku: 'both', keyUsage: { digitalSignature: true }, altNames: Array.from({ length: 1000 }, (_, i) => ({ uri: `${ORDER}-${i}` })), keyPem: pki.client('order-service').keyPem, ...VALID_FROM },
      pki.ca,
    ).certPem,
  ).raw
  // CPU time of this process, not the wall clock: on a loaded machine a 10 ms window is preempted far more
  // often than a 0.5 ms one, and the wall-clock ratio said more about the load than about the parser
  // (62 ms vs 0.5 ms in a full run on a busy 2-core machine, 7 ms vs 1 ms alone).
  const median = (f: () => unknown): number => {
    const runs: number[] = []
    for (let i = 0; i < 9; i++) {
      const start = process.cpuUsage()
      for (let j = 0; j < 5; j++) f()
      const used = process.cpuUsage(start)
      runs.push((used.user + used.system) * 1000) // µs -> ns, as before
    }
    return runs.sort((a, b) => a - b)[4] as number
  }
  t.same(svidOf(big, ['example.org']), { ok: false, reason: 'several_uri_sans' })
  const ours = median(() => svidOf(big, ['example.org']))
  const native = median(() => new X509Certificate(big).subjectAltName)
  t.ok(ours < 40 * native, `svidOf ${(ours / 5e6).toFixed(2)} ms vs Node's own parse ${(native / 5e6).toFixed(2)} ms`)
})
