/**
 * `keys prune [--against <jwks-url>]`: remove keys no token can still need. With --against, judged by the
 * live servers' clock (their Date header) and never a key their JWKS still publishes; without it, by this
 * machine's clock, refused when that clock is behind the directory's timeline, and a key is kept for a day
 * after it expired (a clock up to a day ahead cannot remove a key in use).
 */
import { pruneKeys } from '../../keys/admin.js'
import { EXIT_OK, parse, type CliContext } from '../runner.js'
import { formatDuration } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'
import { reportLeftovers } from './leftovers.js'
import { AGAINST_OPTIONS, checkTimeline, liveSide, PRUNE_HOLD_MS, reportClock } from './live.js'

export async function prune(args: string[], { env, io, clock }: CliContext): Promise<number> {
  const { values } = parse({ args, options: AGAINST_OPTIONS, strict: true })
  const live = await liveSide(values, clock)
  const options = keysOptions(toolConfig(env), live?.clock ?? clock)
  reportClock(io, clock, live)
  const { pruned, held, leftovers } = await pruneKeys(
    options,
    live === undefined ? { holdMs: PRUNE_HOLD_MS, check: (m) => checkTimeline(m, clock.now()) } : { published: live.kids },
  )
  reportLeftovers(leftovers, io)
  io.out(pruned.length === 0 ? 'nothing to prune' : `pruned ${pruned.join(', ')}`)
  if (held.length > 0) {
    io.out(
      live === undefined
        ? `kept ${held.join(', ')}: expired less than ${formatDuration(PRUNE_HOLD_MS)} ago by this machine's clock (pass --against <jwks-url> to judge by the servers')`
        : `kept ${held.join(', ')}: still published by ${live.url}`,
    )
  }
  return EXIT_OK
}
