/** Dev mode with AUTHZ_IDENTITY=spiffe: the dev PKI makes an X.509-SVID for every caller the policy names. */
import { X509Certificate } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { decodeJwt } from 'jose'
import t from 'tap'
import { systemClock } from '../../src/clock.js'
import { initKeys } from '../../src/keys/admin.js'
import { devPkiPaths } from '../../src/pki/dev-files.js'
import { startServer } from '../../src/server.js'
import { LogCapture } from '../helpers/harness.js'
import { httpsCall } from '../helpers/http.js'
import { pooledKey } from '../helpers/material.js'
import { testPki } from '../helpers/pki.js'

const ORDER = 'spiffe://example.org/ns/default/sa/order'
const PAYMENT = 'spiffe://example.org/ns/payments/sa/api'

t.test('dev mode in spiffe mode: SVIDs for the policy\'s callers, and the banner\'s curl command works', async (t) => {
  const dir = t.testdir({ config: {} })
  const policy = { audiences: ['inventory-service', 'order-service'], grants: { [ORDER]: { 'inventory-service': ['stock:read'] }, [PAYMENT]: { 'order-service': ['order:read'] } } }
  await writeFile(join(dir, 'config', 'service-policy.json'), JSON.stringify(policy))
  // The CA, server certificate and signing key exist already (the run's test material): only the SVIDs are made.
  const paths = devPkiPaths(join(dir, 'keys', 'dev-pki'))
  for (const [path, text] of [[paths.caCert, testPki().ca.certPem], [paths.caKey, testPki().ca.keyPem], [paths.serverCert, testPki().server.certPem], [paths.serverKey, testPki().server.keyPem]] as const) {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 })
    await writeFile(path, text, { mode: 0o600 })
  }
  await initKeys({ dir: join(dir, 'keys'), timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock: systemClock, newKey: pooledKey })
  const banner: string[] = []
  const env = { AUTHZ_PORT: '0', AUTHZ_OPS_PORT: '0', AUTHZ_HOST: '127.0.0.1', AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'example.org' }
  const server = await startServer(env, { cwd: dir, logDestination: new LogCapture(), bannerOut: { write: (s: string) => banner.push(s) } })
  t.teardown(() => server.close())
  const text = banner.join('')
  t.match(text, `Get a token as ${ORDER}:`)
  const cert = /--cert (\S+) --key (\S+)/.exec(text)
  t.same(cert?.slice(1), ['keys/dev-pki/svids/example.org+ns+default+sa+order/svid.pem', 'keys/dev-pki/svids/example.org+ns+default+sa+order/svid-key.pem'])
  const svid = new X509Certificate(await readFile(join(dir, 'keys/dev-pki/svids/example.org+ns+payments+sa+api/svid.pem')))
  t.equal(svid.subjectAltName, `URI:${PAYMENT}`, 'every caller of the policy got its SVID')
  const res = await httpsCall(Number(new URL(server.mainUrl).port), {
    method: 'POST',
    path: '/token',
    ca: await readFile(join(dir, 'keys/dev-pki/ca.pem'), 'utf8'),
    client: { certPem: await readFile(join(dir, cert?.[1] ?? ''), 'utf8'), keyPem: await readFile(join(dir, cert?.[2] ?? ''), 'utf8') },
    headers: { 'content-type': 'application/json' },
    body: /-d '(.+?)'/.exec(text)?.[1] ?? '',
  })
  t.equal(res.status, 200)
  t.match(decodeJwt(res.json().access_token as string), { sub: ORDER, client_id: ORDER, aud: 'inventory-service' })
})

t.test('a policy whose callers do not fit the identity mode stops the start, naming the entry', async (t) => {
  const dir = t.testdir({ config: { 'service-policy.json': JSON.stringify({ audiences: ['a'], grants: { 'order-service': { a: [] } } }) } })
  const env = { AUTHZ_PORT: '0', AUTHZ_OPS_PORT: '0', AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'example.org' }
  await t.rejects(startServer(env, { cwd: dir, logDestination: new LogCapture() }), {
    code: 'ERR_CONFIG',
    variable: 'AUTHZ_POLICY',
    message: /grants\["order-service"\]: caller is not a SPIFFE ID \(AUTHZ_IDENTITY=spiffe\)/,
  })
})
