/**
 * Time is injected. Domain code asks a Clock, never `Date.now()`, so tests move time instead of sleeping
 * and key lifecycle decisions are pure functions of (keyset, now).
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number
  /**
   * Runs `fn` after `ms` of this clock's time and returns what cancels it: the timers of background work
   * (a callee policy's pulls, retries and fetch timeouts). Without it, the system's timers (which never
   * keep the process alive).
   */
  setTimer?(fn: () => void, ms: number): () => void
}

/** A timer on `clock`: its own when it has them, else the system's (unref'd). */
export function setTimer(clock: Clock, fn: () => void, ms: number): () => void {
  if (clock.setTimer !== undefined) return clock.setTimer(fn, ms)
  const timer = setTimeout(fn, ms)
  timer.unref()
  return () => clearTimeout(timer)
}

/** The real clock. */
export const systemClock: Clock = { now: () => Date.now() }

/**
 * A clock that moves only when told to: for tests and simulations. Its timers fire, in order, when
 * `advance` or `set` passes their instant.
 */
export class ManualClock implements Clock {
  #now: number
  #timers: { at: number; fn: () => void }[] = []
  constructor(start: number | Date = Date.now()) {
    this.#now = typeof start === 'number' ? start : start.getTime()
  }
  now(): number {
    return this.#now
  }
  /** Moves the clock forward by `ms` milliseconds. */
  advance(ms: number): void {
    this.set(this.#now + ms)
  }
  set(ms: number | Date): void {
    const target = typeof ms === 'number' ? ms : ms.getTime()
    for (;;) {
      const due = this.#timers.filter((timer) => timer.at <= target).sort((a, b) => a.at - b.at)[0]
      if (due === undefined) break
      this.#timers.splice(this.#timers.indexOf(due), 1)
      this.#now = Math.max(this.#now, due.at)
      due.fn()
    }
    this.#now = target
  }
  setTimer(fn: () => void, ms: number): () => void {
    const timer = { at: this.#now + Math.max(0, ms), fn }
    this.#timers.push(timer)
    return () => {
      const i = this.#timers.indexOf(timer)
      if (i >= 0) this.#timers.splice(i, 1)
    }
  }
  /** Milliseconds until the earliest timer set and not yet fired or cancelled (undefined: none). */
  get nextTimerMs(): number | undefined {
    const at = Math.min(...this.#timers.map((timer) => timer.at))
    return Number.isFinite(at) ? at - this.#now : undefined
  }
  /** Timers set and not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.#timers.length
  }
}
