/**
 * `npm run keys -- <verb>`: the signing-key lifecycle for operators. Reads the same AUTHZ_* variables as
 * the server. Exit codes: 0 ok, 1 failure, 2 usage.
 */
import { createPublicKey } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { systemClock, type Clock } from '../clock.js'
import { AuthzError } from '../errors.js'
import { initKeys, pruneKeys, revokeKey, rotateKeys, statusesOf, type KeysAdminOptions } from '../keys/admin.js'
import { safeActivationDelayMs } from '../keys/lifecycle.js'
import { describeLock, lockStatus } from '../keys/lock.js'
import { readManifest } from '../keys/manifest.js'
import { KeyStore } from '../keys/store.js'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, formatDuration, isoOrNull, parse, parseDuration, processIo, toolConfig, type Io } from './args.js'
import { fetchJwks, type RemoteTls } from './remote-jwks.js'

export const KEYS_USAGE = `usage: authz-keys <verb>

  init                                   create the first key, active at once
  rotate [--activate-in <dur>] [--force] publish a new key that signs after <dur> (default 2 x JWKS max-age)
  list [--json]                          every key with its state and instants
  prune                                  remove keys no token can still need
  revoke <kid>                           emergency: unpublish a key now
  export --public [--format jwks|pem]    the public keys a server would publish now (never a private part)
  check --against <jwks-url>             is publishing this directory safe for the live JWKS at <url>?
        [--ca <pem>] [--client-cert <pem> --client-key <pem>] [--json]
                                         exit 1 when it would unpublish a key that may sign now

durations: 90s, 10m, 24h, 7d. Reads AUTHZ_KEYS_DIR, AUTHZ_TOKEN_TTL, AUTHZ_JWKS_MAX_AGE, AUTHZ_KEY_PASSPHRASE.
Every change first removes what an interrupted run left (temp files, key files no manifest names).`

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
  const lock = await lockStatus(options.dir)
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
          lock: lock === null ? null : { ...(lock.owner ?? {}), path: lock.path, ageSeconds: Math.round(lock.ageMs / 1000), stale: lock.stale },
        },
        null,
        2,
      ),
    )
    return
  }
  if (lock !== null) io.out(`lock: ${describeLock(lock)}${lock.stale === null ? '' : ' (stale: the next keys command takes it over)'}`)
  if (statuses.length === 0) {
    io.out(`no keys in ${options.dir} (run: npm run keys -- init)`)
    return
  }
  const rows = [['KID', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRES', 'PRUNABLE AT']]
  for (const s of statuses) rows.push([s.key.kid, s.state, iso(s.key.createdAt), iso(s.key.activatesAt), iso(s.retiredAt), iso(s.prunableAt)])
  for (const line of table(rows)) io.out(line)
  for (const r of manifest.revoked) io.out(`revoked ${r.kid} at ${iso(r.revokedAt)}`)
}

function reportLeftovers(leftovers: readonly string[], io: Io): void {
  if (leftovers.length > 0) io.err(`removed what an interrupted run left: ${leftovers.join(', ')}`)
}

/** The public keys a server reading this directory publishes now: the same JWKS bytes, or SPKI PEM. */
async function exportPublic(options: KeysAdminOptions, format: string, io: Io): Promise<void> {
  const store = await KeyStore.open(options)
  const jwks = store.jwks()
  if (format === 'jwks') {
    io.out(jwks.body.toString('utf8'))
    return
  }
  for (const key of store.statuses().filter((s) => s.state !== 'expired')) {
    const pem = createPublicKey({ key: { ...key.key.publicJwk }, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string
    // Text outside the PEM block is allowed (RFC 7468 §5.2): which key it is, for the reader.
    io.out(`kid: ${key.key.kid} (${key.state}, activates ${iso(key.key.activatesAt)})`)
    io.out(pem.trimEnd())
  }
}

export interface CheckReport {
  readonly safe: boolean
  readonly against: string
  /** Kids the live JWKS has and this directory would keep publishing. */
  readonly kept: string[]
  /** Kids this directory would add to the JWKS. */
  readonly added: string[]
  /** Kids the live JWKS has that this directory would unpublish, and why that is or is not expected. */
  readonly removed: { kid: string; why: 'revoked' | 'expired' | 'unknown' }[]
  /** The key this directory makes sign now, and whether verifiers already know it. */
  readonly active: { kid: string; published: boolean } | null
}

/**
 * Compares what this directory would publish now with a live JWKS. Unsafe when the live JWKS holds a kid
 * that this directory does not know at all: a stale copy would unpublish a key that may sign now, and
 * every token it signed would fail at every verifier.
 */
async function check(options: KeysAdminOptions, against: URL, tls: RemoteTls): Promise<CheckReport> {
  const live = new Set((await fetchJwks(against, tls)).map((k) => k.kid).filter((k): k is string => typeof k === 'string'))
  const manifest = await readManifest(options.dir)
  const statuses = statusesOf(manifest, options)
  const publishing = new Set(statuses.filter((s) => s.state !== 'expired').map((s) => s.key.kid))
  const revoked = new Set(manifest.revoked.map((r) => r.kid))
  const expired = new Set(statuses.filter((s) => s.state === 'expired').map((s) => s.key.kid))
  const removed = [...live]
    .filter((kid) => !publishing.has(kid))
    .map((kid) => ({ kid, why: revoked.has(kid) ? ('revoked' as const) : expired.has(kid) ? ('expired' as const) : ('unknown' as const) }))
  const active = statuses.find((s) => s.state === 'active')?.key.kid
  return {
    safe: removed.every((r) => r.why !== 'unknown'),
    against: against.href,
    kept: [...publishing].filter((kid) => live.has(kid)),
    added: [...publishing].filter((kid) => !live.has(kid)),
    removed,
    active: active === undefined ? null : { kid: active, published: live.has(active) },
  }
}

function printCheck(report: CheckReport, dir: string, io: Io): void {
  io.out(`comparing ${dir} with ${report.against}`)
  for (const kid of report.kept) io.out(`  keeps     ${kid}`)
  for (const kid of report.added) io.out(`  publishes ${kid} (new to verifiers)`)
  for (const r of report.removed) {
    const why = { revoked: 'revoked in this directory: intended', expired: 'expired: no valid token needs it', unknown: 'NOT KNOWN to this directory: it may sign tokens now' }[r.why]
    io.out(`  removes   ${r.kid} (${why})`)
  }
  if (report.active !== null && !report.active.published) {
    io.out(`  note: ${report.active.kid} signs from now on but verifiers have not seen it yet: they fetch it on its first token (one refetch per unknown kid)`)
  }
  io.out(
    report.safe
      ? 'safe: publishing this directory unpublishes no key that may sign now'
      : 'NOT SAFE: this copy is older than what is live; publishing it would unpublish a key that may be signing now. Start again from the live keys.',
  )
}

const readTls = async (values: { ca?: string | undefined; 'client-cert'?: string | undefined; 'client-key'?: string | undefined }): Promise<RemoteTls> => ({
  ...(values.ca === undefined ? {} : { ca: await readFile(values.ca, 'utf8') }),
  ...(values['client-cert'] === undefined ? {} : { cert: await readFile(values['client-cert'], 'utf8') }),
  ...(values['client-key'] === undefined ? {} : { key: await readFile(values['client-key'], 'utf8') }),
})

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
        reportLeftovers(key.leftovers, io)
        io.out(`created key ${key.kid}, active now (${iso(key.activatesAt)})`)
        return EXIT_OK
      }
      case 'rotate': {
        const { values } = parse({ args: rest, options: { 'activate-in': { type: 'string' }, force: { type: 'boolean' } }, strict: true })
        const activateInMs = values['activate-in'] === undefined ? undefined : parseDuration(values['activate-in'])
        const { key, unsafe, leftovers } = await rotateKeys(options, {
          ...(activateInMs === undefined ? {} : { activateInMs }),
          force: values.force === true,
        })
        reportLeftovers(leftovers, io)
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
        const { pruned, leftovers } = await pruneKeys(options)
        reportLeftovers(leftovers, io)
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
        reportLeftovers(result.leftovers, io)
        io.out(`revoked ${result.revoked.kid}: removed from the manifest; every replica unpublishes it on its next reload`)
        io.out(
          `tokens signed by ${result.revoked.kid} in the last ${formatDuration(options.timing.tokenTtl * 1000)} (the unexpired ones) now fail at every verifier once it refetches the JWKS (at most ${formatDuration(options.timing.jwksMaxAge * 1000)}, its max-age)`,
        )
        if (result.wasActive && result.nowActive !== undefined) {
          io.out(`${result.revoked.kid} was the active key: ${result.nowActive.kid} ${result.created ? '(new)' : '(was next)'} signs from now on`)
        }
        return EXIT_OK
      }
      case 'export': {
        const { values } = parse({ args: rest, options: { public: { type: 'boolean' }, format: { type: 'string' } }, strict: true })
        if (values.public !== true) throw new AuthzError('ERR_USAGE', 'export needs --public: private keys never leave the keys directory')
        const format = values.format ?? 'jwks'
        if (format !== 'jwks' && format !== 'pem') throw new AuthzError('ERR_USAGE', '--format is jwks or pem')
        await exportPublic(options, format, io)
        return EXIT_OK
      }
      case 'check': {
        const { values } = parse({
          args: rest,
          options: {
            against: { type: 'string' },
            ca: { type: 'string' },
            'client-cert': { type: 'string' },
            'client-key': { type: 'string' },
            json: { type: 'boolean' },
          },
          strict: true,
        })
        if (values.against === undefined) throw new AuthzError('ERR_USAGE', 'check needs --against <jwks-url>')
        let url: URL
        try {
          url = new URL(values.against)
        } catch {
          throw new AuthzError('ERR_USAGE', '--against must be an http(s) URL')
        }
        if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AuthzError('ERR_USAGE', '--against must be an http(s) URL')
        const report = await check(options, url, await readTls(values))
        if (values.json === true) io.out(JSON.stringify(report, null, 2))
        else printCheck(report, options.dir, io)
        return report.safe ? EXIT_OK : EXIT_FAILURE
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
