/**
 * What the keys CLI does to the keys directory. Every change runs under the directory's lock, first clears
 * what an interrupted run left behind, writes a new key file (fsync'd) before the manifest that names it,
 * records the retirements that have happened, and replaces the manifest atomically: the manifest never
 * names a missing file and a reader never sees a half-written one.
 */
import type { KeyObject } from 'node:crypto'
import { mkdir, readdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Clock } from '../clock.js'
import { AuthzError } from '../errors.js'
import { writeFileAtomic } from '../util/atomic-write.js'
import { readRegularFile } from '../util/read-file.js'
import { byActivation, keyStates, recordRetirements, safeActivationDelayMs, type KeyStatus, type Timing } from './lifecycle.js'
import { LOCK_FILE, stagingLeftOver, withLock } from './lock.js'
import { readManifest, writeManifest, type FileKey, type KeyStoreKind, type Manifest, type ManifestKey } from './manifest.js'
import { KEY_FILE_MAX_BYTES, type TokenKeys } from './keyset.js'
import { DEFAULT_ALG, fromPkcs8Pem, generateKey, kidOf, toPkcs8Pem, type Alg } from './material.js'

/** Makes a new private key for a file key. */
export type NewKey = (alg: Alg) => Promise<KeyObject>

export interface KeysAdminOptions {
  readonly dir: string
  readonly timing: Timing
  readonly clock: Clock
  readonly passphrase?: string | undefined
  /** RSA modulus length of new keys (default 2048). */
  readonly bits?: number
  /** Makes a new private key for a file key (default: a fresh one); tests hand out pre-made ones. */
  readonly newKey?: NewKey
  /** The PKCS#11 token, for keys whose store is `pkcs11`. */
  readonly token?: (TokenAdmin & TokenKeys & { readonly available: boolean }) | undefined
  /** How long to wait for another CLI run's lock, ms (default 10 s). */
  readonly lockTimeoutMs?: number
}

/** What the keys CLI does in a PKCS#11 token (keys/pkcs11/). */
export interface TokenAdmin {
  /** Generates a non-extractable key pair for `alg` inside the token; returns its kid and label. */
  generate(alg: Alg): Promise<{ readonly kid: string; readonly label: string }>
  /** Destroys the key pair with this label (revoke, prune); a key already gone is not an error. */
  destroy(label: string): Promise<void>
}

/** Where and how a new key is made (`--alg`, `--store`). */
export interface NewKeyRequest {
  readonly alg?: Alg
  readonly store?: KeyStoreKind
}

/** What every change reports besides its result: files an interrupted run left behind, now removed. */
export interface Cleaned {
  readonly leftovers: readonly string[]
}

const KEY_FILE = /^[A-Za-z0-9_-]{43}\.pem$/
/** writeFileAtomic's temp files: `.<name>.<12 hex>.tmp`. */
const ATOMIC_TEMP = /^\..+\.[0-9a-f]{12}\.tmp$/
/** withLock's staging files: `.lock.<24 hex>.tmp` (a waiting process owns one: only old ones are left over). */
const LOCK_STAGING = new RegExp(`^${LOCK_FILE.replace('.', '\\.')}\\.[0-9a-f]{24}\\.tmp$`)

/**
 * Removes what a killed run left: temp files, and key files that no manifest names (a key written just
 * before the run died, or a manifest write that failed). Such files are never published (the server only
 * loads what the manifest names); they are removed so no private key lingers. Call holding the lock.
 */
async function removeLeftovers(dir: string, manifest: Manifest): Promise<string[]> {
  const named = new Set(manifest.keys.map((k) => (k.store === 'file' ? k.file : '')))
  const removed: string[] = []
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    let leftover = ATOMIC_TEMP.test(name) || (KEY_FILE.test(name) && !named.has(name))
    if (!leftover && LOCK_STAGING.test(name)) leftover = await stagingLeftOver(join(dir, name))
    if (leftover && (await unlink(join(dir, name)).then(() => true, () => false))) removed.push(name)
  }
  return removed.sort()
}

/**
 * Runs one change: lock, clean leftovers, read the manifest, let `change` compute the next one (undefined:
 * nothing to write), record retirements, write it.
 */
