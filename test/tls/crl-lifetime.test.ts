/**
 * CRLs have a lifetime: past its nextUpdate a CRL makes OpenSSL refuse every client certificate of its
 * issuer. Such a CRL is refused at start and at reload (the last good one stays), and the moment the CRL in
 * force passes its nextUpdate is an error line, a readiness failure and a counted refusal, never silence.
 */
import { X509Certificate } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createCa, createCrl } from '../../src/pki/dev-pki.js'
import { crlsInForce } from '../../src/tls/crl.js'
import { httpCall, httpsCall } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { testPki } from '../helpers/pki.js'

const HOUR = 3_600_000
const tokenRequest = { method: 'POST', path: '/token', headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' }
/** A CRL of the test CA whose nextUpdate passed an hour ago. */
const expiredCrl = () => createCrl(testPki().ca, [], { thisUpdate: new Date(Date.now() - 2 * HOUR), nextUpdate: new Date(Date.now() - HOUR) })

async function started(t: Test, crl: string) {
  const pki = testPki()
  const { dir, env } = await install(t, { crl })
  const running = await startInstalled(t, env, { pollMs: 3_600_000 })
  const call = () => httpsCall(running.port, { ...tokenRequest, ca: pki.ca.certPem, client: pki.client('order-service') })
  const metrics = async () => (await httpCall(running.opsPort, { path: '/metrics' })).text
  const ready = () => httpCall(running.opsPort, { path: '/readyz' })
  return { ...running, pki, dir, call, metrics, ready }
}

t.test('a CRL past its nextUpdate stops the start with an error naming AUTHZ_CRL, the file and the date (regression: started, refusing every caller)', async (t) => {
  const { env } = await install(t, { crl: expiredCrl() })
  await t.rejects(startInstalled(t, env), /^AUTHZ_CRL: .*crl\.pem: the CRL of authz test CA is past its nextUpdate \d{4}-\d\d-\d\dT[\d:.]+Z/)
})

t.test('a reload that meets a CRL past its nextUpdate fails: last good CRL kept, reload_failing{what="tls"} 1, one error line (regression: "TLS reloaded")', async (t) => {
  const s = await started(t, createCrl(testPki().ca, []))
  await writeFile(join(s.dir, 'crl.pem'), expiredCrl())
  const failed = s.logs.next((r) => r.event === 'reload_failed' && r.what === 'tls')
  await s.server.reload()
  t.match(await failed, { level: 50, detail: /crl\.pem: the CRL of authz test CA is past its nextUpdate \d{4}-/ })
  t.match(await s.metrics(), /authz_reload_failing\{what="tls"\} 1/)
  t.equal((await s.call()).status, 200, 'the last good CRL stays in force: callers are served')
  t.equal((await s.ready()).status, 200, 'and the replica stays ready')
  t.notOk(s.logs.records().some((r) => r.event === 'reloaded' && r.what === 'tls'), 'never reported as reloaded')
})

t.test('a CRL whose thisUpdate is still to come is refused too (OpenSSL would refuse every client under it)', async (t) => {
  const s = await started(t, createCrl(testPki().ca, []))
  await writeFile(join(s.dir, 'crl.pem'), createCrl(testPki().ca, [], { thisUpdate: new Date(Date.now() + HOUR), nextUpdate: new Date(Date.now() + 2 * HOUR) }))
  const failed = s.logs.next((r) => r.event === 'reload_failed' && r.what === 'tls')
  await s.server.reload()
  t.match(await failed, { detail: /not valid before its thisUpdate/ })
  t.equal((await s.call()).status, 200)
})

t.test('an older CRL of the same issuer kept beside its newer one does not count: only the newest is in force', async (t) => {
  const older = expiredCrl()
  const newer = createCrl(testPki().ca, [], { thisUpdate: new Date(Date.now() - 60_000), nextUpdate: new Date(Date.now() + HOUR) })
  t.equal(crlsInForce(older + newer).length, 1)
  const s = await started(t, older + newer)
  t.equal((await s.call()).status, 200, 'started and serving')
  const next = Number(/authz_tls_crl_next_update_timestamp_seconds (\d+)/.exec(await s.metrics())?.[1])
  t.ok(Math.abs(next * 1000 - (Date.now() + HOUR)) < 120_000, 'the gauge follows the newer CRL')
})

t.test('the CRL in force passing its nextUpdate: an error line at that moment, readiness 503, refusals counted as crl_expired (regression: silence)', async (t) => {
  const pki = testPki()
  // A nextUpdate 3 s from now (whole seconds: the CRL's UTCTime has no fraction).
  const nextUpdate = new Date(Math.ceil((Date.now() + 3000) / 1000) * 1000)
  const s = await started(t, createCrl(pki.ca, [], { thisUpdate: new Date(Date.now() - 60_000), nextUpdate }))
  const expired = s.logs.next((r) => r.event === 'crl_expired')
  t.equal((await s.call()).status, 200, 'served before its nextUpdate')
  t.match(await s.ready(), { status: 200 })
  t.match(await s.metrics(), new RegExp(`authz_tls_crl_next_update_timestamp_seconds ${nextUpdate.getTime() / 1000}\\b`), 'the gauge is the nextUpdate')
  const line = await expired
  t.ok(Date.now() >= nextUpdate.getTime() && Date.now() - nextUpdate.getTime() < 2000, 'the line comes when the nextUpdate passes')
  t.match(line, { level: 50, file: join(s.dir, 'crl.pem'), next_update: nextUpdate.toISOString() })
  const ready = await s.ready()
  t.equal(ready.status, 503, 'not ready')
  t.match(ready.json(), { status: 'not_ready', checks: { crl: false } })
  await t.rejects(s.call(), 'a caller is refused at the handshake (OpenSSL: CRL has expired)')
  t.match(await s.metrics(), /authz_tls_handshake_failures_total\{reason="crl_expired"\} [1-9]/, 'counted as crl_expired')
  t.equal(s.logs.records().filter((r) => r.event === 'crl_expired').length, 1, 'one line, not one per refusal')
  // A fresh CRL: ready and serving again.
  await writeFile(join(s.dir, 'crl.pem'), createCrl(pki.ca, []))
  await s.server.reload()
  t.equal((await s.ready()).status, 200, 'a fresh CRL: ready again')
  t.equal((await s.call()).status, 200, 'and serving')
})

t.test('the CRL gauge is absent without AUTHZ_CRL; the server certificate and client CA expiry gauges are their notAfter', async (t) => {
  const pki = testPki()
  const second = createCa('second client CA', { notAfter: new Date(Date.now() + 30 * 24 * HOUR) })
  const { env } = await install(t, { clientCa: pki.ca.certPem + second.certPem })
  const { opsPort } = await startInstalled(t, env)
  const text = (await httpCall(opsPort, { path: '/metrics' })).text
  t.notMatch(text, /authz_tls_crl_next_update_timestamp_seconds \d/, 'no CRL, no series (never a 0)')
  const seconds = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1])
  const notAfter = (pem: string) => Date.parse(new X509Certificate(pem).validTo) / 1000
  t.equal(seconds('authz_tls_server_certificate_expiry_timestamp_seconds'), notAfter(pki.server.certPem))
  t.equal(seconds('authz_tls_client_ca_expiry_timestamp_seconds'), notAfter(second.certPem), 'the earliest notAfter of the bundle: the second CA')
})
