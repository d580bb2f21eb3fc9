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
import { LogSummary } from './log-summary.js'

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

/** Bounded denial lines of one service (share one between its Fastify plugin and gRPC wrappers). */
export class DenialLog {
  readonly #lines: LogSummary

  constructor(logger: DenialLogger, options: DenialLogOptions = {}) {
    this.#lines = new LogSummary({
      logger,
      event: DENIAL_EVENT,
      message: 'service call denied',
      intervalMs: options.intervalMs ?? 10_000,
      maxKeys: options.maxKeys ?? 256,
    })
  }

  /** One denial: a line now if its (reason, caller) is new, else counted for the next summary. */
  note(denial: Denial): void {
    const { status, reason, method, path, sub, aud } = denial
    // A summary speaks for many calls: it keeps what they share (reason, caller), not one call's path.
    const shared = { status, reason, sub, aud }
    this.#lines.note(`${reason}\n${sub ?? ''}`, { status, reason, ...(method === undefined ? {} : { method }), path, sub, aud }, shared)
  }

  /** Writes one summary line per key that had denials since its last line; forgets the quiet keys. */
  flush(): void {
    this.#lines.flush()
  }

  /** Writes what is pending and stops the timer (the service is closing). */
  close(): void {
    this.#lines.close()
  }
}
