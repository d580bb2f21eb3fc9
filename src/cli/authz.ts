/**
 * `npm run authz -- <verb>`: the operator's questions about a running install, answered with the server's
 * own code. `explain` evaluates the live policy with the `decide()` /token uses; `policy check` validates
 * with the server's parser; `token inspect` checks a token the way a verifier would (RS256 or ES256, the algorithm of its key) and says
 * which check fails; `status` reads keys, policy and TLS files and asks the ops listener. Reads the same
 * AUTHZ_* variables as the server. Exit codes: 0 ok, 1 failure or denied, 2 usage.
 */
import { systemClock, type Clock } from '../clock.js'
import { explain } from './authz/explain.js'
import { policyCheck } from './authz/policy-check.js'
import { status } from './authz/status.js'
import { tokenInspect, type AuthzIo } from './authz/token-inspect.js'
import { processIo, runCli, withSubVerb, type Cli } from './runner.js'

export type { AuthzIo } from './authz/token-inspect.js'

export const AUTHZ_USAGE = `usage: authz <verb>

  explain --caller <cn or SPIFFE ID> --audience <aud> [--scope "<a b>"] [--json]
      what POST /token answers this caller under the live policy (AUTHZ_POLICY), and why
  policy check <file> [--against <current file>] [--json]
      validate a policy file; with --against, the grants the change adds and removes
  token inspect <token|-> [--jwks <url> [--ca <pem>] [--client-cert <pem> --client-key <pem>]] [--cert <pem>] [--json]
      decode a token (never its signature) and check it against the local keys (AUTHZ_KEYS_DIR) or a JWKS;
      --cert: the caller's certificate, checked against the token's cnf.x5t#S256 binding
  status [--json]
      keys, policy, TLS files, and whether the ops listener's /readyz answers

Reads the same AUTHZ_* variables as the server. Exit codes: 0 ok, 1 failure or denied, 2 usage.`

const AUTHZ_CLI: Cli<AuthzIo> = {
  name: 'authz',
  usage: AUTHZ_USAGE,
  verbs: {
    explain,
    policy: withSubVerb('policy', 'check', 'policy check <file>', policyCheck),
    token: withSubVerb('token', 'inspect', 'token inspect <token|->', tokenInspect),
    status,
  },
}

/** Runs one CLI invocation; returns the exit code. */
export async function runAuthzCli(argv: string[], env: NodeJS.ProcessEnv, io: AuthzIo = processIo, clock: Clock = systemClock): Promise<number> {
  return runCli(AUTHZ_CLI, argv, { env, io, clock })
}
