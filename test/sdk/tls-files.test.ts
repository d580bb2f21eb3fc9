import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { connect, type TLSSocket } from 'node:tls'
import { join } from 'node:path'
import t from 'tap'
import { thumbprintOf } from '../../packages/sdk/src/certificate.js'
import { TlsFiles, TlsFilesError, type TlsReloadEvent } from '../../packages/sdk/src/tls-files.js'
import { createClientCert, createServerCert } from '../../src/pki/dev-pki.js'
import { VALID_FROM } from '../helpers/material.js'
import { testPki } from '../helpers/pki.js'
import { kubeletVolume, renamedFiles } from '../helpers/tls-files.js'

const pki = testPki()
const renewed = (name = 'order-service') => createClientCert(pki.ca, name, VALID_FROM)

t.test('a set in force, a renewal by rename put in force, listeners told', async (t) => {
  const first = pki.client('order-service')
  const dir = renamedFiles(t.testdir(), first, pki.ca.certPem)
  const events: TlsReloadEvent[] = []
  const files = new TlsFiles(dir.paths, { pollMs: 0, onReload: (e) => events.push(e) })
  t.teardown(() => files.close())
  t.equal(files.current.thumbprint, thumbprintOf(first.certPem))
  t.equal(await files.reload(), false, 'nothing changed')
  const seen: string[] = []
  files.onChange((m) => seen.push(m.thumbprint as string))
  const next = renewed()
  dir.write(next, pki.ca.certPem)
  t.equal(await files.reload(), true)
  t.equal(files.current.thumbprint, thumbprintOf(next.certPem))
  t.same(seen, [thumbprintOf(next.certPem)])
  t.match(events, [{ ok: true, thumbprint: thumbprintOf(next.certPem), notAfter: Date }])
})

t.test('the kubelet ..data symlink swap is followed', async (t) => {
  const dir = kubeletVolume(t.testdir(), pki.client('order-service'), pki.ca.certPem)
  const files = new TlsFiles(dir.paths, { pollMs: 0 })
  t.teardown(() => files.close())
  for (let i = 0; i < 3; i++) {
    const next = renewed()
    dir.write(next, `${pki.ca.certPem}${pki.otherCa.certPem}`)
    t.equal(await files.reload(), true, `swap ${i + 1}`)
    t.equal(files.current.thumbprint, thumbprintOf(next.certPem))
    t.match(String(files.current.ca), /BEGIN CERTIFICATE[\s\S]+BEGIN CERTIFICATE/, 'the new bundle, both CAs')
  }
})

t.test('a certificate with another key is refused, reported only when read twice; the set in force stays', async (t) => {
  const first = pki.client('order-service')
  const dir = renamedFiles(t.testdir(), first, pki.ca.certPem)
  const events: TlsReloadEvent[] = []
  const lines: [string, Record<string, unknown>][] = []
  const logger = { info: (f: Record<string, unknown>) => lines.push(['info', f]), warn: (f: Record<string, unknown>) => lines.push(['warn', f]) }
  const files = new TlsFiles(dir.paths, { pollMs: 0, onReload: (e) => events.push(e), logger })
  t.teardown(() => files.close())
  const next = renewed()
  // spiffe-helper writes the certificate, then the key: a poll between the two sees a mismatch.
  writeFileSync(dir.paths.certFile, next.certPem)
  t.equal(await files.reload(), false, 'the straddled read is refused')
  t.same(events, [], '...without a report: the key may be on its way')
  t.equal(files.current.thumbprint, thumbprintOf(first.certPem), 'the set in force stays')
  t.equal(await files.reload(), false, 'still mismatched')
  t.match(events, [{ ok: false, error: { code: 'ERR_TLS_FILES_INVALID', path: dir.paths.keyFile }, thumbprint: thumbprintOf(first.certPem) }], 'reported the second time')
  t.notOk(JSON.stringify(events).includes('PRIVATE KEY') || String(events[0]?.error?.message).includes(next.keyPem.slice(40, 80)), 'no key material in the report')
  t.equal(await files.reload(), false)
  t.equal(events.length, 1, 'once, not at every poll')
  t.match(files.prometheus(), /^authz_tls_files_reload_failing\{cert=".*tls\.crt"\} 1$/m, 'a gauge an alert can fire on')
  writeFileSync(dir.paths.keyFile, next.keyPem)
  t.equal(await files.reload(), true, 'the key arrived: in force')
  t.equal(files.current.thumbprint, thumbprintOf(next.certPem))
  t.match(files.prometheus(), /^authz_tls_files_reload_failing\{cert=".*"\} 0$/m, 'in force again: 0')
  t.match(files.prometheus(), new RegExp(`^authz_tls_certificate_expiry_timestamp_seconds\\{cert=".*"\\} ${new Date(new X509Certificate(next.certPem).validTo).getTime() / 1000}$`, 'm'))
  t.match(lines, [
    ['warn', { event: 'tls_files_refused', x5t: thumbprintOf(first.certPem), error: /tls\.key: not the private key of/ }],
    ['info', { event: 'tls_files_renewed', x5t: thumbprintOf(next.certPem), not_after: String }],
  ], 'one log line each')
})

