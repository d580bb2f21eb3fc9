/**
 * The keys directory's lock: one keys command at a time. The lock file is created atomically with its
 * owner's identity in it (written to a temp file, then hard-linked into place), so it is never seen empty
 * or half-written. A lock whose owner is provably gone (a dead process on this host) is taken over at
 * once; a lock from another host or container is taken over only when it is older than any keys command
 * can run; anything else that blocks an operator says who holds it and the exact command that clears it.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { link, readFile, stat, unlink, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { AuthzError } from '../errors.js'
import { namingPath } from '../util/atomic-write.js'

export const LOCK_FILE = '.lock'

/** A lock older than this is taken over whoever holds it: a keys command takes well under a second. */
export const LOCK_MAX_AGE_MS = 120_000

export interface LockOwner {
  readonly pid: number
  readonly host: string
  /** The owning process's start time as the kernel counts it, when known: tells a reused pid apart. */
  readonly start?: string | undefined
  readonly token: string
  /** ISO instant the lock was taken. */
  readonly since: string
  /** What the holder is doing (`rotate`, `revoke`…). */
  readonly command: string
}

/** What `keys list` shows about a lock (null when none is held). */
export interface LockStatus {
  readonly path: string
  /** The lock file's content as read. */
  readonly text: string
  readonly owner: LockOwner | null
  readonly ageMs: number
  /** Why the lock would be taken over by the next command, or null when it is respected. */
  readonly stale: 'owner_gone' | 'too_old' | null
}

/** The start time of a process (Linux: field 22 of /proc/<pid>/stat), or undefined where unknown. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing paren.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

function parseOwner(text: string): LockOwner | null {
  try {
    const owner = JSON.parse(text) as Partial<LockOwner>
    if (typeof owner.pid !== 'number' || typeof owner.host !== 'string' || typeof owner.token !== 'string') return null
    return { since: '', command: '', ...owner } as LockOwner
  } catch {
    return null
  }
}

/** True only when the owner is provably gone: a process of this host that no longer runs (or a reused pid). */
function ownerGone(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return false
  try {
    process.kill(owner.pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
  return owner.start !== undefined && processStart(owner.pid) !== undefined && processStart(owner.pid) !== owner.start
}

/**
 * Whether a lock's staging file (`.lock.<token>.tmp`) is left over: its writer is provably gone, or it is
 * older than any keys command runs. A live waiter's staging file is never one.
 */
export async function stagingLeftOver(path: string): Promise<boolean> {
  try {
    const owner = parseOwner(await readFile(path, 'utf8'))
    if (owner !== null && ownerGone(owner)) return true
    return Date.now() - (await stat(path)).mtimeMs > LOCK_MAX_AGE_MS
  } catch {
    return false
  }
}

/** The lock held on `dir` now, or null. */
export async function lockStatus(dir: string): Promise<LockStatus | null> {
  const path = join(dir, LOCK_FILE)
  let text: string
  let ageMs: number
  try {
    text = await readFile(path, 'utf8')
    ageMs = Date.now() - (await stat(path)).mtimeMs
  } catch {
    return null
  }
  const owner = parseOwner(text)
  const stale = owner !== null && ownerGone(owner) ? 'owner_gone' : ageMs > LOCK_MAX_AGE_MS ? 'too_old' : null
  return { path, text, owner, ageMs, stale }
}

/** One line about a lock, for errors and `keys list`. */
export function describeLock(status: LockStatus): string {
  const age = `${Math.round(status.ageMs / 1000)}s ago`
  if (status.owner === null) return `${status.path} is held by an unknown owner (unreadable lock, created ${age})`
  const what = status.owner.command === '' ? 'a keys command' : `keys ${status.owner.command}`
  return `${status.path} is held by ${what}, pid ${status.owner.pid} on ${status.owner.host}, since ${status.owner.since || age}`
}

/**
 * Runs `fn` holding the directory's lock. Waits up to `timeoutMs` for a held lock; then fails with the
 * holder and the command that clears the lock. Only the holder removes its own lock.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>, timeoutMs = 10_000, command = ''): Promise<T> {
  const path = join(dir, LOCK_FILE)
  const owner: LockOwner = {
    pid: process.pid,
    host: hostname(),
    start: processStart(process.pid),
    token: randomBytes(12).toString('hex'),
    since: new Date().toISOString(),
    command,
  }
  const text = JSON.stringify(owner)
  // A file of our own (a unique name, complete before it is linked): not an atomic-write temp file, which
  // the lock holder's leftover cleaning would remove under a waiter's feet.
  const staging = join(dir, `${LOCK_FILE}.${owner.token}.tmp`)
  try {
    await writeFile(staging, text, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    // A full disk (ENOSPC) fails the write after open() made the file: remove it, or every failed run
    // leaves one more behind.
    await unlink(staging).catch(() => undefined)
    throw namingPath(err, staging)
  }
  const deadline = Date.now() + timeoutMs
  try {
    for (;;) {
      try {
        // link() fails if the lock exists, and the lock appears with its content: never empty, never torn.
        await link(staging, path)
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const held = await lockStatus(dir)
      if (held === null) continue // released meanwhile
      if (held.stale !== null) {
        // Take it over only if it is still the same lock (another waiter may have taken it over already).
        if ((await readFile(path, 'utf8').catch(() => null)) === held.text) await unlink(path).catch(() => undefined)
        continue
      }
      if (Date.now() > deadline) {
        throw new AuthzError(
          'ERR_KEYSET_LOCKED',
          `${describeLock(held)}. If no keys command is running there, clear the lock with: rm '${path.replaceAll("'", "'\\''")}'`,
        )
      }
      await new Promise((r) => setTimeout(r, 25 + Math.random() * 50))
    }
  } finally {
    await unlink(staging).catch(() => undefined)
  }
  try {
    return await fn()
  } finally {
    // Never remove a lock that is no longer ours (taken over after LOCK_MAX_AGE_MS).
    if ((await readFile(path, 'utf8').catch(() => '')) === text) await unlink(path).catch(() => undefined)
  }
}
