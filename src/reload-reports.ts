/**
 * One way to report a reload of policy, keyset or TLS material: count it, log a failure as an error (once
 * per distinct failure: the reloader retries it until it loads), flag it in `authz_reload_failing`, log a
 * recovery and a change with its details.
 */
import type { Logger } from 'pino'
import type { Clock } from './clock.js'
import type { AuthzError } from './errors.js'
import type { KeyStore } from './keys/store.js'
import type { Metrics } from './metrics.js'
import type { ReloadEvent } from './util/reloader.js'

/** The `what` of `authz_reload_failing` and of the log lines (lowercase, as every label value). */
export type ReloadTarget = 'policy' | 'keyset' | 'tls'

/** How a log message names each target. */
const NAMES: Readonly<Record<ReloadTarget, string>> = { policy: 'policy', keyset: 'keyset', tls: 'TLS material' }

export interface ReloadReporting {
  readonly counter: Metrics['policyReloads']
  /** What stays in force while a reload fails, for the log line. */
  readonly keeps: string
  /** Details of a change, for the log line (and any warnings to log first). */
  readonly onChange: () => Record<string, unknown>
}

export function reloadReporter(what: ReloadTarget, reporting: ReloadReporting, metrics: Metrics, logger: Logger): (event: ReloadEvent<AuthzError>) => void {
  metrics.reloadFailing.set({ what }, 0)
  for (const result of ['changed', 'error']) reporting.counter.inc({ result }, 0)
  return (event) => {
    if (event.kind === 'failed') {
      reporting.counter.inc({ result: 'error' })
      metrics.reloadFailing.set({ what }, 1)
      logger.error(
        { event: 'reload_failed', what, code: event.error.code, detail: event.error.message, retry_in_ms: event.retryInMs },
        `${NAMES[what]} reload failed; ${reporting.keeps} stay in force; retrying until it loads`,
      )
      return
    }
    if (event.kind === 'recovered') {
      metrics.reloadFailing.set({ what }, 0)
      logger.warn({ event: 'reload_recovered', what, failed_for_ms: event.failedFor }, `${NAMES[what]} loads again`)
      if (!event.changed) return
    }
    reporting.counter.inc({ result: 'changed' })
    logger.info({ event: 'reloaded', what, ...reporting.onChange() }, `${NAMES[what]} reloaded`)
  }
}

/**
 * Reports the key that signs whenever it changes, whatever changed it (a reload, an activation instant, a
 * prune or revoke elsewhere): a switch is an info line with both kids; the start of "no key signs" is ONE
 * error line — at start and at run time alike — naming the key that stopped and the next one, if any;
 * its end is a warning. Returns the function that stops reporting.
 */
export function reportSigningKey(keys: KeyStore, logger: Logger, clock: Clock): () => void {
  let last = keys.signingKey()
  let noneSince: number | undefined
  const noKey = (previous: string | undefined): void => {
    noneSince = clock.now()
    const next = keys.statuses().find((s) => s.state === 'next')?.key
    logger.error(
      {
        event: 'no_signing_key',
        previous,
        next: next?.kid,
        next_activates_at: next === undefined ? undefined : new Date(next.activatesAt).toISOString(),
        dir: keys.dir,
      },
      'no signing key is active: /token answers 503 until one is',
    )
  }
  if (last === undefined) noKey(undefined)
  return keys.onChange(() => {
    const active = keys.signingKey()
    if (active?.kid === last?.kid) return
    if (active === undefined) noKey(last?.kid)
    else if (last === undefined) {
      logger.warn({ event: 'signing_key_active', kid: active.kid, alg: active.alg, store: active.store, failed_for_ms: noneSince === undefined ? undefined : clock.now() - noneSince }, 'a signing key is active again')
    } else {
      logger.info({ event: 'signing_key_switched', kid: active.kid, alg: active.alg, store: active.store, previous: last.kid }, 'signing key switched')
    }
    last = active
  })
}