t.test('files that are not usable: named at start', async (t) => {
  const base = t.testdir()
  const dir = renamedFiles(base, pki.client('order-service'), pki.ca.certPem)
  const missing = join(base, 'nothing.pem')
  t.throws(() => new TlsFiles({ ...dir.paths, certFile: missing }), { name: 'TlsFilesError', code: 'ERR_TLS_FILES_READ', path: missing })
  t.throws(() => new TlsFiles({ ...dir.paths, keyFile: dir.paths.caFile }), { code: 'ERR_TLS_FILES_INVALID', path: dir.paths.caFile })
  writeFileSync(join(base, 'empty.pem'), 'no certificate here')
  t.throws(() => new TlsFiles({ ...dir.paths, caFile: join(base, 'empty.pem') }), { code: 'ERR_TLS_FILES_INVALID' })
  writeFileSync(join(base, 'big.pem'), Buffer.alloc((1 << 20) + 1, 0x41))
  t.throws(() => new TlsFiles({ ...dir.paths, caFile: join(base, 'big.pem') }), { code: 'ERR_TLS_FILES_READ', message: /larger than/ })
  t.throws(() => new TlsFiles({ ...dir.paths, caFile: base }), { code: 'ERR_TLS_FILES_READ', message: /not a regular file/ })
  t.throws(() => new TlsFiles(dir.paths, { pollMs: -1 }), TypeError)
  t.ok(new TlsFilesError('ERR_TLS_FILES_READ', 'p', 'm') instanceof Error)
})

t.test('a FIFO at a path neither blocks the start nor a reload, and never keeps the process alive', async (t) => {
  const base = t.testdir()
  const dir = renamedFiles(base, pki.client('order-service'), pki.ca.certPem)
  const fifo = join(base, 'fifo.pem')
  execFileSync('mkfifo', [fifo])
  t.throws(() => new TlsFiles({ ...dir.paths, certFile: fifo }), { code: 'ERR_TLS_FILES_READ', message: /not a regular file/ })
  const events: TlsReloadEvent[] = []
  const files = new TlsFiles(dir.paths, { pollMs: 0, onReload: (e) => events.push(e) })
  t.teardown(() => files.close())
  execFileSync('mv', ['-f', fifo, dir.paths.keyFile])
  t.equal(await files.reload(), false)
  t.equal(await files.reload(), false)
  t.match(events, [{ ok: false, error: { code: 'ERR_TLS_FILES_READ', message: /not a regular file/ } }])
})

t.test('polling puts a renewal in force by itself', async (t) => {
  const dir = kubeletVolume(t.testdir(), pki.client('order-service'), pki.ca.certPem)
  const files = new TlsFiles(dir.paths, { pollMs: 20 })
  t.teardown(() => files.close())
  const next = renewed()
  const changed = new Promise<string>((resolve) => files.onChange((m) => resolve(m.thumbprint as string)))
  dir.write(next, pki.ca.certPem)
  t.equal(await changed, thumbprintOf(next.certPem))
})

t.test('watchServer: a renewed server certificate is presented on new connections; open ones keep theirs', async (t) => {
  const first = createServerCert(pki.ca)
  const dir = renamedFiles(t.testdir(), first, pki.ca.certPem)
  const files = new TlsFiles(dir.paths, { pollMs: 0 })
  t.teardown(() => files.close())
  const server = createServer(files.serverOptions({ minVersion: 'TLSv1.3' }), (_req, res) => res.end('ok'))
  files.watchServer(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  const client = pki.client('order-service')
  const peer = (options: { maxVersion?: 'TLSv1.2' } = {}) =>
    new Promise<{ thumbprint: string; protocol: string | null; close(): void }>((resolve, reject) => {
      const socket = connect({ port, host: '127.0.0.1', servername: 'localhost', ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem, ...options }, () =>
        resolve({ thumbprint: thumbprintOf(socket.getPeerCertificate().raw), protocol: socket.getProtocol(), close: () => socket.destroy() }),
      )
      socket.once('error', reject)
    })
  const before = await peer()
  t.equal(before.thumbprint, thumbprintOf(first.certPem))
  const next = createServerCert(pki.ca)
  dir.write(next, pki.ca.certPem)
  t.equal(await files.reload(), true)
  const after = await peer()
  t.equal(after.thumbprint, thumbprintOf(next.certPem), 'a new connection: the renewed certificate')
  t.equal(after.protocol, 'TLSv1.3', 'the options given to serverOptions are kept')
  await t.rejects(peer({ maxVersion: 'TLSv1.2' }), 'TLS 1.2 still refused after the renewal')
  before.close()
  after.close()
})

t.test('watchServer: a session of the old CA bundle is not resumed after a bundle change', async (t) => {
  const dir = renamedFiles(t.testdir(), createServerCert(pki.ca), pki.ca.certPem)
  const files = new TlsFiles(dir.paths, { pollMs: 0 })
  t.teardown(() => files.close())
  const server = createServer(files.serverOptions({ minVersion: 'TLSv1.3' }), (req, res) => res.end(String((req.socket as TLSSocket).authorized)))
  files.watchServer(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  const client = pki.client('order-service')
  let session: Buffer | undefined
  const call = () =>
    new Promise<string>((resolve) => {
      const socket = connect({ port, host: '127.0.0.1', servername: 'localhost', ca: pki.ca.certPem, cert: client.certPem, key: client.keyPem, ...(session ? { session } : {}) })
      socket.on('session', (s: Buffer) => (session = s))
      let data = ''
      socket.once('secureConnect', () => {
        const reused = socket.isSessionReused()
        socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        socket.on('data', (c: Buffer) => (data += c.toString()))
        socket.on('end', () => resolve(`${reused ? 'resumed' : 'full'} ${data.split('\r\n\r\n')[1] ?? 'refused'}`))
      })
      socket.once('error', () => resolve('refused'))
      socket.once('close', () => resolve(`closed ${data.split('\r\n\r\n')[1] ?? 'refused'}`))
    })
  t.equal(await call(), 'full true')
  t.equal(await call(), 'resumed true', 'resumption within one bundle')
  dir.write(createServerCert(pki.ca), pki.otherCa.certPem) // the callers' CA left the bundle
  t.equal(await files.reload(), true)
  t.match(await call(), /refused/, 'the old session is not resumed: the caller is verified anew, and refused')
})
