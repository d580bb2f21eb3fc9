/**
 * `npm run keys -- <verb>`: the signing-key lifecycle for operators, one file per verb under `keys/`. Reads
 * the same AUTHZ_* variables as the server. Exit codes: 0 ok, 1 failure, 2 usage.
 */
import { systemClock, type Clock } from '../clock.js'
import type { NewKey } from '../keys/admin.js'
import { check } from './keys/check.js'
import { exportPublic } from './keys/export.js'
import { init } from './keys/init.js'
import { list } from './keys/list.js'
import { prune } from './keys/prune.js'
import { revoke } from './keys/revoke.js'
import { rotate } from './keys/rotate.js'
import { processIo, runCli, type Cli, type Io } from './runner.js'

export const KEYS_USAGE = `usage: authz-keys <verb>

  init [--alg RS256|ES256] [--store file|pkcs11]
                                         create the first key, active at once
  rotate [--activate-in <dur>] [--force] [--alg RS256|ES256] [--store file|pkcs11]
                                         publish a new key that signs after <dur> (default 2 x JWKS max-age, at least 60s);
                                         without --alg/--store, like the newest key
  list [--json]                          every key with its state and instants
  prune [--against <jwks-url>]           remove keys no token can still need (without --against: expired a day ago)
  revoke <kid> [--against <jwks-url>]    emergency: unpublish a key now
        --against: judge by the live servers' clock (their Date header) and JWKS, not this machine's
        [--ca <pem>] [--client-cert <pem> --client-key <pem>] for an https JWKS
  export --public [--format jwks|pem]    the public keys a server would publish now (never a private part)
  check --against <jwks-url>             is publishing this directory safe for the live JWKS at <url>?
        [--live-manifest <file>] [--ca <pem>] [--client-cert <pem> --client-key <pem>] [--json]
                                         exit 1 when it would unpublish a key that may sign now, or bring
                                         back a key the live side removed (revoked: --live-manifest)

durations: 90s, 10m, 24h, 7d. Reads AUTHZ_KEYS_DIR, AUTHZ_TOKEN_TTL, AUTHZ_JWKS_MAX_AGE, AUTHZ_KEY_PASSPHRASE.
Every change first removes what an interrupted run left (temp files, key files no manifest names).`

const KEYS_CLI: Cli = {
  name: 'authz-keys',
  usage: KEYS_USAGE,
  verbs: { init, rotate, list, prune, revoke, export: exportPublic, check },
}

/** Runs one CLI invocation; returns the exit code. */
export async function runKeysCli(argv: string[], env: NodeJS.ProcessEnv, io: Io = processIo, clock: Clock = systemClock, newKey?: NewKey): Promise<number> {
  return runCli(KEYS_CLI, argv, { env, io, clock, newKey })
}
