/** `authz explain`: what POST /token answers a caller under the live policy, and why, with the `decide()` /token uses. */
import { Ajv } from 'ajv'
import { callerNameProblem, describeIdentity } from '../../identity/mode.js'
import { explainDecision, type DecisionExplanation } from '../../policy/explain.js'
import { decide } from '../../policy/policy.js'
import { PolicyStore } from '../../policy/store.js'
import { tokenRequestSchema } from '../../routes/token.js'
import { EXIT_FAILURE, EXIT_OK, json, parse, usageError, type CliContext } from '../runner.js'
import { formatDuration } from '../time.js'
import { toolConfig } from '../tool-config.js'

/** The body schema of POST /token: an audience or scope it refuses is `invalid_request` before any policy check. */
const validateRequest = new Ajv({ strict: true, coerceTypes: false, useDefaults: false }).compile(tokenRequestSchema)

const STATUS_OF = { invalid_client: 401, invalid_request: 400, invalid_target: 400, invalid_scope: 400 } as const

type Explanation =
  | DecisionExplanation
  | { readonly allowed: false; readonly error: 'invalid_request'; readonly reason: 'malformed_request'; readonly detail: string }

/** `explain --json`: the explanation's fields, the answer /token would give, and the caller's grants. */
export type ExplainReport = Explanation & {
  readonly caller: string
  /** What names callers (AUTHZ_IDENTITY): the caller is a CN or a SPIFFE ID. */
  readonly identity: 'cn' | 'spiffe'
  /** For a caller the policy does not know: why the name cannot be a caller under AUTHZ_IDENTITY, if it cannot. */
  readonly note?: string
  readonly audience: string
  readonly requested: string | null
  /** The token lifetime, seconds (allowed only). */
  readonly expiresIn?: number
  /** The HTTP status of the denial. */
  readonly status?: number
  /** What the caller is granted for the audience, when it holds a grant for it. */
  readonly granted?: readonly string[]
  /** Every grant of the caller by audience; null when the policy does not name it. */
  readonly grants: Readonly<Record<string, readonly string[]>> | null
  readonly policy: { readonly path: string; readonly sha256: string }
}

function grantsLines(grants: ReadonlyMap<string, readonly string[]> | undefined): string[] {
  if (grants === undefined) return ['  (not a caller)']
  if (grants.size === 0) return ['  (none)']
  return [...grants].map(([audience, scopes]) => `  ${audience}: ${scopes.length === 0 ? '(no scopes)' : scopes.join(' ')}`)
}

export async function explain(args: string[], { env, io }: CliContext): Promise<number> {
  const { values } = parse({
    args,
    options: { caller: { type: 'string' }, audience: { type: 'string' }, scope: { type: 'string' }, json: { type: 'boolean' } },
    strict: true,
  })
  const { caller, audience, scope } = values
  if (caller === undefined || audience === undefined) throw usageError('explain needs --caller <cn or SPIFFE ID> and --audience <aud>')
  const cfg = toolConfig(env)
  const store = await PolicyStore.load(cfg.policyPath, cfg.identity)
  const policy = store.current
  const decision = decide(policy, caller, audience, scope)
  // /token refuses an unknown caller before reading the body, then a body that fails its schema.
  const explanation: Explanation =
    (decision.allowed || decision.error !== 'invalid_client') && !validateRequest({ audience, ...(scope === undefined ? {} : { scope }) })
      ? {
          allowed: false,
          error: 'invalid_request',
          reason: 'malformed_request',
          detail: 'the audience or scope does not fit the /token request (audience 1–255 characters, scope at most 4096)',
        }
      : explainDecision(decision, caller, audience, scope)
  const callerGrants = policy.grants.get(caller)
  const forAudience = callerGrants?.get(audience)
  const httpStatus = explanation.allowed ? 200 : STATUS_OF[explanation.error as keyof typeof STATUS_OF]
  // A name that cannot be a caller at all (a SPIFFE ID in cn mode, a CN in spiffe mode, another trust domain).
  const problem = callerGrants === undefined ? callerNameProblem(cfg.identity, caller) : undefined
  const report: ExplainReport = {
    caller,
    identity: cfg.identity.kind,
    ...(problem === undefined ? {} : { note: `${JSON.stringify(caller)} ${problem}` }),
    audience,
    requested: scope ?? null,
    ...explanation,
    ...(explanation.allowed ? { expiresIn: cfg.tokenTtl } : { status: httpStatus }),
    ...('granted' in explanation || forAudience === undefined ? {} : { granted: forAudience }),
    grants: callerGrants === undefined ? null : Object.fromEntries(callerGrants),
    policy: { path: store.path, sha256: policy.sha256 },
  }
  if (values.json === true) {
    io.out(json(report))
    return explanation.allowed ? EXIT_OK : EXIT_FAILURE
  }
  io.out(`decision: ${explanation.allowed ? 'allowed' : 'denied'}`)
  if (explanation.allowed) {
    const scopes = explanation.scopes ?? []
    io.out(`token:    scope ${scopes.length === 0 ? '(none)' : `"${scopes.join(' ')}"`}, lifetime ${cfg.tokenTtl}s (${formatDuration(cfg.tokenTtl * 1000)}, AUTHZ_TOKEN_TTL)`)
  } else {
    io.out(`error:    ${explanation.error} (HTTP ${httpStatus})`)
  }
  io.out(`why:      ${explanation.detail}`)
  if (report.note !== undefined) io.out(`note:     ${report.note}`)
  if ('missing' in explanation && explanation.missing !== undefined) io.out(`missing:  ${explanation.missing.join(' ')}`)
  if ('malformed' in explanation && explanation.malformed !== undefined) io.out(`malformed: ${explanation.malformed.map((s) => JSON.stringify(s)).join(' ')}`)
  if (callerGrants !== undefined) {
    io.out(`granted for ${audience}: ${forAudience === undefined ? '(no grant)' : forAudience.length === 0 ? '(no scopes)' : forAudience.join(' ')}`)
  }
  io.out(`granted overall to ${caller}:`)
  for (const line of grantsLines(callerGrants)) io.out(line)
  io.out(`policy:   ${store.path} (sha256 ${policy.sha256.slice(0, 16)}…)`)
  if (cfg.identity.kind === 'spiffe') io.out(`identity: ${describeIdentity(cfg.identity)}`)
  return explanation.allowed ? EXIT_OK : EXIT_FAILURE
}
