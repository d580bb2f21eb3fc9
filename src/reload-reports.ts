/**
 * One way to report a reload of policy, keyset or TLS material: count it, log a failure as an error (once
 * per distinct failure: the reloader retries it until it loads), flag it in `authz_reload_failing`, log a
 * recovery and a change with its details.
 */
import type { Logger } from 'pino'
import type { AuthzError } from './errors.js'
import type { Metrics } from './metrics.js'
import type { ReloadEvent } from './util/reloader.js'

/** The `what` label (lowercase, as Prometheus label values are). */
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
