/**
 * Why a policy decision came out the way it did, as fields and one plain sentence for an operator. The
 * operator CLI (`authz explain`) prints it and /token logs it at debug level on every policy denial, so
 * the two always tell the same story. Never sent to a caller: the wire only ever gets the error code.
 */
import { isScopeToken, splitScopes } from '@authz/sdk'
import type { Decision, DenialReason } from './policy.js'

export interface DecisionExplanation {
  readonly allowed: boolean
  /** The OAuth error the caller gets (denials only). */
  readonly error?: 'invalid_client' | 'invalid_target' | 'invalid_scope'
  readonly reason?: DenialReason
  /** The scopes the token carries (allowed only). */
  readonly scopes?: readonly string[]
  /** Requested scopes the caller is not granted for the audience. */
  readonly missing?: readonly string[]
  /** Requested scopes that are not RFC 6749 scope-tokens (shortened; at most a few). */
  readonly malformed?: readonly string[]
  /** What the caller is granted for the audience, when it holds a grant for it. */
  readonly granted?: readonly string[]
  /** One sentence, in plain words. */
  readonly detail: string
}

// The requested scope is the caller's input: what reaches a log line is bounded.
const MAX_MALFORMED = 5
const MAX_SHOWN_CHARS = 64

/** The requested scopes that fail the scope-token syntax, split the way `parseScopes` splits them. */
function malformedScopes(requested: string | readonly string[] | undefined): string[] {
  if (requested === undefined) return []
  const tokens = typeof requested === 'string' ? splitScopes(requested) : requested
  return tokens
    .filter((s) => !isScopeToken(s))
    .slice(0, MAX_MALFORMED)
    .map((s) => (s.length > MAX_SHOWN_CHARS ? `${s.slice(0, MAX_SHOWN_CHARS)}…` : s))
}

const quoted = (names: readonly string[]): string => names.map((n) => JSON.stringify(n)).join(', ')
const scopeList = (scopes: readonly string[]): string => (scopes.length === 0 ? '(no scopes)' : scopes.join(' '))

/**
 * Explains `decide(policy, caller, audience, requested)`. Pass the same `requested` to name the malformed
 * scope of a `malformed_scope` denial (the decision itself does not carry it).
 */
export function explainDecision(
  decision: Decision,
  caller: string,
  audience: string,
  requested?: string | readonly string[],
): DecisionExplanation {
  const who = JSON.stringify(caller)
  const to = JSON.stringify(audience)
  if (decision.allowed) {
    return {
      allowed: true,
      scopes: decision.scopes,
      detail: `${who} may get a token for ${to} with ${decision.scopes.length === 0 ? 'no scope' : `scope "${decision.scopes.join(' ')}"`}`,
    }
  }
  const base = { allowed: false, error: decision.error, reason: decision.reason } as const
  const granted = decision.granted === undefined ? {} : { granted: decision.granted }
  switch (decision.reason) {
    case 'unknown_caller':
      return { ...base, detail: `${who} is not a caller in the policy: no entry in "grants" for this name (its certificate CN, or SPIFFE ID with AUTHZ_IDENTITY=spiffe)` }
    case 'unknown_audience':
      return { ...base, detail: `${to} is not listed in the policy's "audiences"` }
    case 'no_grant':
      return { ...base, detail: `${who} holds no grant for ${to}` }
    case 'malformed_scope': {
      const malformed = malformedScopes(requested)
      const what = malformed.length === 0 ? 'a requested scope is' : `the requested scope ${quoted(malformed)} is`
      return {
        ...base,
        ...(malformed.length === 0 ? {} : { malformed }),
        ...granted,
        detail: `${what} not a valid scope-token (RFC 6749 §3.3: printable ASCII, no space, " or \\)`,
      }
    }
    case 'scope_not_granted': {
      const missing = decision.missing ?? []
      return {
        ...base,
        missing,
        ...granted,
        detail: `${who} is not granted ${quoted(missing)} for ${to} (granted: ${scopeList(decision.granted ?? [])})`,
      }
    }
  }
}
