/**
 * Denial log lines, bounded as the issuer bounds its own: a caller can repeat a denied call at will (a flood
 * of forged tokens, a replayed token, a caller without its scope), so a line per denial would let it flood a
 * service's log. The first denial of a (reason, caller) is one line at once; the next ones are counted and
 * written as one summary line per interval with `count`, while they go on. A key quiet for a whole interval
 * is forgotten (its next denial is a line at once again). The callee counters (`onDecision`) still count
 * every call exactly. `sub` is only ever authz's word (a verified token's), so keys are bounded by the
 * fleet's identities; beyond `maxKeys`, denials are counted together in lines marked `overflow: true`.
 * The Go kit writes the same lines.
 */
import type { Denial } from './guard.js'

/** What the denial lines are written to: pino (Fastify's `app.log`), or anything with a `warn(object, message)`. */
export interface DenialLogger {
  warn(fields: Record<string, unknown>, message: string): void
}

export interface DenialLogOptions {
  /** Length of one summary interval, ms (default 10 s, the issuer's). */
  readonly intervalMs?: number
  /** Keys tracked at once (default 256). */
  readonly maxKeys?: number
}

/** The `event` of every denial line. */
export const DENIAL_EVENT = 'service_call_denied'
const MESSAGE = 'service call denied'
const OVERFLOW = '\0overflow'

interface Tally {
  readonly fields: Record<string, unknown>
  /** Denials since the last line written for this key. */
  pending: number
}

/** Bounded denial lines of one service (share one between its Fastify plugin and gRPC wrappers). */
export class DenialLog {
  readonly #logger: DenialLogger
  readonly #intervalMs: number
  readonly #maxKeys: number
  readonly #tallies = new Map<string, Tally>()
  #timer: NodeJS.Timeout | undefined

  constructor(logger: DenialLogger, options: DenialLogOptions = {}) {
    this.#logger = logger
    this.#intervalMs = options.intervalMs ?? 10_000
    this.#maxKeys = options.maxKeys ?? 256
    if (!(this.#intervalMs > 0)) throw new TypeError('intervalMs must be positive')
  }

  /** One denial: a line now if its (reason, caller) is new, else counted for the next summary. */
  note(denial: Denial): void {
    const { status, reason, method, path, sub, aud } = denial
    let key = `${reason}\n${sub ?? ''}`
    let tally = this.#tallies.get(key)
    let fields: Record<string, unknown> = { status, reason, ...(method === undefined ? {} : { method }), path, sub, aud }
    if (tally === undefined && this.#tallies.size >= this.#maxKeys) {
      key = OVERFLOW
      tally = this.#tallies.get(key)
      fields = { overflow: true }
    }
    if (tally !== undefined) {
      tally.pending++
      return
    }
    // A summary speaks for many calls: it keeps what they share (reason, caller), not one call's path.
    const shared = { ...fields }
    delete shared.path
    delete shared.method
    this.#tallies.set(key, { fields: shared, pending: 0 })
    this.#write(fields, 1, false)
    this.#timer ??= setInterval(() => this.flush(), this.#intervalMs).unref()
  }

  /** Writes one summary line per key that had denials since its last line; forgets the quiet keys. */
  flush(): void {
    for (const [key, tally] of this.#tallies) {
      if (tally.pending === 0) {
        this.#tallies.delete(key)
        continue
      }
      this.#write(tally.fields, tally.pending, true)
      tally.pending = 0
    }
    if (this.#tallies.size === 0) this.#stop()
  }

  /** Writes what is pending and stops the timer (the service is closing). */
  close(): void {
    this.flush()
    this.#tallies.clear()
    this.#stop()
  }

  #write(fields: Record<string, unknown>, count: number, summary: boolean): void {
    const seconds = this.#intervalMs / 1000
    try {
      this.#logger.warn(
        { event: DENIAL_EVENT, ...fields, count, ...(summary ? { interval_s: seconds } : {}) },
        summary ? `${MESSAGE} (${count} more in the last ${seconds}s)` : MESSAGE,
      )
    } catch {
      // a logger that throws changes no answer
    }
  }

  #stop(): void {
    if (this.#timer === undefined) return
    clearInterval(this.#timer)
    this.#timer = undefined
  }
}
