/**
 * Callee-side counters of the receiving edge: calls let through, and calls denied by reason. The same
 * counters, names and labels as the Go kit's `authz.CalleeCounters`. Pass `observe` as the `onDecision`
 * option of `serviceAuth` and the gRPC wrappers (one instance may serve both), then read `snapshot()` or
 * expose `prometheus()` — or increment your own prom-client counters from `onDecision` instead.
 */
import { DENIAL_REASONS, type DenialReason } from './errors.js'
import type { CallOutcome } from './guard.js'

/** The metric names both kits use. */
export const CALLEE_VERIFIED_METRIC = 'authz_callee_verified_total'
export const CALLEE_DENIED_METRIC = 'authz_callee_denied_total'
/** Callee policy reloads (file or URL) that failed. */
export const CALLEE_POLICY_RELOAD_FAILURES_METRIC = 'authz_callee_policy_reload_failures_total'
/** 1 while the last reload of the callee policy failed. */
export const CALLEE_POLICY_RELOAD_FAILING_METRIC = 'authz_callee_policy_reload_failing'

/**
 * A denial reason as a Prometheus label value: lower case, without `ERR_` (`ERR_TOKEN_EXPIRED` →
 * `token_expired`), as the project's metrics conventions ask.
 */
export function reasonLabel(reason: DenialReason): string {
  return reason.replace(/^ERR_/, '').toLowerCase()
}

/** Counts what the edge decided. */
export class CalleeCounters {
  #verified = 0
  #policyFailures = 0
  #policyFailing = false
  readonly #denied = new Map<DenialReason, number>(DENIAL_REASONS.map((r) => [r, 0]))

  /** The `onDecision` hook: counts one outcome. */
  readonly observe = (outcome: CallOutcome): void => {
    if (outcome.allowed) this.#verified++
    else this.#denied.set(outcome.reason, (this.#denied.get(outcome.reason) ?? 0) + 1)
  }

  /**
   * Counts one reload of the callee policy (what `CalleePolicy.load`'s `counters` option does): a failure
   * adds to `policyReloadFailures` and holds `policyReloadFailing` until a reload succeeds.
   */
  readonly observePolicyReload = (error: unknown): void => {
    this.#policyFailing = error !== undefined
    if (error !== undefined) this.#policyFailures++
  }

  /** Calls let through so far, calls denied so far by reason (every reason present, 0 when none), and the policy's reloads. */
  snapshot(): { verified: number; denied: Record<DenialReason, number>; policyReloadFailures: number; policyReloadFailing: boolean } {
    return {
      verified: this.#verified,
      denied: Object.fromEntries(this.#denied) as Record<DenialReason, number>,
      policyReloadFailures: this.#policyFailures,
      policyReloadFailing: this.#policyFailing,
    }
  }

  /** The counters in the Prometheus text exposition format, for a service's own `/metrics`. */
  prometheus(): string {
    const lines = [
      `# HELP ${CALLEE_VERIFIED_METRIC} Calls the authz guard let through (token verified, bound to the caller's certificate, allowed by the callee policy).`,
      `# TYPE ${CALLEE_VERIFIED_METRIC} counter`,
      `${CALLEE_VERIFIED_METRIC} ${this.#verified}`,
      `# HELP ${CALLEE_DENIED_METRIC} Calls the authz guard refused, by reason (401: the peer or the token; 403: the callee policy).`,
      `# TYPE ${CALLEE_DENIED_METRIC} counter`,
      ...[...this.#denied].map(([reason, n]) => `${CALLEE_DENIED_METRIC}{reason="${reasonLabel(reason)}"} ${n}`),
      `# HELP ${CALLEE_POLICY_RELOAD_FAILURES_METRIC} Callee policy reloads (file or URL) that failed; the rules read before stay in force.`,
      `# TYPE ${CALLEE_POLICY_RELOAD_FAILURES_METRIC} counter`,
      `${CALLEE_POLICY_RELOAD_FAILURES_METRIC} ${this.#policyFailures}`,
      `# HELP ${CALLEE_POLICY_RELOAD_FAILING_METRIC} 1 while the last reload of the callee policy failed (retried; the rules read before stay in force), else 0.`,
      `# TYPE ${CALLEE_POLICY_RELOAD_FAILING_METRIC} gauge`,
      `${CALLEE_POLICY_RELOAD_FAILING_METRIC} ${this.#policyFailing ? 1 : 0}`,
    ]
    return `${lines.join('\n')}\n`
  }
}
