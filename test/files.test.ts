/**
 * Only regular files are read. A FIFO (or a directory, or a device) at any watched path is a failed reload
 * at once: the last good state serves, `authz_reload_failing{what}` is 1, one error line names the file,
 * and the reload is retried until a regular file is back. Before, open() on a FIFO blocked a thread of
 * libuv's pool until a writer came: the reload never finished, every later reload queued behind it, and
 * the process could no longer exit.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, constants, openSync } from 'node:fs'
import { rename } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createCrl } from '../src/pki/dev-pki.js'
import { httpCall, httpsCall } from './helpers/http.js'
import { install, startInstalled } from './helpers/install.js'
import { testPki } from './helpers/pki.js'

/** Replaces `path` with a FIFO; the teardown unblocks any reader stuck on it (old code) and puts the file back. */
async function fifoAt(t: Test, path: string): Promise<() => Promise<void>> {
  await rename(path, `${path}.away`)
  execFileSync('mkfifo', [path])
  const unblock = (): void => {
    try {
      // Succeeds only while a reader is blocked in open(): it then reads an end of file.
      closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK))
    } catch {
      // nobody was waiting on it
    }
  }
  t.teardown(unblock)
  return async () => {
    unblock()
    await rename(`${path}.away`, path)
  }
}

const within = <T>(ms: number, p: Promise<T>): Promise<T | 'still waiting'> =>
  Promise.race([p, new Promise<'still waiting'>((resolve) => setTimeout(() => resolve('still waiting'), ms).unref())])

const WATCHED = [
  { what: 'policy', path: 'policy.json' },
  { what: 'tls', path: 'crl.pem' },
  { what: 'tls', path: 'ca.pem' },
  { what: 'keyset', path: 'keys/manifest.json' },
  { what: 'keyset', path: 'key file' },
] as const

for (const { what, path } of WATCHED) {
  t.test(`a FIFO at ${path}: the reload fails at once, the last good ${what} serves, and it recovers (regression: blocked for ever)`, async (t) => {
    const pki = testPki()
    const { dir, env } = await install(t, { crl: createCrl(pki.ca, []) })
    const { server, port, opsPort, logs } = await startInstalled(t, env, { pollMs: 3_600_000 })
    const file = path === 'key file' ? join(dir, 'keys', `${server.keys.signingKey()?.kid ?? ''}.pem`) : join(dir, path)
    const restore = await fifoAt(t, file)
    const failed = logs.next((r) => r.event === 'reload_failed' && r.what === what)
    t.not(await within(3000, server.reload()), 'still waiting', 'the reload finished at once')
    t.match(await within(1000, failed), { detail: /a FIFO, not a regular file/ }, 'one error line says the path is a FIFO')
    t.match((await httpCall(opsPort, { path: '/metrics' })).text, new RegExp(`authz_reload_failing\\{what="${what}"\\} 1`))
    const token = await httpsCall(port, { method: 'POST', path: '/token', ca: pki.ca.certPem, client: pki.client('order-service'), headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' })
    t.equal(token.status, 200, 'tokens are still issued under the last good state')
    await restore()
    await server.reload()
    t.match((await httpCall(opsPort, { path: '/metrics' })).text, new RegExp(`authz_reload_failing\\{what="${what}"\\} 0`), 'a regular file again: recovered')
  })
}

t.test('a FIFO at AUTHZ_POLICY stops the start at once with a message naming the variable', async (t) => {
  const { dir, env } = await install(t)
  await fifoAt(t, join(dir, 'policy.json'))
  const started = Date.now()
  await t.rejects(within(3000, startInstalled(t, env)), /AUTHZ_POLICY: .*policy\.json: a FIFO, not a regular file/)
  t.ok(Date.now() - started < 3000, 'at once')
})
