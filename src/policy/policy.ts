/**
 * The service policy: which caller may get a token for which audience, with which scopes. Deny by
 * default. `decide()` is the one function that answers that question, for /token and for the operator
 * tools alike.
 */
import { isScopeToken, SCOPE_TOKEN, SERVICE_NAME, splitScopes } from '@authz/sdk'
import { sha256Hex } from '../util/digest.js'
import { Ajv, type ErrorObject } from 'ajv'
import { AuthzError } from '../errors.js'
import { callerNameProblem, CN_IDENTITY, type IdentityMode } from '../identity/mode.js'

/**
 * A caller name as the schema sees it: printable ASCII, no space. Whether it fits the identity mode (a
 * service name of at most 255 characters for `cn`, a SPIFFE ID of at most 2048 for `spiffe`) is checked
 * after the schema, with a message that says which mode and which rule.
 */
const CALLER_NAME = '^[\\x21-\\x7E]+$'

export const policySchema = {
  $id: 'https://authz.internal/schemas/service-policy.json',
  type: 'object',
  additionalProperties: false,
  required: ['audiences', 'grants'],
  properties: {
    $schema: { type: 'string' },
    description: { type: 'string' },
    audiences: {
      type: 'array',
      uniqueItems: true,
      maxItems: 10000,
      items: { type: 'string', pattern: SERVICE_NAME },
    },
    grants: {
      type: 'object',
      maxProperties: 10000,
      propertyNames: { pattern: CALLER_NAME },
      additionalProperties: {
        type: 'object',
        propertyNames: { pattern: SERVICE_NAME },
        additionalProperties: {
          type: 'array',
          uniqueItems: true,
          maxItems: 1000,
          items: { type: 'string', pattern: SCOPE_TOKEN },
        },
      },
    },
  },
} as const

/** The policy file's shape. */
export interface PolicyDocument {
  audiences: string[]
  grants: Record<string, Record<string, string[]>>
}

/** A validated, immutable policy, indexed for lookups on the hot path. */
export interface Policy {
  readonly audiences: ReadonlySet<string>
  /** caller → audience → granted scopes, in the file's order. */
  readonly grants: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>
  /** SHA-256 of the file's bytes, hex: tells two loaded versions apart in logs and `status`. */
  readonly sha256: string
}

const ajv = new Ajv({ allErrors: false, strict: true })
const validateDocument = ajv.compile<PolicyDocument>(policySchema)

/** Renders a JSON pointer as a JS-ish path an operator can find in the file: grants["a"]["b"][0]. */
function entryPath(instancePath: string): string {
  const parts = instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
  if (parts.length === 0) return '(top level)'
  return parts.map((p, i) => (i === 0 ? p : /^\d+$/.test(p) ? `[${p}]` : `[${JSON.stringify(p)}]`)).join('')
}

function describe(error: ErrorObject): string {
  // A bad key (a caller or audience name) is reported by ajv as a `pattern` error carrying `propertyName`.
  const badName = (error as ErrorObject & { propertyName?: string }).propertyName
  if (badName !== undefined) {
    return `${entryPath(error.instancePath)}: name ${JSON.stringify(badName)} is not a valid service name`
  }
  if (error.keyword === 'propertyNames') {
    const name = (error.params as { propertyName?: string }).propertyName
    return `${entryPath(error.instancePath)}: name ${JSON.stringify(name)} is not a valid service name`
  }
  if (error.keyword === 'additionalProperties') {
    const extra = (error.params as { additionalProperty?: string }).additionalProperty
    return `${entryPath(error.instancePath)}: unknown field ${JSON.stringify(extra)}`
  }
  if (error.keyword === 'pattern') {
    return `${entryPath(error.instancePath)}: ${error.instancePath.startsWith('/grants') ? 'not a valid scope (RFC 6749 scope-token)' : 'not a valid service name'}`
  }
  return `${entryPath(error.instancePath)}: ${error.message ?? 'invalid'}`
}

/**
 * Parses and validates a policy file's text; its callers must be names of the identity mode's kind (CNs
 * by default). Throws AuthzError `ERR_POLICY_INVALID` whose message names the bad entry.
 */
