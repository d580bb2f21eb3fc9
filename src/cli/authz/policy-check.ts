/**
 * `authz policy check`: validates a policy file with the server's parser, its callers against AUTHZ_IDENTITY
 * (CNs, or SPIFFE IDs of AUTHZ_SPIFFE_TRUST_DOMAINS); with --against, the grants the change adds and removes.
 */
import { readFile } from 'node:fs/promises'
import { AuthzError } from '../../errors.js'
import type { IdentityMode } from '../../identity/mode.js'
import { diffPolicies, type PolicyDiff } from '../../policy/diff.js'
import { parsePolicy, type Policy } from '../../policy/policy.js'
import { EXIT_FAILURE, EXIT_OK, json, parse, usageError, type CliContext } from '../runner.js'
import { toolConfig } from '../tool-config.js'

/** `policy check --json`. */
export type PolicyCheckReport =
  | {
      readonly file: string
      readonly valid: true
      /** The identity mode the callers were checked against (AUTHZ_IDENTITY). */
      readonly identity: 'cn' | 'spiffe'
      readonly sha256: string
      readonly callers: number
      readonly audiences: number
      /** With --against: the current file, and what the checked one changes from it. */
      readonly against?: { readonly file: string; readonly sha256: string }
      readonly diff?: PolicyDiff
    }
  | { readonly file: string; readonly valid: false; readonly code: string; readonly error: string }

function diffLines(diff: PolicyDiff): string[] {
  const lines = [
    ...diff.audiencesAdded.map((a) => `+ audience ${a}`),
    ...diff.audiencesRemoved.map((a) => `- audience ${a}`),
    ...diff.callersAdded.map((c) => `+ caller ${c}`),
    ...diff.callersRemoved.map((c) => `- caller ${c} (its requests become invalid_client)`),
  ]
  const scopes = (list: readonly string[]): string => (list.length === 0 ? '(no scopes)' : list.join(' '))
  for (const g of diff.grants) {
    if (g.change === 'added') lines.push(`+ ${g.caller} → ${g.audience}: ${scopes(g.added)}`)
    else if (g.change === 'removed') lines.push(`- ${g.caller} → ${g.audience}: ${scopes(g.removed)}`)
    else lines.push(`~ ${g.caller} → ${g.audience}: ${[...g.added.map((s) => `+${s}`), ...g.removed.map((s) => `-${s}`)].join(' ')}`)
  }
  return lines
}

async function readPolicyFile(path: string, identity: IdentityMode): Promise<Policy> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new AuthzError('ERR_POLICY_READ', `cannot read policy ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  return parsePolicy(text, path, identity)
}

export async function policyCheck(args: string[], { env, io }: CliContext): Promise<number> {
  const { values, positionals } = parse({
    args,
    options: { against: { type: 'string' }, json: { type: 'boolean' } },
    strict: true,
    allowPositionals: true,
  })
  if (positionals.length !== 1) throw usageError('policy check takes exactly one file')
  const file = positionals[0] as string
  const asJson = values.json === true
  const { identity } = toolConfig(env)
  let policy: Policy
  let current: { file: string; policy: Policy } | undefined
  try {
    policy = await readPolicyFile(file, identity)
    if (values.against !== undefined) current = { file: values.against, policy: await readPolicyFile(values.against, identity) }
  } catch (err) {
    if (!asJson || !(err instanceof AuthzError)) throw err
    const report: PolicyCheckReport = { file, valid: false, code: err.code, error: err.message }
    io.out(json(report))
    return EXIT_FAILURE
  }
  const against = current === undefined ? undefined : { ...current, diff: diffPolicies(current.policy, policy) }
  if (asJson) {
    const report: PolicyCheckReport = {
      file,
      valid: true,
      identity: identity.kind,
      sha256: policy.sha256,
      callers: policy.grants.size,
      audiences: policy.audiences.size,
      ...(against === undefined ? {} : { against: { file: against.file, sha256: against.policy.sha256 }, diff: against.diff }),
    }
    io.out(json(report))
    return EXIT_OK
  }
  const callers = identity.kind === 'spiffe' ? 'callers (SPIFFE IDs)' : 'callers'
  io.out(`${file}: valid (${policy.grants.size} ${callers}, ${policy.audiences.size} audiences, sha256 ${policy.sha256.slice(0, 16)}…)`)
  if (against !== undefined) {
    const lines = diffLines(against.diff)
    io.out(lines.length === 0 ? `no change in audiences or grants against ${against.file}` : `changes against ${against.file}:`)
    for (const line of lines) io.out(`  ${line}`)
  }
  return EXIT_OK
}
