/**
 * Token buckets by key: `rate` events per second with a burst of `burst` (default `rate`). Keyed by the
 * caller's name (its certificate CN, or its SPIFFE ID) for /token, by source address for unauthenticated
 * handshakes (tls/admission.ts). One key over its limit costs the others nothing (a Map lookup). Idle
 * buckets are swept.
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
  readonly burst: number
  readonly #clock: Clock
  readonly #buckets = new Map<string, Bucket>()
  #lastSweep: number

  /** `rate` ≤ 0 turns limiting off. */
  constructor(rate: number, clock: Clock, burst = rate) {
    this.rate = rate
    this.burst = Math.max(burst, 1)
    this.#clock = clock
    this.#lastSweep = clock.now()
  }

  take(key: string): RateDecision {
    if (this.rate <= 0) return ALLOWED
    const now = this.#clock.now()
    if (now - this.#lastSweep > 60_000) this.#sweep(now)
    const bucket = this.#bucket(key, now)
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return ALLOWED
    }
    return { allowed: false, retryAfter: Math.max(1, Math.ceil((1 - bucket.tokens) / this.rate)) }
  }

  /** Whether `take` would allow one more now, without taking it. */
  allows(key: string): boolean {
    if (this.rate <= 0) return true
    const bucket = this.#buckets.get(key)
    return bucket === undefined || Math.min(this.burst, bucket.tokens + ((this.#clock.now() - bucket.updatedAt) / 1000) * this.rate) >= 1
  }

  /**
   * Takes one token for an event that has already happened, into debt if need be (down to one burst
   * below zero): events allowed together (`allows`) and charged when they end are still held to `rate`
   * on average.
   */
  charge(key: string): void {
    if (this.rate <= 0) return
    const bucket = this.#bucket(key, this.#clock.now())
    bucket.tokens = Math.max(bucket.tokens - 1, -this.burst)
  }

  #bucket(key: string, now: number): Bucket {
    let bucket = this.#buckets.get(key)
    if (bucket === undefined) {
      bucket = { tokens: this.burst, updatedAt: now }
      this.#buckets.set(key, bucket)
    } else {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.rate)
      bucket.updatedAt = now
    }
    return bucket
  }

  #sweep(now: number): void {
    this.#lastSweep = now
    for (const [key, bucket] of this.#buckets) {
      if (now - bucket.updatedAt > 10_000) this.#buckets.delete(key)
    }
  }
}
