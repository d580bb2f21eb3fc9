import { X509Certificate } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { runPkiCli } from '../../src/cli/pki.js'

async function run(dir: string, ...argv: string[]) {
  const out: string[] = []
  const err: string[] = []
  const code = await runPkiCli([...argv, '--dir', dir], {}, { out: (l) => out.push(l), err: (l) => err.push(l) })
  return { code, out: out.join('\n'), err: err.join('\n') }
}

t.test('init, client and server certificates chain to the dev CA, keys 0600, existing files kept', async (t) => {
  const dir = t.testdir({})
  t.equal((await run(dir, 'init')).code, 0)
  t.match((await run(dir, 'init')).out, /already exist/)
  t.equal((await run(dir, 'client', 'order-service')).code, 0)
  t.match((await run(dir, 'client', 'order-service')).out, /exists/)
  const server = await run(dir, 'server', 'authz', '--host', 'authz', '--host', '10.0.0.7')
  t.equal(server.code, 0)
  const ca = new X509Certificate(await readFile(join(dir, 'ca.pem')))
  const client = new X509Certificate(await readFile(join(dir, 'clients', 'order-service.pem')))
  const named = new X509Certificate(await readFile(join(dir, 'servers', 'authz.pem')))
  t.ok(client.verify(ca.publicKey) && named.verify(ca.publicKey), 'signed by the CA')
  t.equal(client.subject, 'CN=order-service')
  t.same(client.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'EKU clientAuth')
  t.match(named.subjectAltName, /DNS:authz/)
  t.match(named.subjectAltName, /IP Address:10\.0\.0\.7/)
  for (const key of ['ca-key.pem', 'server-key.pem', 'clients/order-service-key.pem', 'servers/authz-key.pem']) {
    t.equal((await stat(join(dir, key))).mode & 0o777, 0o600, key)
  }
})

t.test('usage errors exit 2', async (t) => {
  const dir = t.testdir({})
  t.equal((await run(dir, 'client')).code, 2)
  t.equal((await run(dir, 'client', '../escape')).code, 2, 'a name that is not a safe file name')
  t.equal((await run(dir, 'server', 'authz')).code, 2, 'server needs --host')
  t.equal((await run(dir, 'frobnicate')).code, 2)
  t.equal(await runPkiCli([], {}, { out: () => undefined, err: () => undefined }), 2)
})

t.test('client --spiffe makes an X.509-SVID: empty subject, one URI SAN, CA:FALSE, digitalSignature, from the dev CA', async (t) => {
  const dir = t.testdir({})
  const id = 'spiffe://example.org/ns/default/sa/order'
  const made = await run(dir, 'client', '--spiffe', id)
  t.equal(made.code, 0)
  t.match(made.out, /svids\/example\.org\+ns\+default\+sa\+order\/svid\.pem/)
  t.match((await run(dir, 'client', '--spiffe', id)).out, /exists/)
  const ca = new X509Certificate(await readFile(join(dir, 'ca.pem')))
  const svid = new X509Certificate(await readFile(join(dir, 'svids', 'example.org+ns+default+sa+order', 'svid.pem')))
  t.ok(svid.verify(ca.publicKey), 'signed by the dev CA')
  t.equal(svid.subject, undefined, 'empty subject')
  t.equal(svid.subjectAltName, `URI:${id}`)
  t.equal(svid.ca, false)
  t.same(svid.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'EKU serverAuth + clientAuth')
  t.equal((await stat(join(dir, 'svids', 'example.org+ns+default+sa+order', 'svid-key.pem'))).mode & 0o777, 0o600)
  // The key usage extension as the SVID's verifier reads it (svid.ts), through authz's own judge.
  const { svidOf } = await import('../../src/identity/svid.js')
  t.same(svidOf(svid.raw, ['example.org']), { ok: true, id, trustDomain: 'example.org' })
  for (const bad of ['spiffe://example.org', 'spiffe://example.org/../x', 'https://example.org/x', 'spiffe://Example.org/x']) {
    const res = await run(dir, 'client', '--spiffe', bad)
    t.equal(res.code, 2, bad)
    t.match(res.err, /is not a SPIFFE ID/)
  }
  t.equal((await run(dir, 'client', 'order-service', '--spiffe', id)).code, 2, 'a name and --spiffe')
})
