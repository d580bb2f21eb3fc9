/**
 * `keys revoke <kid> [--against <jwks-url>]`: emergency: unpublish a key now (never republishes another one).
 * With --against, judged by the live servers' clock; without it, refused when this machine's clock is
 * behind the directory's timeline.
 */
import { revokeKey } from '../../keys/admin.js'
import { EXIT_OK, parse, usageError, type CliContext } from '../runner.js'
import { formatDuration, iso } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'
import { reportLeftovers } from './leftovers.js'
import { AGAINST_OPTIONS, checkTimeline, liveSide, reportClock } from './live.js'

/** An RFC 7638 thumbprint: 43 base64url characters. */
const KID_RE = /^[A-Za-z0-9_-]{43}$/

export async function revoke(args: string[], { env, io, clock, newKey }: CliContext): Promise<number> {
  // A kid is base64url and may start with '-': take kids out before option parsing reads one as a flag.
  const kids = args.filter((a) => KID_RE.test(a))
  const { values, positionals } = parse({ args: args.filter((a) => !KID_RE.test(a)), options: AGAINST_OPTIONS, strict: true, allowPositionals: true })
  positionals.push(...kids)
  if (positionals.length !== 1) throw usageError('revoke takes exactly one kid')
  const live = await liveSide(values, clock)
  const options = keysOptions(toolConfig(env), live?.clock ?? clock, newKey)
  reportClock(io, clock, live)
  const result = await revokeKey(options, positionals[0] as string, live === undefined ? (m) => checkTimeline(m, clock.now()) : undefined)
  reportLeftovers(result.leftovers, io)
  io.out(`revoked ${result.revoked.kid}: removed from the manifest; every replica unpublishes it on its next reload`)
  io.out(
    `tokens signed by ${result.revoked.kid} in the last ${formatDuration(options.timing.tokenTtl * 1000)} (the unexpired ones) now fail at every verifier once it refetches the JWKS (at most ${formatDuration(options.timing.jwksMaxAge * 1000)}, its max-age)`,
  )
  if (result.wasActive && result.nowActive !== undefined) {
    io.out(`${result.revoked.kid} was the active key: ${result.nowActive.kid} ${result.created ? '(new)' : '(was next)'} signs from now on`)
  } else if (result.heir !== undefined && result.heir.activatesAt > clock.now()) {
    io.out(`${result.heir.kid} ${result.created ? '(new)' : ''} takes its place in the timeline: signs from ${iso(result.heir.activatesAt)}`.replace('  ', ' '))
  }
  return EXIT_OK
}
