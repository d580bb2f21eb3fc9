/**
 * `npm run keys -- <verb>`: the signing-key lifecycle for operators. Reads the same AUTHZ_* variables as
 * the server. Exit codes: 0 ok, 1 failure, 2 usage.
 */
import { systemClock, type Clock } from '../clock.js'
import { AuthzError } from '../errors.js'
import { initKeys, pruneKeys, readManifest, revokeKey, rotateKeys, statusesOf, type KeysAdminOptions } from '../keys/admin.js'
import { safeActivationDelayMs } from '../keys/lifecycle.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, formatDuration, isoOrNull, parse, parseDuration, processIo, toolConfig, type Io } from './args.js'

export const KEYS_USAGE = `usage: authz-keys <verb>

  init                                   create the first key, active at once
  rotate [--activate-in <dur>] [--force] publish a new key that signs after <dur> (default 2 x JWKS max-age)
  list [--json]                          every key with its state and instants
  prune                                  remove keys no token can still need
  revoke <kid>                           emergency: unpublish a key now

durations: 90s, 10m, 24h, 7d. Reads AUTHZ_KEYS_DIR, AUTHZ_TOKEN_TTL, AUTHZ_JWKS_MAX_AGE, AUTHZ_KEY_PASSPHRASE.`

/** An RFC 7638 thumbprint: 43 base64url characters. */
const KID_RE = /^[A-Za-z0-9_-]{43}$/

const iso = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString())

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? []
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd())
}

async function list(options: KeysAdminOptions, json: boolean, io: Io): Promise<void> {
  const manifest = await readManifest(options.dir)
  const statuses = statusesOf(manifest, options)
  if (json) {
    io.out(
      JSON.stringify(
        {
          now: iso(options.clock.now()),
          keys: statuses.map((s) => ({
            kid: s.key.kid,
            state: s.state,
            createdAt: iso(s.key.createdAt),
            activatesAt: iso(s.key.activatesAt),
            retiredAt: isoOrNull(s.retiredAt),
            prunableAt: isoOrNull(s.prunableAt),
          })),
          revoked: manifest.revoked.map((r) => ({ kid: r.kid, revokedAt: iso(r.revokedAt) })),
        },
        null,
        2,
      ),
    )
    return
  }
  if (statuses.length === 0) {
    io.out(`no keys in ${options.dir} (run: npm run keys -- init)`)
    return
  }
  const rows = [['KID', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRES', 'PRUNABLE AT']]
  for (const s of statuses) rows.push([s.key.kid, s.state, iso(s.key.createdAt), iso(s.key.activatesAt), iso(s.retiredAt), iso(s.prunableAt)])
  for (const line of table(rows)) io.out(line)
  for (const r of manifest.revoked) io.out(`revoked ${r.kid} at ${iso(r.revokedAt)}`)
}

/** Runs one CLI invocation; returns the exit code. */
export async function runKeysCli(argv: string[], env: NodeJS.ProcessEnv, io: Io = processIo, clock: Clock = systemClock): Promise<number> {
  const [verb, ...rest] = argv
  try {
    if (verb === undefined || verb === 'help' || verb === '--help' || verb === '-h') {
      io.out(KEYS_USAGE)
      return verb === undefined ? EXIT_USAGE : EXIT_OK
    }
    const config = toolConfig(env)
    const options: KeysAdminOptions = {
      dir: config.keysDir,
      timing: { tokenTtl: config.tokenTtl, jwksMaxAge: config.jwksMaxAge },
      clock,
      passphrase: config.keyPassphrase,
    }
    switch (verb) {
      case 'init': {
        parse({ args: rest, options: {}, strict: true })
        const key = await initKeys(options)
        io.out(`created key ${key.kid}, active now (${iso(key.activatesAt)})`)
        return EXIT_OK
      }
      case 'rotate': {
        const { values } = parse({ args: rest, options: { 'activate-in': { type: 'string' }, force: { type: 'boolean' } }, strict: true })
        const activateInMs = values['activate-in'] === undefined ? undefined : parseDuration(values['activate-in'])
        const { key, unsafe } = await rotateKeys(options, {
          ...(activateInMs === undefined ? {} : { activateInMs }),
          force: values.force === true,
        })
        io.out(`created key ${key.kid}: published now, signs from ${iso(key.activatesAt)} (in ${formatDuration(key.activatesAt - clock.now())})`)
        if (unsafe) {
          io.err(
            `warning: --force: verifiers that fetched the JWKS less than ${formatDuration(safeActivationDelayMs(options.timing) / 2)} before ${iso(key.activatesAt)} ` +
              `do not know ${key.kid} yet and will reject its tokens until they refetch (on an unknown kid, or when their cache expires)`,
          )
        }
        return EXIT_OK
      }
      case 'list': {
        const { values } = parse({ args: rest, options: { json: { type: 'boolean' } }, strict: true })
        await list(options, values.json === true, io)
        return EXIT_OK
      }
      case 'prune': {
        parse({ args: rest, options: {}, strict: true })
        const pruned = await pruneKeys(options)
        io.out(pruned.length === 0 ? 'nothing to prune' : `pruned ${pruned.join(', ')}`)
        return EXIT_OK
      }
      case 'revoke': {
        // A kid is base64url and may start with '-': take kids out before option parsing reads one as a flag.
        const kids = rest.filter((a) => KID_RE.test(a))
        const { positionals } = parse({ args: rest.filter((a) => !KID_RE.test(a)), options: {}, strict: true, allowPositionals: true })
        positionals.push(...kids)
        if (positionals.length !== 1) throw new AuthzError('ERR_USAGE', 'revoke takes exactly one kid')
        const result = await revokeKey(options, positionals[0] as string)
        io.out(`revoked ${result.revoked.kid}: removed from the manifest; every replica unpublishes it on its next reload`)
        io.out(
          `tokens signed by ${result.revoked.kid} in the last ${formatDuration(options.timing.tokenTtl * 1000)} (the unexpired ones) now fail at every verifier once it refetches the JWKS (at most ${formatDuration(options.timing.jwksMaxAge * 1000)}, its max-age)`,
        )
        if (result.wasActive && result.nowActive !== undefined) {
          io.out(`${result.revoked.kid} was the active key: ${result.nowActive.kid} ${result.created ? '(new)' : '(was next)'} signs from now on`)
        }
        return EXIT_OK
      }
      default:
        throw new AuthzError('ERR_USAGE', `unknown verb ${JSON.stringify(verb)}`)
    }
  } catch (err) {
    if (err instanceof AuthzError && err.code === 'ERR_USAGE') {
      io.err(`authz-keys: ${err.message}`)
      io.err(KEYS_USAGE)
      return EXIT_USAGE
    }
    io.err(`authz-keys: ${(err as Error).message}`)
    return EXIT_FAILURE
  }
}
