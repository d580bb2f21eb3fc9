/**
 * Bounded logging for events that an attacker or a misbehaving caller can repeat at will (a caller over
 * its rate limit, refused handshakes): the first event of a key is one line at once, the rest are counted
 * and summarised in one line per key per interval, never a line per event. A key that stays quiet for a
 * whole interval is forgotten, so its next event is again a line at once. The issuer's bounded lines and
 * both kits' denial lines (DenialLog) are written by it. A logger that throws changes nothing.
 */

/** A line writer: pino's methods (Fastify's `app.log`), or anything with `warn(object, message)`. */
export type LogLine = (fields: Record<string, unknown>, message: string) => void

/** What the lines are written to: `warn` always; `info`/`error` when the summary's `level` asks for them. */
export interface LogSummaryLogger {
  warn: LogLine
  info?: LogLine
  error?: LogLine
}

export interface LogSummaryOptions {
  readonly logger: LogSummaryLogger
  /** The `event` field of every line (`rate_limited`, `tls_handshake_refused`, …). */
  readonly event: string
  /** The message of every line; a summary line says how many events it stands for. */
  readonly message: string
  readonly level?: 'warn' | 'info' | 'error'
  /** Length of one summary interval (default 10 s). */
  readonly intervalMs?: number
  /**
   * Keys tracked at once (default 256). Beyond it, events are counted together in lines marked
   * `overflow: true`, so a flood of distinct keys costs bounded memory and bounded lines.
   */
  readonly maxKeys?: number
}

interface Tally {
  fields: Record<string, unknown>
  /** Events since the last line written for this key. */
  pending: number
}

const OVERFLOW = '\0overflow'

export class LogSummary {
  readonly #options: Required<LogSummaryOptions>
  readonly #tallies = new Map<string, Tally>()
  #timer: NodeJS.Timeout | undefined

  constructor(options: LogSummaryOptions) {
    this.#options = { level: 'warn', intervalMs: 10_000, maxKeys: 256, ...options }
    if (!(this.#options.intervalMs > 0)) throw new TypeError('intervalMs must be positive')
  }

  /**
   * One event of `key`. `fields` describe it: the first event's line has them; its summaries have
   * `shared` (what every event of the key has in common; by default the first event's fields).
   */
  note(key: string, fields: Record<string, unknown> = {}, shared: Record<string, unknown> = fields): void {
    let tally = this.#tallies.get(key)
    if (tally === undefined && this.#tallies.size >= this.#options.maxKeys) {
      // (not a field named `key`: the logger redacts that name, as it may carry key material)
      key = OVERFLOW
      tally = this.#tallies.get(key)
      fields = shared = { overflow: true }
    }
    if (tally === undefined) {
      this.#tallies.set(key, { fields: shared, pending: 0 })
      this.#write(fields, 1, false)
      this.#schedule()
      return
    }
    tally.pending++
  }

  /**
   * Writes one summary line per key that had events since its last line, and forgets the keys that had
   * none. Called by the interval timer; tests call it instead of waiting.
   */
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

  /** Writes what is pending and stops the timer (shutdown). */
  close(): void {
    this.flush()
    this.#tallies.clear()
    this.#stop()
  }

  /** Keys tracked now (for tests and bounds). */
  get size(): number {
    return this.#tallies.size
  }

  #write(fields: Record<string, unknown>, count: number, summary: boolean): void {
    const { logger, level, event, message, intervalMs } = this.#options
    const line = { event, ...fields, count, ...(summary ? { interval_s: intervalMs / 1000 } : {}) }
    try {
      ;(logger[level] ?? logger.warn).call(logger, line, summary ? `${message} (${count} more in the last ${intervalMs / 1000}s)` : message)
    } catch {
      // a logger that throws changes no answer and stops no count
    }
  }

  #schedule(): void {
    if (this.#timer !== undefined) return
    this.#timer = setInterval(() => this.flush(), this.#options.intervalMs)
    this.#timer.unref()
  }

  #stop(): void {
    if (this.#timer === undefined) return
    clearInterval(this.#timer)
    this.#timer = undefined
  }
}
