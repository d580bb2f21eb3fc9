/**
 * What the keys CLI does to the keys directory. Every change runs under a lock file, writes a new key file
 * (fsync'd) before the manifest that names it, and replaces the manifest atomically, so the manifest
 * never names a missing file and a reader never sees a half-written one.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, stat, unlink } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { Clock } from '../clock.js'
import { AuthzError } from '../errors.js'
import { writeFileAtomic } from '../util/atomic-write.js'
import { keyStates, safeActivationDelayMs, type KeyStatus, type Timing } from './lifecycle.js'
import { MANIFEST_FILE, parseManifest, serializeManifest, type Manifest, type ManifestKey } from './manifest.js'
import { generateRsaKey, kidOf, toPkcs8Pem } from './material.js'

export interface KeysAdminOptions {
  readonly dir: string
  readonly timing: Timing
  readonly clock: Clock
  readonly passphrase?: string | undefined
  /** RSA modulus length of new keys (default 2048). */
  readonly bits?: number
  /** How long to wait for another CLI run's lock, ms (default 10 s). */
  readonly lockTimeoutMs?: number
}

const LOCK_FILE = '.lock'
const EMPTY: Manifest = Object.freeze({ version: 1, keys: Object.freeze([]), revoked: Object.freeze([]) })

/** A lock older than this is taken over whoever holds it: a CLI run takes well under a second. */
const LOCK_MAX_AGE_MS = 120_000

interface LockOwner {
  readonly pid: number
  readonly host: string
  readonly token: string
}

/**
 * Runs `fn` holding the directory's lock file. A lock left by a dead process on this host is taken over at
 * once; a lock from another host or container (another pid namespace, where the pid means nothing here)
 * only when it is older than LOCK_MAX_AGE_MS. Only the holder removes its own lock.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const path = join(dir, LOCK_FILE)
  const owner: LockOwner = { pid: process.pid, host: hostname(), token: randomBytes(12).toString('hex') }
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const handle = await open(path, 'wx', 0o600)
      await handle.writeFile(JSON.stringify(owner))
      await handle.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      if (await lockIsStale(path)) {
        await unlink(path).catch(() => undefined)
        continue
      }
      if (Date.now() > deadline) throw new AuthzError('ERR_KEYSET_LOCKED', `${path} is held by another process`)
      await new Promise((r) => setTimeout(r, 25 + Math.random() * 50))
    }
  }
  try {
    return await fn()
  } finally {
    // Never remove a lock that is no longer ours (taken over after LOCK_MAX_AGE_MS).
    const current = await readFile(path, 'utf8').catch(() => '')
    if (current === JSON.stringify(owner)) await unlink(path).catch(() => undefined)
  }
}

async function lockIsStale(path: string): Promise<boolean> {
  let text: string
  let age: number
  try {
    text = await readFile(path, 'utf8')
    age = Date.now() - (await stat(path)).mtimeMs
  } catch {
    return false // gone already, or unreadable: try again
  }
  if (age > LOCK_MAX_AGE_MS) return true
  let owner: Partial<LockOwner>
  try {
    owner = JSON.parse(text) as Partial<LockOwner>
  } catch {
    return false // being written right now
  }
  if (owner.host !== hostname() || typeof owner.pid !== 'number') return false
  try {
    process.kill(owner.pid, 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

export async function readManifest(dir: string): Promise<Manifest> {
  let text: string
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY
    throw new AuthzError('ERR_KEYSET_READ', `cannot read ${MANIFEST_FILE}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  return parseManifest(text)
}

async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(join(dir, MANIFEST_FILE), serializeManifest(manifest), 0o644)
}

/** Writes the manifest; if that fails, removes the new key's file so no orphan is left, and rethrows. */
async function writeManifestOrForget(dir: string, manifest: Manifest, created: ManifestKey): Promise<void> {
  try {
    await writeManifest(dir, manifest)
  } catch (err) {
    await unlink(join(dir, created.file)).catch(() => undefined)
    throw err
  }
}

/** Creates a key file (never overwriting one) and returns its manifest entry. */
async function createKey(options: KeysAdminOptions, activatesAt: number): Promise<ManifestKey> {
  const createdAt = Math.min(options.clock.now(), activatesAt)
  const key = await generateRsaKey(options.bits)
  const kid = await kidOf(key)
  const file = `${kid}.pem`
  await writeFileAtomic(join(options.dir, file), toPkcs8Pem(key, options.passphrase), 0o600)
  return Object.freeze({ kid, alg: 'RS256', file, createdAt, activatesAt })
}

export function statusesOf(manifest: Manifest, options: KeysAdminOptions): KeyStatus<ManifestKey>[] {
  return keyStates(manifest.keys, options.clock.now(), options.timing)
}

async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
}