async function change<T>(
  options: KeysAdminOptions,
  command: string,
  fn: (manifest: Manifest) => Promise<{
    manifest?: Manifest
    result: T
    /** Undoes what `fn` did when the manifest cannot be written (removes a new key's file). */
    onWriteFailure?: () => Promise<void>
    /** Runs once the manifest is written (removes the files of keys it no longer names). */
    afterWrite?: () => Promise<void>
  }>,
): Promise<T & Cleaned> {
  await mkdir(options.dir, { recursive: true, mode: 0o700 })
  return withLock(
    options.dir,
    async () => {
      const current = await readManifest(options.dir)
      const leftovers = await removeLeftovers(options.dir, current)
      const { manifest, result, onWriteFailure, afterWrite } = await fn(current)
      if (manifest !== undefined) {
        const settled = { ...manifest, keys: recordRetirements(manifest.keys, options.clock.now(), options.timing) }
        try {
          await writeManifest(options.dir, settled)
        } catch (err) {
          await onWriteFailure?.()
          throw err
        }
        await afterWrite?.()
      }
      return { ...result, leftovers }
    },
    options.lockTimeoutMs,
    command,
  )
}

/**
 * Refuses the passphrase (AUTHZ_KEY_PASSPHRASE, or its absence) when it does not decrypt the file keys
 * already in the directory: the server reads every key with one passphrase, so a key written with another
 * could never be loaded beside them (the next reload would fail, the next start too). Other faults of a
 * key file are not this check's business: `revoke` must work on a key whose file is lost.
 */
async function checkPassphrase(options: KeysAdminOptions, existing: readonly ManifestKey[]): Promise<void> {
  for (const key of existing) {
    if (key.store !== 'file') continue
    let pem: string
    try {
      pem = (await readRegularFile(join(options.dir, key.file), { maxBytes: KEY_FILE_MAX_BYTES })).toString('utf8')
    } catch {
      continue
    }
    try {
      fromPkcs8Pem(pem, options.passphrase, `key ${key.kid}`, key.alg)
    } catch (err) {
      if (!(err instanceof AuthzError) || (err.reason !== 'passphrase_wrong' && err.reason !== 'passphrase_missing')) continue
      const why = err.reason === 'passphrase_missing' ? 'is not set, and key' : 'does not decrypt key'
      throw new AuthzError(
        'ERR_KEYSET_INVALID',
        `AUTHZ_KEY_PASSPHRASE ${why} ${key.kid} (${key.file})${err.reason === 'passphrase_missing' ? ' is encrypted' : ''}: a key written now could not be loaded beside it; nothing was changed (use the passphrase the server has)`,
        { reason: err.reason, kid: key.kid },
      )
    }
  }
}

/**
 * Creates a key where `request.store` says (a PKCS#8 file by default) and returns its manifest entry. A file
 * key is written only with a passphrase that decrypts the file keys in `existing`.
 */
async function createKey(options: KeysAdminOptions, activatesAt: number, request: NewKeyRequest, existing: readonly ManifestKey[]): Promise<ManifestKey> {
  const createdAt = Math.min(options.clock.now(), activatesAt)
  const alg = request.alg ?? DEFAULT_ALG
  if (request.store === 'pkcs11') {
    if (options.token === undefined) throw new AuthzError('ERR_USAGE', '--store pkcs11 needs AUTHZ_PKCS11_MODULE, AUTHZ_PKCS11_TOKEN and a PIN')
    const { kid, label } = await options.token.generate(alg)
    return Object.freeze({ kid, alg, store: 'pkcs11', label, createdAt, activatesAt })
  }
  await checkPassphrase(options, existing)
  const key = await (options.newKey ?? ((a: Alg) => generateKey(a, options.bits)))(alg)
  const kid = await kidOf(key)
  const file = `${kid}.pem`
  await writeFileAtomic(join(options.dir, file), toPkcs8Pem(key, options.passphrase), 0o600)
  return Object.freeze({ kid, alg, store: 'file', file, createdAt, activatesAt })
}

/** Removes keys for good: their files, or their objects in the token (after the manifest stopped naming them, or when it could not be written). */
const removeKeys = (options: KeysAdminOptions, keys: readonly ManifestKey[]) => async (): Promise<void> => {
  for (const key of keys) {
    if (key.store === 'file') await unlink(join(options.dir, key.file)).catch(() => undefined)
    else await options.token?.destroy(key.label)
  }
}

