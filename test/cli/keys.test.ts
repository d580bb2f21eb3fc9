import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { runKeysCli } from '../../src/cli/keys.js'
import { ManualClock } from '../../src/clock.js'
import type * as adminModule from '../../src/keys/admin.js'
import { withLock } from '../../src/keys/lock.js'
import { readManifest, type FileKey } from '../../src/keys/manifest.js'
import { pooledKey } from '../helpers/material.js'
import { track, tsNodeArgs } from '../helpers/processes.js'

function cli(t: Test, extraEnv: Record<string, string> = {}) {
  const dir = t.testdir({})
  const clock = new ManualClock(Date.UTC(2026, 0, 1))
  const env = { AUTHZ_KEYS_DIR: dir, ...extraEnv }
  const run = async (...argv: string[]) => {
    const out: string[] = []
    const err: string[] = []
    // Keys from the run's pool (made once, test/helpers/material.ts): RSA generation is the slow part of a rotate.
    const code = await runKeysCli(argv, env, { out: (l) => out.push(l), err: (l) => err.push(l) }, clock, pooledKey)
    return { code, out: out.join('\n'), err: err.join('\n') }
  }
  return { dir, clock, run, env }
}

t.test('init: one key, active at once; a second init is refused', async (t) => {
  const { dir, run } = cli(t)
  const init = await run('init')
  t.equal(init.code, 0)
  t.match(init.out, /created key [A-Za-z0-9_-]{43}, active now/)
  const again = await run('init')
  t.equal(again.code, 1)
  t.match(again.err, /already has 1 key/)
  const files = (await readdir(dir)).filter((f) => f.endsWith('.pem'))
  t.equal(files.length, 1)
  t.equal((await stat(join(dir, files[0] as string))).mode & 0o777, 0o600)
})

t.test('rotate: default delay is 2 × JWKS max-age; shorter needs --force and warns', async (t) => {
  const { clock, run } = cli(t, { AUTHZ_JWKS_MAX_AGE: '300' })
  await run('init')
  const refused = await run('rotate', '--activate-in', '1m')
  t.equal(refused.code, 1)
  t.match(refused.err, /shorter than the safe 600s/)
  t.equal((await run('list', '--json')).out.includes('"next"'), false, 'nothing was created')

  const rotated = await run('rotate')
  t.equal(rotated.code, 0)
  t.match(rotated.out, /signs from 2026-01-01T00:10:00\.000Z \(in 10m\)/)

  const forced = await run('rotate', '--activate-in', '90s', '--force')
  t.equal(forced.code, 0)
  t.match(forced.err, /warning: --force/)

  const list = JSON.parse((await run('list', '--json')).out) as { keys: { state: string; activatesAt: string }[] }
  t.same(list.keys.map((k) => k.state), ['active', 'next', 'next'])
  t.same(list.keys.map((k) => k.activatesAt), ['2026-01-01T00:00:00.000Z', '2026-01-01T00:01:30.000Z', '2026-01-01T00:10:00.000Z'])
  clock.advance(10 * 60_000)
  const table = (await run('list')).out
  t.match(table, /^KID\s+STATE\s+CREATED\s+ACTIVATES\s+RETIRES\s+PRUNABLE AT/)
  t.match(table, /retired/)
  t.match(table, /active/)
})

