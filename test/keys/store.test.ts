import { chmod, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import { initKeys, rotateKeys } from '../../src/keys/admin.js'
import { loadKeyset } from '../../src/keys/keyset.js'
import { generateRsaKey, pemHeader, PKCS8_ENCRYPTED_LABEL, PKCS8_LABEL, toPkcs8Pem } from '../../src/keys/material.js'
import { KeyStore } from '../../src/keys/store.js'
import { pooledKey } from '../helpers/material.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }
const min = 60_000

async function setup(t: Test, passphrase?: string) {
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  const admin = { dir, timing, clock, passphrase, newKey: pooledKey }
  const first = await initKeys(admin)
  const store = await KeyStore.open({ dir, timing, clock, passphrase })
  t.teardown(() => store.close())
  return { dir, clock, admin, first, store }
}

t.test('init writes a 0600 PKCS#8 key and a manifest; the store signs with it', async (t) => {
  const { dir, first, store } = await setup(t)
  t.match(first.kid, /^[A-Za-z0-9_-]{43}$/)
  t.equal((await stat(join(dir, first.file))).mode & 0o777, 0o600)
  t.ok((await readFile(join(dir, first.file), 'utf8')).startsWith(pemHeader(PKCS8_LABEL)), 'PKCS#8 PEM')
  t.equal(store.signingKey()?.kid, first.kid)
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as unknown
  t.match(manifest, { version: 1, keys: [{ kid: first.kid, alg: 'RS256', file: `${first.kid}.pem` }] })
  t.notOk(JSON.stringify(manifest).includes('PRIVATE'), 'the manifest holds no key material')
})

t.test('a passphrase-encrypted key loads only with the passphrase', async (t) => {
  const { dir, first, store } = await setup(t, 'correct horse')
  t.ok((await readFile(join(dir, first.file), 'utf8')).startsWith(pemHeader(PKCS8_ENCRYPTED_LABEL)), 'encrypted PKCS#8 PEM')
  t.equal(store.signingKey()?.kid, first.kid)
  await t.rejects(loadKeyset(dir), { code: 'ERR_KEYSET_INVALID', reason: 'passphrase_missing' })
  await t.rejects(loadKeyset(dir, { passphrase: 'wrong' }), { code: 'ERR_KEYSET_INVALID', reason: 'passphrase_wrong' })
})

t.test('the view switches at the activation instant by itself, and the JWKS is recomputed only on change', async (t) => {
  const { admin, clock, first, store } = await setup(t)
  const next = (await rotateKeys(admin)).key
  t.same(await store.reload(), { changed: true })
  const before = store.jwks()
  t.same(before.kids, [first.kid, next.kid], 'next key published before it signs')
  t.equal(store.signingKey()?.kid, first.kid)
  t.equal(store.jwks(), before, 'same object: not rebuilt per request')
  clock.advance(20 * min - 1)
  t.equal(store.signingKey()?.kid, first.kid)
  clock.advance(1)
  t.equal(store.signingKey()?.kid, next.kid, 'switched with no file change')
  t.same(store.jwks().kids, [first.kid, next.kid], 'the retired key is still published')
  clock.advance((600 + 600 + 300) * 1000)
  t.same(store.jwks().kids, [next.kid], 'unpublished once no token can need it')
})

t.test('a corrupt manifest, a missing key file or a swapped key keeps the keyset in force', async (t) => {
  const { dir, admin, first, store } = await setup(t)
  const manifestPath = join(dir, 'manifest.json')
  const good = await readFile(manifestPath, 'utf8')

  await writeFile(manifestPath, good.slice(0, good.length / 2))
  const corrupt = await store.reload()
  t.equal(corrupt.error?.code, 'ERR_KEYSET_INVALID')
  t.equal(store.signingKey()?.kid, first.kid)
  t.same(await store.reload(), { changed: false }, 'reported once')

  await writeFile(manifestPath, good)
  t.same(await store.reload(), { changed: false }, 'back to the loaded manifest: nothing to do')

  const { key: second } = await rotateKeys(admin)
  await rm(join(dir, second.file))
  const missing = await store.reload()
  t.equal(missing.error?.code, 'ERR_KEYSET_READ')
  t.same(store.jwks().kids, [first.kid])

  await writeFile(join(dir, second.file), toPkcs8Pem(await generateRsaKey()), { mode: 0o600 })
  const swapped = await store.reload(true)
  t.equal(swapped.error?.code, 'ERR_KEYSET_INVALID')
  t.equal(swapped.error?.reason, 'key_mismatch')

  await writeFile(join(dir, second.file), 'not a key', { mode: 0o600 })
  t.equal((await store.reload(true)).error?.code, 'ERR_KEYSET_INVALID')
  t.equal(store.signingKey()?.kid, first.kid)

  await rm(manifestPath)
  t.equal((await store.reload()).error?.code, 'ERR_KEYSET_READ')
  t.equal(store.signingKey()?.kid, first.kid, 'a deleted manifest keeps the keyset too')
})

t.test('a key file readable by any user loads with a warning', async (t) => {
  const { dir, first } = await setup(t)
  await chmod(join(dir, first.file), 0o644)
  const keyset = await loadKeyset(dir)
  t.match(keyset.warnings, [/mode 644/])
  await chmod(join(dir, first.file), 0o440)
  t.same((await loadKeyset(dir)).warnings, [], 'group-readable, as a Kubernetes Secret with fsGroup: no warning')
})

t.test('a weak or non-RSA key is refused', async (t) => {
  const { dir, first } = await setup(t)
  const { generateKeyPairSync } = await import('node:crypto')
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey
  await writeFile(join(dir, first.file), small.export({ type: 'pkcs8', format: 'pem' }) as string)
  await t.rejects(loadKeyset(dir), { code: 'ERR_KEYSET_INVALID', reason: 'key_too_weak' })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  await writeFile(join(dir, first.file), ec.export({ type: 'pkcs8', format: 'pem' }) as string)
  await t.rejects(loadKeyset(dir), { code: 'ERR_KEYSET_INVALID', reason: 'key_type' })
})

t.test('overlapping reloads never leave an older keyset in force (regression)', async (t) => {
  const { dir, admin, first, store } = await setup(t)
  const manifestPath = join(dir, 'manifest.json')
  const original = await readFile(manifestPath, 'utf8')
  for (let trial = 0; trial < 20; trial++) {
    await rotateKeys(admin)
    // A reload starts on the new manifest; before it finishes the manifest goes back to the original
    // (an operator's undo, a Secret rolled back) and another reload starts. The file's last word must win.
    const a = store.reload()
    await writeFile(join(dir, 'manifest.tmp'), original)
    await rename(join(dir, 'manifest.tmp'), manifestPath)
    const b = store.reload()
    await Promise.all([a, b])
    await store.reload() // a poll
    t.same(store.jwks().kids, [first.kid], `trial ${trial}: the manifest on disk is the one in force`)
  }
})

t.test('a manifest that names a key file not there yet is retried until it loads (regression: stale for ever)', async (t) => {
  const { dir, admin, first, store } = await setup(t)
  // The watcher and retry timers hold no ref on the event loop (the listeners do in a server).
  const keepAlive = setInterval(() => undefined, 1000)
  t.teardown(() => clearInterval(keepAlive))
  const events: string[] = []
  let recovered!: () => void
  const failed = new Promise<void>((resolve) =>
    store.watch((e) => {
      events.push(e.kind)
      if (e.kind === 'failed') resolve()
      if (e.kind === 'recovered') recovered()
    }, 3_600_000),
  )
  const { key: second } = await rotateKeys(admin)
  // NFS or a kubelet sync shows the new manifest before the key file it names.
  const pem = await readFile(join(dir, second.file))
  await rm(join(dir, second.file))
  await store.reload()
  await failed
  t.same(store.jwks().kids, [first.kid], 'the old keyset serves meanwhile')
  t.ok(store.failingSince !== undefined, 'the store says it is failing')
  const converged = new Promise<void>((resolve) => (recovered = resolve))
  // The file arrives; nothing else changes, no poll is due for an hour, nobody sends SIGHUP.
  await writeFile(join(join(dir, '..'), 'staging.pem'), pem, { mode: 0o600 })
  await rename(join(join(dir, '..'), 'staging.pem'), join(dir, second.file))
  await converged
  t.same(store.jwks().kids, [first.kid, second.kid], 'the retry loaded it by itself')
  t.equal(store.failingSince, undefined)
  t.same(events, ['failed', 'recovered'])
})

t.test('a rotation at the instant of the last activation still supersedes it, whatever the kids (regression: ordered by kid, a coin toss)', async (t) => {
  const timing = { tokenTtl: 600, jwksMaxAge: 600 }
  let superseded = 0
  for (let i = 0; i < 16; i++) {
    const dir = t.testdir({})
    const clock = new ManualClock(Date.UTC(2026, 0, 1))
    const admin = { dir, timing, clock, newKey: pooledKey }
    await initKeys(admin)
    const { key } = await rotateKeys(admin, { activateInMs: 0, force: true })
    clock.advance(1)
    const store = await KeyStore.open({ dir, timing, clock })
    if (store.signingKey()?.kid === key.kid) superseded++
    store.close()
  }
  t.equal(superseded, 16, 'the rotated key signs every time')
})

t.test('a rotation at the instant of the active key takes the next millisecond, not a pending key\'s (regression: it went after the last activation)', async (t) => {
  const timing = { tokenTtl: 600, jwksMaxAge: 600 }
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  const admin = { dir, timing, clock, newKey: pooledKey }
  const first = await initKeys(admin)
  const { key: pending } = await rotateKeys(admin, { activateInMs: 3_600_000, force: true })
  const { key: now } = await rotateKeys(admin, { activateInMs: 0, force: true })
  t.equal(now.activatesAt, first.activatesAt + 1, 'the next millisecond after the key it ties with')
  t.ok(now.activatesAt < pending.activatesAt, 'before the pending rotation, as asked')
  clock.advance(1)
  const store = await KeyStore.open({ dir, timing, clock })
  t.equal(store.signingKey()?.kid, now.kid, 'it signs now')
  store.close()
})