export function statusesOf(manifest: Manifest, options: Pick<KeysAdminOptions, 'clock' | 'timing'>): KeyStatus<ManifestKey>[] {
  return keyStates(manifest.keys, options.clock.now(), options.timing)
}

/** `init`: the first key, active at once. Refuses when the directory already has keys. */
export async function initKeys(options: KeysAdminOptions, request?: NewKeyRequest & { readonly store?: 'file' }): Promise<FileKey & Cleaned>
export async function initKeys(options: KeysAdminOptions, request: NewKeyRequest): Promise<ManifestKey & Cleaned>
export async function initKeys(options: KeysAdminOptions, request: NewKeyRequest = {}): Promise<ManifestKey & Cleaned> {
  return change(options, 'init', async (manifest) => {
    if (manifest.keys.length > 0) {
      throw new AuthzError('ERR_ROTATION_REFUSED', `${options.dir} already has ${manifest.keys.length} key(s): use rotate`)
    }
    const key = await createKey(options, options.clock.now(), request, manifest.keys)
    return { manifest: { ...manifest, keys: [key] }, result: key, onWriteFailure: removeKeys(options, [key]) }
  })
}

export interface RotateResult<K extends ManifestKey = ManifestKey> {
  readonly key: K
  /** Set when the delay is shorter than the safe default: what verifiers may reject. */
  readonly unsafe: boolean
}

/**
 * `rotate`: a new key, published now, signing from `now + activateInMs` (default: the safe delay, twice
 * the JWKS max-age). A shorter delay is refused unless `force`.
 */
export interface RotateRequest extends NewKeyRequest {
  readonly activateInMs?: number
  readonly force?: boolean
}

export async function rotateKeys(options: KeysAdminOptions, request?: RotateRequest & { readonly store?: 'file' }): Promise<RotateResult<FileKey> & Cleaned>
export async function rotateKeys(options: KeysAdminOptions, request: RotateRequest): Promise<RotateResult & Cleaned>
export async function rotateKeys(options: KeysAdminOptions, request: RotateRequest = {}): Promise<RotateResult & Cleaned> {
  const safe = safeActivationDelayMs(options.timing)
  const delay = request.activateInMs ?? safe
  if (delay < 0) throw new AuthzError('ERR_USAGE', 'activation delay must not be negative')
  const unsafe = delay < safe
  if (unsafe && request.force !== true) {
    throw new AuthzError(
      'ERR_ROTATION_REFUSED',
      `activation in ${delay / 1000}s is shorter than the safe ${safe / 1000}s (2 × AUTHZ_JWKS_MAX_AGE, at least 2 × the verifiers' 30 s refresh floor): verifiers that cached the JWKS before the new key was published would reject its tokens until their cache expires; pass --force to do it anyway`,
    )
  }
  return change(options, 'rotate', async (manifest) => {
    // Without --alg or --store, the new key is made like the newest one: a scheduled rotation after a
    // move to ES256 or to a hardware module stays there.
    const newest = [...manifest.keys].sort(byActivation).at(-1)
    const like = { alg: request.alg ?? newest?.alg, store: request.store ?? newest?.store }
    // A key activating at the very instant another one does would be ordered after it only by kid (a coin
    // toss): the newer key takes the next free millisecond, so a rotation always supersedes what it rotates
    // — and only that: a key scheduled later (a pending rotation) still comes after it.
    const taken = new Set(manifest.keys.map((k) => k.activatesAt))
    let activatesAt = options.clock.now() + delay
    while (taken.has(activatesAt)) activatesAt++
    const key = await createKey(
      options,
      activatesAt,
      {
        ...(like.alg === undefined ? {} : { alg: like.alg }),
        ...(like.store === undefined ? {} : { store: like.store }),
      },
      manifest.keys,
    )
    return { manifest: { ...manifest, keys: [...manifest.keys, key] }, result: { key, unsafe }, onWriteFailure: removeKeys(options, [key]) }
  })
}

/** `prune`: removes expired keys (never next, active or still-published retired ones). */
/** What prune must leave alone beyond the lifecycle's own rule. */
export interface PruneGuard {
  /** Keep a key until it has been expired this long (ms): room for a clock that is ahead. */
  readonly holdMs?: number
  /** Kids the live servers still publish: never removed, whatever this clock says. */
  readonly published?: ReadonlySet<string>
  /** Called with the manifest before anything changes (e.g. to refuse a clock behind its timeline). */
  readonly check?: (manifest: Manifest) => void
}

