/**
 * Per-caller token buckets: `rate` requests per second with a burst of `rate`, keyed by the caller's name
 * (its certificate CN, or its SPIFFE ID).
 * One caller over its limit costs the others nothing (a Map lookup). Idle buckets are swept.
 */
import type { Clock } from './clock.js'

interface Bucket {
  tokens: number
  updatedAt: number
}

export interface RateDecision {
  readonly allowed: boolean
  /** Seconds until one request is allowed again (≥ 1), when refused. */
  readonly retryAfter: number
}

const ALLOWED: RateDecision = Object.freeze({ allowed: true, retryAfter: 0 })

export class RateLimiter {
  readonly rate: number
  readonly #clock: Clock
  readonly #buckets = new Map<string, Bucket>()
  #lastSweep: number

  /** `rate` ≤ 0 turns limiting off. */
  constructor(rate: number, clock: Clock) {
    this.rate = rate
    this.#clock = clock
    this.#lastSweep = clock.now()
  }

  take(key: string): RateDecision {
    if (this.rate <= 0) return ALLOWED
    const now = this.#clock.now()
    if (now - this.#lastSweep > 60_000) this.#sweep(now)
    let bucket = this.#buckets.get(key)
    if (bucket === undefined) {
      bucket = { tokens: this.rate, updatedAt: now }
      this.#buckets.set(key, bucket)
    } else {
      bucket.tokens = Math.min(this.rate, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.rate)
      bucket.updatedAt = now
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return ALLOWED
    }
    return { allowed: false, retryAfter: Math.max(1, Math.ceil((1 - bucket.tokens) / this.rate)) }
  }

  #sweep(now: number): void {
    this.#lastSweep = now
    for (const [key, bucket] of this.#buckets) {
      if (now - bucket.updatedAt > 10_000) this.#buckets.delete(key)
    }
  }
}
