/** Runs the operator CLI (`authz`) in-process with an environment, a clock and stdin, capturing its output. */
import { runAuthzCli, type AuthzIo } from '../../src/cli/authz.js'
import type { Clock } from '../../src/clock.js'
import type { Harness } from './harness.js'

export interface Run {
  readonly code: number
  readonly out: string
  readonly err: string
  json<T = Record<string, unknown>>(): T
}

export function cli(env: Record<string, string>, clock?: Clock, stdin?: string) {
  return async (...argv: string[]): Promise<Run> => {
    const out: string[] = []
    const err: string[] = []
    const io: AuthzIo = {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      ...(stdin === undefined ? {} : { readStdin: async () => stdin }),
    }
    const code = await runAuthzCli(argv, env, io, clock)
    const text = out.join('\n')
    return { code, out: text, err: err.join('\n'), json: <T>() => JSON.parse(text) as T }
  }
}

/** The environment that points the CLI at a harness's policy, keys and ops listener. */
export const harnessEnv = (h: Harness, extra: Record<string, string> = {}): Record<string, string> => ({
  AUTHZ_POLICY: h.config.policyPath,
  AUTHZ_KEYS_DIR: h.config.keysDir,
  AUTHZ_OPS_PORT: String(h.opsPort),
  ...extra,
})
