/**
 * The server's view of the keys directory: the keyset in force, which key signs now, and the JWKS bytes.
 * The view is recomputed when the keyset changes and when the clock passes the next lifecycle transition
 * (checked on every read, so a switch happens at the exact instant even if a timer fires late).
 */
import { sha256Base64url } from '../util/digest.js'
import type { Clock } from '../clock.js'
import { AuthzError } from '../errors.js'
import { backoffMs, Reloader, type ReloadEvent, type ReloadResult } from '../util/reloader.js'
import { loadKeyset, type Keyset, type LoadedKey, type TokenKeys } from './keyset.js'
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
  /** The PKCS#11 token, when keys may live in one. */
  readonly token?: (TokenKeys & { readonly available: boolean }) | undefined
}

/** How `open` waits for a key file the manifest names that is not there yet. */
export interface OpenWait {
  /** Give up after this long, ms (default 15 s). */
  readonly maxMs?: number
  /** Called before each wait (for a log line). */
  readonly onWait?: (error: AuthzError, retryInMs: number) => void
}

export const DEFAULT_OPEN_WAIT_MS = 15_000

const EMPTY_JWKS_BODY = Buffer.from('{"keys":[]}')

export class KeyStore {
  readonly dir: string
  readonly timing: Timing
  readonly #clock: Clock
  readonly #passphrase: string | undefined
  readonly #token: KeyStoreOptions['token']
  #keyset: Keyset | undefined
  #view: View
  readonly #reloader: Reloader<AuthzError>
  #unsubscribe: (() => void) | undefined
  #watching = false
  #timer: NodeJS.Timeout | undefined
  readonly #listeners = new Set<() => void>()

  constructor(options: KeyStoreOptions, keyset?: Keyset) {
    this.dir = options.dir
    this.timing = options.timing
    this.#clock = options.clock
    this.#passphrase = options.passphrase
    this.#token = options.token
    this.#keyset = keyset
    this.#reloader = new Reloader({ attempt: () => this.#attempt(), toError: (err) => err as AuthzError, now: () => this.#clock.now() })
    this.#view = this.#compute()
  }

  /**
   * Reads the keyset; throws AuthzError when the directory holds no valid keyset. A manifest that names a
   * key file not there yet (NFS or configuration management delivering files in any order) is read again,
   * with the reloads' backoff, until the file arrives or `wait.maxMs` has passed: a start is as patient as
   * a reload, within a bound.
   */
  static async open(options: KeyStoreOptions, wait: OpenWait = {}): Promise<KeyStore> {
    const maxMs = wait.maxMs ?? DEFAULT_OPEN_WAIT_MS
    const started = Date.now()
    for (let attempt = 1; ; attempt++) {
      try {
        return new KeyStore(options, await loadKeyset(options.dir, { passphrase: options.passphrase, token: options.token }))
      } catch (err) {
        const retryInMs = Math.min(backoffMs(attempt, 500, 8000), started + maxMs - Date.now())
        if (!(err instanceof AuthzError) || err.reason !== 'key_file_missing' || retryInMs <= 0) throw err
        wait.onWait?.(err, retryInMs)
        await new Promise((resolve) => setTimeout(resolve, retryInMs))
      }
    }
  }

  get keyset(): Keyset | undefined {
    return this.#keyset
  }

  /** The key that signs now, or undefined (then /token answers 503 and /readyz is false). */
  signingKey(): LoadedKey | undefined {
    return this.#current().active
  }

  /** Whether the signing key can sign now (a key in a PKCS#11 token that is down cannot). */
  signingAvailable(): boolean {
    const key = this.signingKey()
    return key !== undefined && (key.store === 'file' || this.#token?.available === true)
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

  /** Since when (ms) the directory has failed to load, or undefined while the keyset in force is its own. */
  get failingSince(): number | undefined {
    return this.#reloader.failingSince
  }

  /**
   * Re-reads the directory: the manifest and every key file. Unchanged bytes are a no-op; a corrupt
   * manifest, or a key file missing, unreadable or holding another key than its kid (even under an
   * unchanged manifest), keeps the keyset in force, is reported once per distinct failure (`force` reports it again) and is
   * retried until it loads.
   */
  reload(force = false): Promise<KeyReloadResult> {
    return this.#reloader.reload(force)
  }

  /** Every key file is read again and checked against its kid: a file replaced under an unchanged manifest fails the reload. */
  async #attempt(): Promise<boolean> {
    const keyset = await loadKeyset(this.dir, { passphrase: this.#passphrase, previous: this.#keyset, token: this.#token })
    if (keyset.fingerprint === this.#keyset?.fingerprint) return false
    this.#keyset = keyset
    this.#refresh()
    return true
  }

  /** Reloads on directory changes (events, plus polling) and arms a timer for lifecycle transitions. */
  watch(onEvent: (event: ReloadEvent<AuthzError>) => void, pollMs = 5000): void {
    this.#unsubscribe?.()
    this.#unsubscribe = this.#reloader.onEvent(onEvent)
    this.#reloader.watch([this.dir], pollMs)
    this.#watching = true
    this.#arm()
  }

  close(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
    this.#reloader.close()
    this.#watching = false
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #current(): View {
    if (this.#clock.now() >= this.#view.validUntil) this.#refresh()
    return this.#view
  }

  #refresh(): void {
    this.#view = this.#compute()
    if (this.#watching) this.#arm()
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
    const etag = `"${sha256Base64url(body).slice(0, 27)}"`
    return {
      statuses,
      active: activeAt(statuses),
      jwks: Object.freeze({ body, etag, kids: keys.map((k) => k.kid) }),
      validUntil: nextTransition(statuses, now) ?? Number.POSITIVE_INFINITY,
    }
  }
}
