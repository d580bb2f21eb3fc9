/**
 * Signing-key material is checked on every reload, not only at start: a key file replaced or removed
 * under an unchanged manifest fails the reload (the last good keys serve); a kid listed both as a key and
 * as revoked is revoked; `rotate` refuses a passphrase the keys already there do not open; a start waits
 * (within a bound) for a key file the manifest names; every start error names the command that fixes it,
 * as it is typed where authz runs.
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import { initKeys, rotateKeys } from '../../src/keys/admin.js'
import { keysCommandFor, layoutOf } from '../../src/keys/commands.js'
import { generateRsaKey, toPkcs8Pem } from '../../src/keys/material.js'
import { KeyStore } from '../../src/keys/store.js'
import { httpCall, httpsCall } from '../helpers/http.js'
import { install, startInstalled } from '../helpers/install.js'
import { pooledKey } from '../helpers/material.js'
import { testPki } from '../helpers/pki.js'
import { keysCli } from '../helpers/processes.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }

async function running(t: Test) {
  const pki = testPki()
  const { dir, env } = await install(t)
  const started = await startInstalled(t, env, { pollMs: 3_600_000 })
  const kid = started.server.keys.signingKey()?.kid ?? ''
  const keyFile = join(dir, 'keys', `${kid}.pem`)
  const token = async () => {
    const res = await httpsCall(started.port, { method: 'POST', path: '/token', ca: pki.ca.certPem, client: pki.client('order-service'), headers: { 'content-type': 'application/json' }, body: '{"audience":"inventory-service"}' })
    const header = JSON.parse(Buffer.from(String(res.json().access_token).split('.')[0] ?? '', 'base64url').toString()) as { kid: string }
    return { status: res.status, kid: header.kid }
  }
  const failing = async () => /authz_reload_failing\{what="keyset"\} 1/.test((await httpCall(started.opsPort, { path: '/metrics' })).text)
  return { ...started, dir, env, kid, keyFile, token, failing }
}

t.test('a key file replaced under an unchanged manifest fails the reload; the last good key signs (regression: ignored until the next restart failed)', async (t) => {
  const s = await running(t)
  await writeFile(s.keyFile, toPkcs8Pem(await generateRsaKey()), { mode: 0o600 })
  const failed = s.logs.next((r) => r.event === 'reload_failed' && r.what === 'keyset')
  await s.server.reload()
  t.match(await failed, { level: 50, detail: new RegExp(`key ${s.kid}: .*holds a different key \\(thumbprint mismatch\\)`) })
  t.ok(await s.failing(), 'authz_reload_failing{what="keyset"} 1')
  t.same(await s.token(), { status: 200, kid: s.kid }, 'the key loaded before still signs')
})

t.test('a key file removed under an unchanged manifest fails the reload too; putting it back recovers', async (t) => {
  const s = await running(t)
  const bytes = await readFile(s.keyFile)
  await rm(s.keyFile)
  await s.server.reload()
  t.ok(await s.failing(), 'failing')
  t.same(await s.token(), { status: 200, kid: s.kid })
  await writeFile(s.keyFile, bytes, { mode: 0o600 })
  await s.server.reload()
  t.notOk(await s.failing(), 'recovered')
})

t.test('the same key written again (other bytes: re-encoded) is not a failure', async (t) => {
  const s = await running(t)
  const pem = await readFile(s.keyFile, 'utf8')
  await writeFile(s.keyFile, pem.replace(/\n/g, '\r\n'), { mode: 0o600 })
  await s.server.reload()
  t.notOk(await s.failing())
  t.same(await s.token(), { status: 200, kid: s.kid })
})

t.test('a kid listed under keys and under revoked is revoked: never published, never signing (regression: it signed)', async (t) => {
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  const admin = { dir, timing, clock, newKey: pooledKey }
  const first = await initKeys(admin)
  clock.advance(1000)
  const { key: second } = await rotateKeys(admin, { activateInMs: 0, force: true })
  // A hand edit: the active key added to "revoked" but left in "keys".
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { revoked: { kid: string; revokedAt: string }[] }
  manifest.revoked = [{ kid: second.kid, revokedAt: new Date(clock.now()).toISOString() }]
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest))
  const store = await KeyStore.open({ dir, timing, clock })
  t.teardown(() => store.close())
  t.same(store.jwks().kids, [first.kid], 'not published (the key it replaced stays published as retired)')
  t.equal(store.signingKey(), undefined, 'and it does not sign: no key does (the retired one is not brought back), which /readyz and the log say')
  t.match(store.keyset?.warnings, [new RegExp(`key ${second.kid} is listed under "keys" and under "revoked": it is treated as revoked`)])
})

t.test('rotate with a passphrase that does not open the keys there: exit 1, nothing written (regression: exit 0 and a key nothing could load)', async (t) => {
  const dir = t.testdir({})
  const env = { AUTHZ_KEYS_DIR: dir, AUTHZ_KEY_PASSPHRASE: 'correct horse', AUTHZ_DEV: 'false' }
  t.equal((await keysCli(env, 'init')).code, 0)
  const before = await readFile(join(dir, 'manifest.json'), 'utf8')
  const wrong = await keysCli({ ...env, AUTHZ_KEY_PASSPHRASE: 'battery staple' }, 'rotate')
  t.equal(wrong.code, 1)
  t.match(wrong.err, /AUTHZ_KEY_PASSPHRASE does not decrypt key [\w-]{43} \([\w-]{43}\.pem\): .*nothing was changed/)
  const missing = await keysCli({ AUTHZ_KEYS_DIR: dir, AUTHZ_DEV: 'false' }, 'rotate')
  t.equal(missing.code, 1)
  t.match(missing.err, /AUTHZ_KEY_PASSPHRASE is not set, and key [\w-]{43} .* is encrypted/)
  t.equal(await readFile(join(dir, 'manifest.json'), 'utf8'), before, 'the manifest is unchanged')
  t.equal((await keysCli(env, 'rotate')).code, 0, 'the right passphrase rotates')
})

t.test('a start that meets a manifest naming a key file not there yet waits for it (regression: failed at once)', async (t) => {
  const { dir, env } = await install(t)
  const kid = JSON.parse(await readFile(join(dir, 'keys', 'manifest.json'), 'utf8')).keys[0].kid as string
  const file = join(dir, 'keys', `${kid}.pem`)
  await rename(file, `${file}.later`)
  const { LogCapture } = await import('../helpers/harness.js')
  const logs = new LogCapture()
  const waiting = logs.next((r) => r.event === 'keys_waiting')
  const { startServer } = await import('../../src/server.js')
  const starting = startServer(env, { logDestination: logs, keysWaitMs: 20_000 })
  t.match(await waiting, { level: 40, detail: new RegExp(`key ${kid}: cannot read ${kid}\\.pem: ENOENT`) })
  await rename(`${file}.later`, file)
  const server = await starting
  t.teardown(() => server.close())
  t.equal(server.keys.signingKey()?.kid, kid, 'started once the file arrived')
})

t.test('start errors name the command that fixes them, as typed where authz runs (regression: "create a key with: npm run keys -- init" for every fault)', async (t) => {
  const cases: [string, (dir: string, kid: string) => Promise<void>, RegExp][] = [
    ['no manifest', (dir) => rm(join(dir, 'keys', 'manifest.json')), /no keys yet: create the first one with: npm run keys -- init\)$/],
    ['a key file missing', (dir, kid) => rm(join(dir, 'keys', `${kid}.pem`)), /restore it from your copy of the keys directory; if it is lost, revoke the key with: npm run keys -- revoke [\w-]{43}\)$/],
    ['another key in the file', async (dir, kid) => writeFile(join(dir, 'keys', `${kid}.pem`), toPkcs8Pem(await generateRsaKey())), /thumbprint mismatch\) \(restore the key file of [\w-]{43} .* revoke the key with: npm run keys -- revoke [\w-]{43}\)$/],
  ]
  for (const [what, damage, message] of cases) {
    const { dir, env } = await install(t)
    const kid = JSON.parse(await readFile(join(dir, 'keys', 'manifest.json'), 'utf8')).keys[0].kid as string
    await damage(dir, kid)
    await t.rejects(startInstalled(t, env, { keysWaitMs: 0 }), message, what)
  }
  t.equal(keysCommandFor('install', 'revoke abc'), 'authz-keys revoke abc', 'in the image and an install: the bin')
  t.equal(keysCommandFor('unknown', 'init'), 'authz-keys init (in a checkout: npm run keys -- init)', 'unknown: both')
  const tree = t.testdir({ checkout: { src: { bin: { 'keys.ts': '' } } }, image: { dist: { bin: { 'keys.js': '' } } }, empty: {} })
  t.same([layoutOf(join(tree, 'checkout')), layoutOf(join(tree, 'image')), layoutOf(join(tree, 'empty'))], ['checkout', 'install', 'unknown'])
})
