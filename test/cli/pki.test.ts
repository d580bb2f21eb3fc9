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