export async function pruneKeys(options: KeysAdminOptions, guard: PruneGuard = {}): Promise<{ readonly pruned: string[]; readonly held: string[] } & Cleaned> {
  return change(options, 'prune', async (manifest) => {
    guard.check?.(manifest)
    const now = options.clock.now()
    const candidates = statusesOf(manifest, options).filter((s) => s.state === 'expired')
    const removable = (s: (typeof candidates)[number]) => (s.prunableAt ?? Infinity) + (guard.holdMs ?? 0) <= now && guard.published?.has(s.key.kid) !== true
    const expired = candidates.filter(removable).map((s) => s.key)
    const held = candidates.filter((s) => !removable(s)).map((s) => s.key.kid)
    if (expired.length === 0) return { result: { pruned: [], held } }
    const gone = new Set(expired.map((k) => k.kid))
    // The manifest no longer names them: only then may the files go (or the next run removes them,
    // should this one die in between).
    return {
      manifest: { ...manifest, keys: manifest.keys.filter((k) => !gone.has(k.kid)) },
      result: { pruned: [...gone], held },
      afterWrite: removeKeys(options, expired),
    }
  })
}

export interface RevokeResult {
  readonly revoked: ManifestKey
  /** Whether it was the active key, by the clock the command judged by. */
  readonly wasActive: boolean
  /** The key that took the revoked key's place in the timeline (its activation instant), if any. */
  readonly heir?: ManifestKey
  /** The key that signs from now on when the revoked one was active (the heir). */
  readonly nowActive?: ManifestKey
  /** True when no later key existed and a new one was made to take the revoked key's place. */
  readonly created: boolean
}

/**
 * `revoke <kid>`: emergency. The key leaves the manifest (and so every JWKS) now, and the key after it in
 * activation order takes its place in the timeline: its activation instant becomes the revoked key's (a
 * new key made like the revoked one does, when none comes after it). Every instant at which some key was
 * active therefore still has one, whatever clock judges it: for every server that was signing with the
 * revoked key, that instant has passed, so its heir signs there at once, even when this command's clock
 * is ahead of the servers' (activating the heir at this clock's "now" instead, an hour ahead, left the
 * servers without a signing key for an hour). No other key is published again: retirements that happened
 * are recorded before the key is removed.
 */
export async function revokeKey(options: KeysAdminOptions, kid: string, check?: (manifest: Manifest) => void): Promise<RevokeResult & Cleaned> {
  return change(options, 'revoke', async (manifest) => {
    check?.(manifest)
    const now = options.clock.now()
    // Write down every retirement that has happened while the revoked key still orders them.
    const settled = recordRetirements(manifest.keys, now, options.timing)
    const statuses = keyStates(settled, now, options.timing)
    const index = statuses.findIndex((s) => s.key.kid === kid)
    const target = statuses[index]
    if (target === undefined) throw new AuthzError('ERR_KEY_NOT_FOUND', `no key ${kid} in ${options.dir}`)
    let keys = settled.filter((k) => k.kid !== kid)
    const takesOverAt = target.key.activatesAt
    const successor = statuses[index + 1]?.key
    let heir: ManifestKey | undefined
    let created = false
    if (successor === undefined) {
      // The replacement is made like the key it replaces: same algorithm, same store.
      heir = await createKey(options, takesOverAt, { alg: target.key.alg, store: target.key.store }, keys)
      keys = [...keys, heir]
      created = true
    } else if (successor.activatesAt > takesOverAt) {
      heir = Object.freeze({ ...successor, activatesAt: takesOverAt, createdAt: Math.min(successor.createdAt, takesOverAt) })
      keys = keys.map((k) => (k.kid === successor.kid ? (heir as ManifestKey) : k))
    }
    const wasActive = target.state === 'active'
    return {
      manifest: { ...manifest, keys, revoked: [...manifest.revoked, { kid, revokedAt: now }] },
      result: { revoked: target.key, wasActive, created, ...(heir === undefined ? {} : { heir }), ...(wasActive && heir !== undefined ? { nowActive: heir } : {}) },
      afterWrite: removeKeys(options, [target.key]),
      ...(created && heir !== undefined ? { onWriteFailure: removeKeys(options, [heir]) } : {}),
    }
  })
}
