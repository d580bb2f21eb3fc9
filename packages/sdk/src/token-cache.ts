/**
 * Verified tokens, by their exact string (as Envoy's jwt_authn caches them): a caller reuses one token for
 * minutes, so the signature and claims checks run once per token, not once per request. Only tokens that
 * passed every check enter; an entry lives until the earlier of the token's `exp` and `maxAgeMs`, the map
 * holds at most `maxEntries` (least recently used out first), and it is cleared whenever the trusted keys
 * change. What a request proves besides the token — the certificate it came over — is checked by the
 * verifier on every request, cached or not.
 */
import type { Clock } from './clock.js'

export interface TokenCacheOptions {
  /** Most tokens held (default 1000). */
  readonly maxEntries?: number
  /** Longest an entry is trusted, ms (default 5 min; never past the token's `exp`). */
  readonly maxAgeMs?: number
}

export class TokenCache<T> {
  readonly #entries = new Map<string, { readonly value: T; readonly until: number }>()
  readonly #max: number
  readonly #maxAgeMs: number
  readonly #clock: Clock

  constructor(clock: Clock, options: TokenCacheOptions = {}) {
    this.#max = options.maxEntries ?? 1000
    this.#maxAgeMs = options.maxAgeMs ?? 300_000
    if (!(Number.isInteger(this.#max) && this.#max > 0)) throw new TypeError('cache.maxEntries must be a positive integer')
    if (!(this.#maxAgeMs > 0)) throw new TypeError('cache.maxAgeMs must be positive')
    this.#clock = clock
  }

  get size(): number {
    return this.#entries.size
  }

  get(token: string): T | undefined {
    const entry = this.#entries.get(token)
    if (entry === undefined) return undefined
    this.#entries.delete(token)
    if (this.#clock.now() >= entry.until) return undefined
    this.#entries.set(token, entry) // most recently used last
    return entry.value
  }

  /** Holds `value` until the earlier of `expiresAtMs` and the cache's own bound. */
  set(token: string, value: T, expiresAtMs: number): void {
    const until = Math.min(expiresAtMs, this.#clock.now() + this.#maxAgeMs)
    this.#entries.delete(token)
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value as string)
    this.#entries.set(token, { value, until })
  }

  clear(): void {
    this.#entries.clear()
  }
}