export function parsePolicy(text: string, source = 'policy', identity: IdentityMode = CN_IDENTITY): Policy {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw new AuthzError('ERR_POLICY_INVALID', `${source}: not valid JSON (${(err as Error).message})`)
  }
  if (!validateDocument(doc)) {
    const first = validateDocument.errors?.[0]
    throw new AuthzError('ERR_POLICY_INVALID', `${source}: ${first === undefined ? 'invalid' : describe(first)}`)
  }
  const audiences = new Set(doc.audiences)
  const grants = new Map<string, Map<string, readonly string[]>>()
  for (const [caller, byAudience] of Object.entries(doc.grants)) {
    const problem = callerNameProblem(identity, caller)
    if (problem !== undefined) throw new AuthzError('ERR_POLICY_INVALID', `${source}: grants[${JSON.stringify(caller)}]: caller ${problem}`)
    const entries = new Map<string, readonly string[]>()
    for (const [audience, scopes] of Object.entries(byAudience)) {
      if (!audiences.has(audience)) {
        throw new AuthzError(
          'ERR_POLICY_INVALID',
          `${source}: grants[${JSON.stringify(caller)}][${JSON.stringify(audience)}]: audience is not listed in "audiences"`,
        )
      }
      entries.set(audience, Object.freeze([...scopes]))
    }
    grants.set(caller, entries)
  }
  return Object.freeze({
    audiences,
    grants,
    sha256: sha256Hex(text),
  })
}

/** Why a request was refused, in words an operator reads (never sent to the caller). */
export type DenialReason = 'unknown_caller' | 'unknown_audience' | 'no_grant' | 'malformed_scope' | 'scope_not_granted'

export type Decision =
  | { readonly allowed: true; readonly scopes: readonly string[] }
  | {
      readonly allowed: false
      readonly error: 'invalid_client' | 'invalid_target' | 'invalid_scope'
      readonly reason: DenialReason
      /** The requested scopes the caller does not hold (for `scope_not_granted` / `malformed_scope`). */
      readonly missing?: readonly string[]
      /** What the caller does hold for this audience, when it holds a grant. */
      readonly granted?: readonly string[]
    }

/**
 * Splits a requested scope (a space-separated string or an array of scope-tokens) into distinct tokens, in
 * order. Returns null when a token is malformed.
 */
export function parseScopes(requested: string | readonly string[] | undefined): string[] | null {
  if (requested === undefined) return []
  const tokens = typeof requested === 'string' ? splitScopes(requested) : requested
  // A Set keeps this linear in the number of tokens (a 4 KiB scope string holds ~2,000 of them).
  const out = new Set<string>()
  for (const token of tokens) {
    if (!isScopeToken(token)) return null
    out.add(token)
  }
  return [...out]
}

/**
 * The policy decision for (caller, audience, requested scopes). Checks run in the wire order of
 * precedence: invalid_client, then invalid_target, then invalid_scope. Granted scopes are the requested
 * ones when every one is granted, or all granted ones when none is requested.
 */
export function decide(
  policy: Policy,
  caller: string,
  audience: string,
  requested: string | readonly string[] | undefined,
): Decision {
  const callerGrants = policy.grants.get(caller)
  if (callerGrants === undefined) return { allowed: false, error: 'invalid_client', reason: 'unknown_caller' }
  if (!policy.audiences.has(audience)) return { allowed: false, error: 'invalid_target', reason: 'unknown_audience' }
  const granted = callerGrants.get(audience)
  if (granted === undefined) return { allowed: false, error: 'invalid_target', reason: 'no_grant' }
  const scopes = parseScopes(requested)
  if (scopes === null) {
    return { allowed: false, error: 'invalid_scope', reason: 'malformed_scope', granted }
  }
  if (scopes.length === 0) return { allowed: true, scopes: granted }
  const grantedSet = new Set(granted)
  const missing = scopes.filter((s) => !grantedSet.has(s))
  if (missing.length > 0) return { allowed: false, error: 'invalid_scope', reason: 'scope_not_granted', missing, granted }
  return { allowed: true, scopes }
}

/** Is this caller (CN or SPIFFE ID) one the policy knows? (checked before the body is even parsed) */
export function isKnownCaller(policy: Policy, caller: string): boolean {
  return policy.grants.has(caller)
}
