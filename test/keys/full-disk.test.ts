/**
 * A full disk (ENOSPC) during a keys change: nothing is left behind that later runs would not clean up
 * (before: every failed run left a `.lock.<hex>.tmp`), and the message names the file it could not write.
 */
import * as fs from 'node:fs/promises'
import { readdir } from 'node:fs/promises'
import t, { type Test } from 'tap'
import { ManualClock } from '../../src/clock.js'
import type * as adminModule from '../../src/keys/admin.js'
import { initKeys, rotateKeys } from '../../src/keys/admin.js'
import { pooledKey } from '../helpers/material.js'

const timing = { tokenTtl: 600, jwksMaxAge: 600 }
const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' })

/**
 * The admin functions on a disk that fills up when `full(path)` says so: open() works, the write fails.
 * tap's mocks apply to one module's own imports: the modules that write (the lock, atomic writes, the
 * manifest) are mocked one by one and handed to the admin module.
 */
async function onFullDisk(t: Test, full: (path: string) => boolean) {
  const fullFs = {
    ...fs,
    writeFile: async (path: string, data: string, options: object) => {
      if (!full(String(path))) return fs.writeFile(path, data, options)
      await fs.writeFile(path, '', options) // the file exists, empty: what open() + a failed write leave
      throw enospc()
    },
    open: async (path: string, flags: string, mode?: number) => {
      const handle = await fs.open(path, flags, mode)
      if (!full(String(path))) return handle
      return {
        writeFile: async () => {
          throw enospc()
        },
        chmod: () => handle.chmod(0o600),
        sync: () => handle.sync(),
        close: () => handle.close(),
      }
    },
  }
  const atomic = await t.mockImport('../../src/util/atomic-write.js', { 'node:fs/promises': fullFs })
  // (mock keys are resolved from this file, as the modules are)
  const lock = await t.mockImport('../../src/keys/lock.js', { 'node:fs/promises': fullFs, '../../src/util/atomic-write.js': atomic })
  const manifest = await t.mockImport('../../src/keys/manifest.js', { '../../src/util/atomic-write.js': atomic })
  return t.mockImport<typeof adminModule>('../../src/keys/admin.js', {
    '../../src/keys/lock.js': lock,
    '../../src/keys/manifest.js': manifest,
    '../../src/util/atomic-write.js': atomic,
  })
}

t.test('ENOSPC writing the lock: no staging file is left, and the message names it (regression: they accumulated)', async (t) => {
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  await initKeys({ dir, timing, clock, newKey: pooledKey })
  const before = (await readdir(dir)).sort()
  const admin = await onFullDisk(t, (path) => /\.lock\.[0-9a-f]+\.tmp$/.test(path))
  for (let i = 0; i < 3; i++) {
    const err = (await admin.rotateKeys({ dir, timing, clock, newKey: pooledKey }).catch((e: unknown) => e)) as NodeJS.ErrnoException
    t.equal(err.code, 'ENOSPC', 'the code stays')
    t.match(err.message, new RegExp(`cannot write ${dir}/\\.lock\\.[0-9a-f]{24}\\.tmp: ENOSPC`), 'the message names the path')
  }
  t.same((await readdir(dir)).sort(), before, 'three failed runs left nothing: no .lock.<hex>.tmp, no lock')
})

t.test('ENOSPC writing a key file or the manifest: nothing is left, the message names the file, and the next run works', async (t) => {
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  await initKeys({ dir, timing, clock, newKey: pooledKey })
  const before = (await readdir(dir)).sort()
  for (const [what, full] of [
    ['key file', (path: string) => /\.[A-Za-z0-9_-]{43}\.pem\.[0-9a-f]{12}\.tmp$/.test(path)],
    ['manifest', (path: string) => /\.manifest\.json\.[0-9a-f]{12}\.tmp$/.test(path)],
  ] as const) {
    const admin = await onFullDisk(t, full)
    const err = (await admin.rotateKeys({ dir, timing, clock, newKey: pooledKey }).catch((e: unknown) => e)) as NodeJS.ErrnoException
    t.equal(err.code, 'ENOSPC', what)
    t.match(err.message, what === 'manifest' ? `cannot write ${dir}/manifest.json: ENOSPC` : new RegExp(`cannot write ${dir}/[A-Za-z0-9_-]{43}\\.pem: ENOSPC`), `${what}: the message names it`)
    t.same((await readdir(dir)).sort(), before, `${what}: nothing left behind`)
  }
  const ok = await rotateKeys({ dir, timing, clock, newKey: pooledKey })
  t.same(ok.leftovers, [], 'the next run finds nothing to clean')
})
