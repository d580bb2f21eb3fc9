/**
 * Time is injected. Domain code asks a Clock, never `Date.now()`, so tests move time instead of sleeping
 * and key lifecycle decisions are pure functions of (keyset, now).
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number
}

/** The real clock. */
export const systemClock: Clock = { now: () => Date.now() }

/** A clock that moves only when told to: for tests and simulations. */
export class ManualClock implements Clock {
  #now: number
  constructor(start: number | Date = Date.now()) {
    this.#now = typeof start === 'number' ? start : start.getTime()
  }
  now(): number {
    return this.#now
  }
  /** Moves the clock forward by `ms` milliseconds. */
  advance(ms: number): void {
    this.#now += ms
  }
  set(ms: number | Date): void {
    this.#now = typeof ms === 'number' ? ms : ms.getTime()
  }
}
