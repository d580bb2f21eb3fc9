/**
 * The receiving edge, written once for the Fastify plugin and the gRPC wrappers (the Go kit's
 * `authz.Authorize` is the same pipeline): a verified TLS peer certificate, exactly one token, the token
 * verified and bound to that certificate, then the callee policy's rule. Every outcome has a reason from
 * one vocabulary (`DENIAL_REASONS`, conformance/codes.json) and reaches `onDecision`, the hook a service
 * counts calls with.
 */
import { CalleePolicy, type RouteRule } from './callee-policy.js'
import { safely } from './callback.js'
import { DENIAL_REASONS, VerifyError, type DenialReason } from './errors.js'
import type { VerifiedCaller, Verifier } from './verifier.js'

/** What the edge decided about one call: what a log line and a counter may say (never the token). */
export type CallOutcome =
  | {
      readonly allowed: true
      /** HTTP method; absent for gRPC. */
      readonly method?: string
      /** The request path, or the gRPC full method name. */
      readonly path: string
      readonly sub: string
      readonly aud: string
    }
  | {
      readonly allowed: false
      readonly status: 401 | 403
      readonly reason: DenialReason
      readonly method?: string
      readonly path: string
      /** `sub` and `aud` once a token's signature verified (a replayed or expired token says whose it was). */
      readonly sub?: string
      readonly aud?: string
    }

/** A refused call's outcome. */
export type Denial = Extract<CallOutcome, { allowed: false }>

/** What the edge needs to know about one incoming call. */
export interface IncomingCall {
  /** Thumbprint of the client certificate the TLS stack verified; undefined when there is none. */
  readonly peerThumbprint: string | undefined
  /** Every value of the token header or metadata (exactly one non-empty string is a token). */
  readonly tokens: readonly unknown[] | undefined
  /** The callee policy's route key: `METHOD /route/pattern` or the gRPC full method name. */
  readonly key: string
  /** The route's own rule (route config, a gRPC handler option): it wins over the policy file. */
  readonly rule?: RouteRule | undefined
  readonly method?: string | undefined
  readonly path: string
}

/** The edge's verdict: the caller, or the denial (already reported to `onDecision`). */
export type Verdict = { readonly allowed: true; readonly caller: VerifiedCaller } | Denial

/** Options of the receiving edge, shared by `serviceAuth` and the gRPC wrappers. */
export interface GuardOptions {
  readonly verifier: Verifier
  /** Route rules from the service's own policy file. */
  readonly policy?: CalleePolicy
  /** Let through routes that no rule describes (default false: ERR_ROUTE_UNLISTED, 403). */
  readonly allowUnlisted?: boolean
  /**
   * Told about every call the edge decides (allowed or denied, with the reason), for counters: pass a
   * `CalleeCounters`' `observe`, or increment your own prom-client counters. It must not throw (a throw is
   * ignored) and must not block.
   */
  readonly onDecision?: (outcome: CallOutcome) => void
}

/** The reason a verification failure is denied with: its code (verify never fails otherwise). */
function reasonOf(err: unknown): DenialReason {
  const code = err instanceof VerifyError ? err.code : undefined
  return code !== undefined && (DENIAL_REASONS as readonly string[]).includes(code) ? (code as DenialReason) : 'ERR_TOKEN_MALFORMED'
}

export { safely }

/**
 * The edge's check of one call: synchronous when the verifier's cache holds the token (the hot path of a
 * service that sees the same token thousands of times), a promise otherwise. Never rejects.
 */
export function createGuard(options: GuardOptions): (call: IncomingCall) => Verdict | Promise<Verdict> {
  const policy = options.policy ?? new CalleePolicy()
  const { verifier } = options
  return (call) => {
    const where = { ...(call.method === undefined ? {} : { method: call.method }), path: call.path }
    const deny = (status: 401 | 403, reason: DenialReason, sub?: string, aud?: string): Denial => {
      const denial: Denial = { allowed: false, status, reason, ...where, ...(sub === undefined ? {} : { sub }), ...(aud === undefined ? {} : { aud }) }
      safely(options.onDecision, denial)
      return denial
    }
    const refused = (err: unknown): Denial => {
      const { subject, audience } = err instanceof VerifyError ? err : { subject: undefined, audience: undefined }
      return deny(401, reasonOf(err), subject, audience)
    }
    const decide = (caller: VerifiedCaller): Verdict => {
      const decision = policy.decide(call.key, caller, { rule: call.rule, allowUnlisted: options.allowUnlisted })
      if (decision !== 'allow') return deny(403, decision === 'unlisted' ? 'ERR_ROUTE_UNLISTED' : 'ERR_ROUTE_FORBIDDEN', caller.service, caller.audience)
      safely(options.onDecision, { allowed: true, ...where, sub: caller.service, aud: caller.audience })
      return { allowed: true, caller }
    }
    if (call.peerThumbprint === undefined) return deny(401, 'ERR_PEER_UNVERIFIED')
    const token = call.tokens?.length === 1 ? call.tokens[0] : undefined
    if (typeof token !== 'string' || token === '') return deny(401, 'ERR_TOKEN_MISSING')
    const context = { peerThumbprint: call.peerThumbprint }
    let cached: VerifiedCaller | undefined
    try {
      cached = verifier.verifyCached(token, context)
    } catch (err) {
      return refused(err)
    }
    if (cached !== undefined) return decide(cached)
    return verifier.verify(token, context).then(decide, refused)
  }
}
