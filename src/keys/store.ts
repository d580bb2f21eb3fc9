/**
 * The server's view of the keys directory: the keyset in force, which key signs now, and the JWKS bytes.
 * The view is recomputed when the keyset changes and when the clock passes the next lifecycle transition
 * (checked on every read, so a switch happens at the exact instant even if a timer fires late).
 */
import { createHash } from 'node:crypto'
import type { Clock } from '../clock.js'
import type { AuthzError } from '../errors.js'
import { ReportOnce, Serial, type ReloadResult } from '../util/report-once.js'
import { watchDir, type Watcher } from '../util/watch.js'
import { loadKeyset, manifestHash, readManifestText, type Keyset, type LoadedKey } from './keyset.js'
import { activeAt, keyStates, nextTransition, published, type KeyStatus, type Timing } from './lifecycle.js'

export interface Jwks {
  /** Serialised once per change: `{"keys":[...]}`. */
  readonly body: Buffer
  /** Strong ETag of `body`. */
  readonly etag: string
  readonly kids: readonly string[]
}

interface View {
  readonly statuses: readonly KeyStatus<LoadedKey>[]
  readonly active: LoadedKey | undefined
  readonly jwks: Jwks
  /** Recompute when now reaches this instant (ms); Infinity when nothing is scheduled. */
  readonly validUntil: number
}

export type KeyReloadResult = ReloadResult<AuthzError>

export interface KeyStoreOptions {
  readonly dir: string
  readonly timing: Timing
  readonly clock: Clock
  readonly passphrase?: string | undefined
}

const EMPTY_JWKS_BODY = Buffer.from('{"keys":[]}')

export class KeyStore {
  readonly #serial = new Serial()
  readonly dir: string
  readonly timing: Timing
  readonly #clock: Clock
  readonly #passphrase: string | undefined
  #keyset: Keyset | undefined
  #view: View
  readonly #seen: ReportOnce
  #watcher: Watcher | undefined
  #timer: NodeJS.Timeout | undefined
  readonly #listeners = new Set<() => void>()

  constructor(options: KeyStoreOptions, keyset?: Keyset) {
    this.dir = options.dir
    this.timing = options.timing
    this.#clock = options.clock
    this.#passphrase = options.passphrase
    this.#keyset = keyset
    this.#seen = new ReportOnce(keyset?.sha256)
    this.#view = this.#compute()
  }

  /** Reads the keyset; throws AuthzError when the directory holds no valid keyset. */
  static async open(options: KeyStoreOptions): Promise<KeyStore> {
    const keyset = await loadKeyset(options.dir, { passphrase: options.passphrase })
    return new KeyStore(options, keyset)
  }

  get keyset(): Keyset | undefined {
    return this.#keyset
  }

  /** The key that signs now, or undefined (then /token answers 503 and /readyz is false). */
  signingKey(): LoadedKey | undefined {
    return this.#current().active
  }

  jwks(): Jwks {
    return this.#current().jwks
  }

  statuses(): readonly KeyStatus<LoadedKey>[] {
    return this.#current().statuses
  }

  /** Called after every change of the view (new keyset or a lifecycle transition). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /**
   * Re-reads the directory. An unchanged manifest is a no-op; a corrupt manifest or a missing/bad key file
   * keeps the keyset in force and is reported once per distinct content (`force` reports it again).
   */
  /** One reload at a time, in order (see Serial). */
  reload(force = false): Promise<KeyReloadResult> {
    return this.#serial.run(() => this.#reload(force))
  }

  async #reload(force: boolean): Promise<KeyReloadResult> {
    let text: string
    try {
      text = await readManifestText(this.dir)
    } catch (err) {
      if (!this.#seen.isNew(`error:${(err as Error).message}`, force)) return { changed: false }
      return { changed: false, error: err as AuthzError }
    }
    const hash = manifestHash(text)
    if (!this.#seen.isNew(hash, force)) return { changed: false }
    if (hash === this.#keyset?.sha256) return { changed: false }
    try {
      const keyset = await loadKeyset(this.dir, { passphrase: this.#passphrase, previous: this.#keyset, manifestText: text })
      this.#keyset = keyset
      this.#refresh()
      return { changed: true }
    } catch (err) {
      return { changed: false, error: err as AuthzError }
    }
  }

  /** Reloads on directory changes (events, plus polling) and arms a timer for lifecycle transitions. */
  watch(onReload: (result: KeyReloadResult) => void, pollMs = 5000): void {
    this.#watcher?.close()
    this.#watcher = watchDir(this.dir, () => void this.reload().then(onReload), { pollMs })
    this.#arm()
  }

  close(): void {
    this.#watcher?.close()
    this.#watcher = undefined
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #current(): View {
    if (this.#clock.now() >= this.#view.validUntil) this.#refresh()
    return this.#view
  }

  #refresh(): void {
    this.#view = this.#compute()
    if (this.#watcher !== undefined) this.#arm()
    for (const listener of this.#listeners) listener()
  }

  /** A timer at the next transition, so metrics, logs and listeners see the switch when it happens. */
  #arm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    if (!Number.isFinite(this.#view.validUntil)) return
    const delay = Math.min(Math.max(this.#view.validUntil - this.#clock.now(), 0), 2 ** 31 - 1)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (this.#clock.now() >= this.#view.validUntil) this.#refresh()
      else this.#arm()
    }, delay)
    this.#timer.unref()
  }

  #compute(): View {
    const now = this.#clock.now()
    const statuses = keyStates(this.#keyset?.keys ?? [], now, this.timing)
    const keys = published(statuses)
    const body = keys.length === 0 ? EMPTY_JWKS_BODY : Buffer.from(JSON.stringify({ keys: keys.map((k) => k.publicJwk) }))
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`
    return {
      statuses,
      active: activeAt(statuses),
      jwks: Object.freeze({ body, etag, kids: keys.map((k) => k.kid) }),
      validUntil: nextTransition(statuses, now) ?? Number.POSITIVE_INFINITY,
    }
  }
}