/** `init`: the first key, active at once. Refuses when the directory already has keys. */
export async function initKeys(options: KeysAdminOptions): Promise<ManifestKey> {
  await ensureDir(options.dir)
  return withLock(
    options.dir,
    async () => {
      const manifest = await readManifest(options.dir)
      if (manifest.keys.length > 0) {
        throw new AuthzError('ERR_ROTATION_REFUSED', `${options.dir} already has ${manifest.keys.length} key(s): use rotate`)
      }
      const key = await createKey(options, options.clock.now())
      await writeManifestOrForget(options.dir, { ...manifest, keys: [key] }, key)
      return key
    },
    options.lockTimeoutMs,
  )
}

export interface RotateResult {
  readonly key: ManifestKey
  /** Set when the delay is shorter than the safe default: what verifiers may reject. */
  readonly unsafe: boolean
}

/**
 * `rotate`: a new key, published now, signing from `now + activateInMs` (default: the safe delay, twice
 * the JWKS max-age). A shorter delay is refused unless `force`.
 */
export async function rotateKeys(options: KeysAdminOptions, request: { activateInMs?: number; force?: boolean } = {}): Promise<RotateResult> {
  const safe = safeActivationDelayMs(options.timing)
  const delay = request.activateInMs ?? safe
  if (delay < 0) throw new AuthzError('ERR_USAGE', 'activation delay must not be negative')
  const unsafe = delay < safe
  if (unsafe && request.force !== true) {
    throw new AuthzError(
      'ERR_ROTATION_REFUSED',
      `activation in ${delay / 1000}s is shorter than the safe ${safe / 1000}s (2 × AUTHZ_JWKS_MAX_AGE): verifiers that cached the JWKS before the new key was published would reject its tokens until their cache expires; pass --force to do it anyway`,
    )
  }
  await ensureDir(options.dir)
  return withLock(
    options.dir,
    async () => {
      const manifest = await readManifest(options.dir)
      const key = await createKey(options, options.clock.now() + delay)
      await writeManifestOrForget(options.dir, { ...manifest, keys: [...manifest.keys, key] }, key)
      return { key, unsafe }
    },
    options.lockTimeoutMs,
  )
}

/** `prune`: removes expired keys (never next, active or still-published retired ones). */
export async function pruneKeys(options: KeysAdminOptions): Promise<string[]> {
  return withLock(
    options.dir,
    async () => {
      const manifest = await readManifest(options.dir)
      const expired = statusesOf(manifest, options)
        .filter((s) => s.state === 'expired')
        .map((s) => s.key)
      if (expired.length === 0) return []
      const gone = new Set(expired.map((k) => k.kid))
      await writeManifest(options.dir, { ...manifest, keys: manifest.keys.filter((k) => !gone.has(k.kid)) })
      // The manifest no longer names them: only now may the files go.
      for (const key of expired) await unlink(join(options.dir, key.file)).catch(() => undefined)
      return [...gone]
    },
    options.lockTimeoutMs,
  )
}

export interface RevokeResult {
  readonly revoked: ManifestKey
  readonly wasActive: boolean
  /** The key that signs from now on when the revoked one was active. */
  readonly nowActive?: ManifestKey
  /** True when no next key existed and a new one was made to take over. */
  readonly created: boolean
}

/**
 * `revoke <kid>`: emergency. The key leaves the manifest (and so every JWKS) now. When it was the active
 * key, the earliest next key activates at once, or a new key is made active at once.
 */
export async function revokeKey(options: KeysAdminOptions, kid: string): Promise<RevokeResult> {
  return withLock(
    options.dir,
    async () => {
      const manifest = await readManifest(options.dir)
      const statuses = statusesOf(manifest, options)
      const target = statuses.find((s) => s.key.kid === kid)
      if (target === undefined) throw new AuthzError('ERR_KEY_NOT_FOUND', `no key ${kid} in ${options.dir}`)
      const now = options.clock.now()
      let keys = manifest.keys.filter((k) => k.kid !== kid)
      let nowActive: ManifestKey | undefined
      let created = false
      if (target.state === 'active') {
        const next = statuses.find((s) => s.state === 'next')?.key
        if (next !== undefined) {
          nowActive = Object.freeze({ ...next, activatesAt: now })
          keys = keys.map((k) => (k.kid === next.kid ? (nowActive as ManifestKey) : k))
        } else {
          nowActive = await createKey(options, now)
          keys = [...keys, nowActive]
          created = true
        }
      }
      await writeManifest(options.dir, { ...manifest, keys, revoked: [...manifest.revoked, { kid, revokedAt: now }] })
      await unlink(join(options.dir, target.key.file)).catch(() => undefined)
      return { revoked: target.key, wasActive: target.state === 'active', created, ...(nowActive === undefined ? {} : { nowActive }) }
    },
    options.lockTimeoutMs,
  )
}