t.test('prune removes only expired keys, manifest first, then files', async (t) => {
  const { dir, clock, run } = cli(t)
  await run('init')
  await run('rotate', '--activate-in', '0s', '--force')
  clock.advance(1000)
  t.match((await run('prune')).out, /nothing to prune/, 'retired but still published')
  clock.advance((600 + 600 + 300) * 1000)
  // Expired now, by this clock: without --against it is kept one more day (room for a clock that is ahead).
  const held = await run('prune')
  t.match(held.out, /^judged by this machine's clock/m)
  t.match(held.out, /^nothing to prune$/m)
  t.match(held.out, /^kept [A-Za-z0-9_-]{43}: expired less than 1d ago by this machine's clock/m)
  t.equal((await readManifest(dir)).keys.length, 2)
  clock.advance(24 * 3_600_000)
  const pruned = await run('prune')
  t.match(pruned.out, /^pruned [A-Za-z0-9_-]{43}$/m)
  const manifest = await readManifest(dir)
  t.equal(manifest.keys.length, 1)
  t.same((await readdir(dir)).filter((f) => f.endsWith('.pem')), [(manifest.keys[0] as FileKey | undefined)?.file])
})

t.test('revoke: the active key is replaced by the next one at once, or by a new one', async (t) => {
  const { dir, run } = cli(t)
  await run('init')
  await run('rotate')
  const before = await readManifest(dir)
  const [active, next] = before.keys
  const res = await run('revoke', active?.kid as string)
  t.equal(res.code, 0)
  t.match(res.out, new RegExp(`${next?.kid} \\(was next\\) signs from now on`))
  t.match(res.out, /now fail/)
  const after = JSON.parse((await run('list', '--json')).out) as { keys: { kid: string; state: string }[]; revoked: { kid: string }[] }
  t.same(after.keys.map((k) => [k.kid, k.state]), [[next?.kid, 'active']])
  t.same(after.revoked.map((r) => r.kid), [active?.kid])
  t.notOk((await readdir(dir)).includes(`${active?.kid}.pem`), 'the private key file is gone')

  const alone = await run('revoke', next?.kid as string)
  t.equal(alone.err, '', 'no error')
  t.match(alone.out, /\(new\) signs from now on/)
  t.equal((await readManifest(dir)).keys.length, 1)
  t.equal((await run('revoke', 'A'.repeat(43))).code, 1, 'unknown kid')
  // Regression: a base64url kid may start with '-' and must not be read as an option.
  const dashed = await run('revoke', `-${'A'.repeat(42)}`)
  t.equal(dashed.code, 1, 'a kid starting with "-" is a kid (unknown here), not a usage error')
  t.match(dashed.err, /no key -A/)
})

t.test('usage errors exit 2; help exits 0', async (t) => {
  const { run } = cli(t)
  t.equal((await run()).code, 2)
  t.equal((await run('help')).code, 0)
  t.equal((await run('spin')).code, 2)
  t.equal((await run('rotate', '--activate-in', '10 minutes')).code, 2)
  t.equal((await run('rotate', '--bogus')).code, 2)
  t.equal((await run('revoke')).code, 2)
  const badEnv = await runKeysCli(['list'], { AUTHZ_TOKEN_TTL: '5' }, { out: () => undefined, err: () => undefined })
  t.equal(badEnv, 1, 'bad configuration is a failure')
})

t.test('two concurrent CLI runs never interleave: both rotations land', async (t) => {
  const { dir, run } = cli(t)
  await run('init')
  const results = await Promise.all([run('rotate'), run('rotate'), run('rotate')])
  t.same(results.map((r) => r.code), [0, 0, 0])
  const manifest = await readManifest(dir)
  t.equal(manifest.keys.length, 4, 'no lost update')
  for (const k of manifest.keys as FileKey[]) t.ok((await stat(join(dir, k.file))).isFile(), `${k.kid} file exists`)
})

t.test('the lock: held by a live process it times out; left by a dead one it is taken over', async (t) => {
  const { hostname } = await import('node:os')
  const { utimes } = await import('node:fs/promises')
  const dir = t.testdir({})
  const lock = (pid: number, host = hostname()) => JSON.stringify({ pid, host, token: 'x' })
  await writeFile(join(dir, '.lock'), lock(process.pid))
  await t.rejects(withLock(dir, async () => 1, 200), { code: 'ERR_KEYSET_LOCKED' })
  await writeFile(join(dir, '.lock'), lock(999999999))
  t.equal(await withLock(dir, async () => 2, 200), 2, 'a dead pid on this host')
  await t.rejects(readFile(join(dir, '.lock')), { code: 'ENOENT' }, 'released')

  // Another host's (container's) pid means nothing here: wait, unless the lock is very old.
  await writeFile(join(dir, '.lock'), lock(999999999, 'another-pod'))
  await t.rejects(withLock(dir, async () => 3, 200), { code: 'ERR_KEYSET_LOCKED' }, 'another host: not taken over')
  const old = new Date(Date.now() - 10 * 60_000)
  await utimes(join(dir, '.lock'), old, old)
  t.equal(await withLock(dir, async () => 4, 200), 4, 'an abandoned lock is taken over')

  // A holder whose lock was taken over does not delete the new holder's lock.
  const inner = withLock(dir, async () => {
    await writeFile(join(dir, '.lock'), lock(process.pid, 'someone-else'))
    return 5
  })
  t.equal(await inner, 5)
  t.equal(await readFile(join(dir, '.lock'), 'utf8'), lock(process.pid, 'someone-else'), 'their lock stays')
})

t.test('a write failing mid-rotation leaves the manifest and keys as they were', async (t) => {
  const { dir, run, clock } = cli(t)
  await run('init')
  const before = await readFile(join(dir, 'manifest.json'), 'utf8')
  const filesBefore = (await readdir(dir)).sort()
  const real = await import('../../src/keys/manifest.js')
  // The key file is written, then the manifest write fails half-way (disk full, EIO...).
  const admin = await t.mockImport<typeof adminModule>('../../src/keys/admin.js', {
    '../../src/keys/manifest.js': {
      ...real,
      writeManifest: async () => {
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
      },
    },
  })
  await t.rejects(admin.rotateKeys({ dir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock }), { code: 'ENOSPC' })
  t.equal(await readFile(join(dir, 'manifest.json'), 'utf8'), before, 'manifest untouched')
  t.same((await readdir(dir)).sort(), filesBefore, 'no orphan key file, no temp file, lock released')
})

t.test('revoke never publishes a key again: an expired key stays unpublished (regression)', async (t) => {
  const { dir, clock, run } = cli(t)
  const timing = { tokenTtl: 600, jwksMaxAge: 600 }
  const { KeyStore } = await import('../../src/keys/store.js')
  const published = async () => (await KeyStore.open({ dir, timing, clock })).jwks().kids
  await run('init')
  const [old] = (await readManifest(dir)).keys
  clock.advance(1000)
  await run('rotate', '--activate-in', '0s', '--force') // the first key retires now…
  clock.advance((600 + 600 + 300) * 1000 + 1000) // …and expires: unpublished, not pruned
  await run('rotate', '--activate-in', '20m')
  const before = await published()
  t.notOk(before.includes(old?.kid as string), 'the expired key is not published')
  const active = JSON.parse((await run('list', '--json')).out).keys.find((k: { state: string }) => k.state === 'active').kid as string
  t.equal((await run('revoke', active)).code, 0)
  const after = await published()
  t.notOk(after.includes(old?.kid as string), 'still unpublished after the active key was revoked (before the fix: published again)')
  t.ok(after.every((kid) => before.includes(kid)), 'no key is published that was not before')
  const list = JSON.parse((await run('list', '--json')).out) as { keys: { kid: string; state: string; retiredAt: string }[] }
  t.match(list.keys.find((k) => k.kid === old?.kid), { state: 'expired', retiredAt: '2026-01-01T00:00:01.000Z' }, 'its retirement is the one that happened')
})

t.test('a lock left by a killed keys command is taken over; `keys list` shows a held lock', async (t) => {
  const { spawn } = await import('node:child_process')
  const { dir, run } = cli(t)
  await run('init')
  // A real process takes the lock and is killed with SIGKILL while holding it.
  const lockModule = new URL('../../src/keys/lock.ts', import.meta.url).pathname
  const script = `import { withLock } from '${lockModule}'\nsetInterval(() => undefined, 1000)\nawait withLock(process.argv[1], () => { process.stdout.write('locked\\n'); return new Promise(() => undefined) }, 10000, 'rotate')\n`
  // It holds the lock forever: tracked, and guarded, so a test that fails or times out does not leave it.
  const child = track(spawn(process.execPath, [...tsNodeArgs(), '--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'], env: process.env }))
  await new Promise<void>((resolve) => child.stdout.on('data', (c: Buffer) => c.toString().includes('locked') && resolve()))
  const held = await run('list')
  t.match(held.out, /^lock: .*\.lock is held by keys rotate, pid \d+ on .*, since \d{4}-/m, 'list shows the held lock')
  t.match(JSON.parse((await run('list', '--json')).out).lock, { command: 'rotate', pid: child.pid, stale: null })
  const killed = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await killed
  const started = Date.now()
  const rotated = await run('rotate')
  t.equal(rotated.code, 0, 'the next command runs: the owner is provably gone')
  t.ok(Date.now() - started < 9000, 'at once, not after the 10 s lock timeout (which would have failed it)')
  t.equal((await run('list', '--json')).out.includes('"lock": null'), true, 'and released the lock')
})

t.test('a lock that cannot be proven stale names its holder and the exact command that clears it', async (t) => {
  const { execSync } = await import('node:child_process')
  const dir = t.testdir({ '.lock': '' }) // what a CLI killed between open() and write() used to leave
  const err = (await withLock(dir, async () => 1, 200).catch((e: unknown) => e)) as { code: string; message: string }
  t.equal(err.code, 'ERR_KEYSET_LOCKED')
  const command = /clear the lock with: (rm '.*')$/.exec(err.message)?.[1]
  t.ok(command, `the message gives a command: ${err.message}`)
  execSync(command as string, { shell: '/bin/sh' })
  t.equal(await withLock(dir, async () => 2, 200), 2, 'the command, run as written, clears it')
})

t.test('leftovers of an interrupted run are removed by the next one and never published', async (t) => {
  const { dir, clock, run } = cli(t)
  await run('init')
  const { generateRsaKey, kidOf, toPkcs8Pem } = await import('../../src/keys/material.js')
  const orphan = await generateRsaKey()
  const orphanKid = await kidOf(orphan)
  await writeFile(join(dir, `${orphanKid}.pem`), toPkcs8Pem(orphan), { mode: 0o600 })
  await writeFile(join(dir, '.manifest.json.0123456789ab.tmp'), '{"version":1,"keys":[]}')
  // A lock staging file of a command killed between writing it and linking it (pid long gone).
  const { hostname } = await import('node:os')
  const staging = '.lock.0123456789abcdef01234567.tmp'
  await writeFile(join(dir, staging), JSON.stringify({ pid: 999999999, host: hostname(), token: '0123456789abcdef01234567', since: '', command: 'rotate' }))
  const { KeyStore } = await import('../../src/keys/store.js')
  const store = await KeyStore.open({ dir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock })
  t.notOk(store.jwks().kids.includes(orphanKid), 'a key file no manifest names is never published')
  const rotated = await run('rotate')
  t.equal(rotated.code, 0)
  const removed = /^removed what an interrupted run left: (.*)$/.exec(rotated.err)?.[1]?.split(', ')
  t.same(removed?.sort(), [staging, '.manifest.json.0123456789ab.tmp', `${orphanKid}.pem`].sort(), 'each leftover named')
  const names = await readdir(dir)
  t.notOk(names.includes(`${orphanKid}.pem`), 'the orphan key file is gone')
  t.notOk(names.some((n) => n.endsWith('.tmp')), 'no temp file is left')
})

t.test('export --public: the JWKS a server would publish, or SPKI PEM; never a private part', async (t) => {
  const { dir, clock, run } = cli(t)
  await run('init')
  await run('rotate')
  const jwks = JSON.parse((await run('export', '--public')).out) as { keys: Record<string, unknown>[] }
  const { KeyStore } = await import('../../src/keys/store.js')
  const store = await KeyStore.open({ dir, timing: { tokenTtl: 600, jwksMaxAge: 600 }, clock })
  t.same(jwks, JSON.parse(store.jwks().body.toString()), 'the same JWKS the server serves')
  for (const k of jwks.keys) t.same(Object.keys(k).sort(), ['alg', 'e', 'kid', 'kty', 'n', 'use'], 'public members only')
  const pem = (await run('export', '--public', '--format', 'pem')).out
  t.equal(pem.match(/-----BEGIN PUBLIC KEY-----/g)?.length, 2)
  t.notMatch(pem, /PRIVATE/)
  t.equal((await run('export')).code, 2, 'without --public: a usage error')
})

t.test('check --against: a stale copy that would unpublish the signing key is NOT SAFE', async (t) => {
  const { createServer } = await import('node:http')
  const { cp, rm } = await import('node:fs/promises')
  const { dir, run, env } = cli(t)
  await run('init')
  const stale = `${dir}-stale-copy`
  await cp(dir, stale, { recursive: true })
  t.teardown(() => rm(stale, { recursive: true, force: true }))
  // The live directory rotates and its new key signs; the copy never saw that.
  await run('rotate', '--activate-in', '0s', '--force')
  const liveJwks = (await run('export', '--public')).out
  const server = createServer((_req, res) => res.end(liveJwks))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/.well-known/jwks.json`
  const ok = await run('check', '--against', url)
  t.equal(ok.code, 0, 'the live directory itself is safe')
  t.match(ok.out, /^safe/m)
  const out: string[] = []
  const code = await runKeysCli(['check', '--against', url, '--json'], { ...env, AUTHZ_KEYS_DIR: stale }, { out: (l) => out.push(l), err: () => undefined })
  t.equal(code, 1, 'the stale copy is refused')
  t.match(JSON.parse(out.join('\n')), { safe: false, removed: [{ why: 'unknown' }] })
})

t.test('the lock file is never seen empty or half-written (regression: open, then write)', async (t) => {
  const dir = t.testdir({})
  const seen: string[] = []
  let running = true
  const reader = (async () => {
    while (running) {
      const text = await readFile(join(dir, '.lock'), 'utf8').catch(() => null)
      if (text !== null) seen.push(text)
      await new Promise((r) => setImmediate(r))
    }
  })()
  await Promise.all(Array.from({ length: 30 }, (_, i) => withLock(dir, async () => i, 10_000)))
  running = false
  await reader
  t.ok(seen.length > 0, `the reader saw the lock ${seen.length} times`)
  t.same(seen.filter((text) => { try { return typeof JSON.parse(text).pid !== 'number' } catch { return true } }), [], 'always whole, with its owner')
})

t.test('the safe activation delay never drops below the verifiers’ 30 s refresh floor (2 × 30 s)', async (t) => {
  const { clock, run } = cli(t, { AUTHZ_JWKS_MAX_AGE: '5' })
  await run('init')
  const refused = await run('rotate', '--activate-in', '20s')
  t.equal(refused.code, 1, 'twice a 5 s max-age is not enough: verifiers refresh every 30 s at most')
  t.match(refused.err, /shorter than the safe 60s/)
  const rotated = await run('rotate')
  t.match(rotated.out, new RegExp(`signs from ${new Date(clock.now() + 60_000).toISOString().replace(/\./g, '\\.')} \\(in 1m\\)`))
  const now = await run('rotate', '--activate-in', '0s', '--force')
  t.match(now.out, /\(in 0s\)/, 'never "-0s"')
})

t.test('a plain rotate after a move to ES256 stays on ES256 (regression: it went back to RS256)', async (t) => {
  const { run } = cli(t)
  await run('init', '--alg', 'ES256')
  const rotated = await run('rotate')
  t.match(rotated.out, /created key \S+ \(ES256\): published now/)
  const list = JSON.parse((await run('list', '--json')).out) as { keys: { alg: string; store: string }[] }
  t.same(list.keys.map((k) => [k.alg, k.store]), [['ES256', 'file'], ['ES256', 'file']], 'like the newest key')
  const back = await run('rotate', '--alg', 'RS256')
  t.equal(back.code, 0, 'an explicit --alg still chooses')
  t.same(JSON.parse((await run('list', '--json')).out).keys.map((k: { alg: string }) => k.alg).sort(), ['ES256', 'ES256', 'RS256'])
})

t.test('a duration beyond ten years is a usage error, never a manifest nothing can read (regression)', async (t) => {
  const { run } = cli(t)
  await run('init')
  const far = await run('rotate', '--activate-in', '2920000d')
  t.equal(far.code, 2, 'usage error')
  t.match(far.err, /longer than 3650d/)
  t.equal((await run('list')).code, 0, 'the manifest is still readable')
  t.equal((await run('rotate', '--activate-in', '3650d')).code, 0, 'ten years is fine')
})
