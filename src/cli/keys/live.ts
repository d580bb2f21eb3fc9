/**
 * `prune` and `revoke` against the live side (`--against <jwks-url>`), and the clock rule when they run
 * without it. A key's state is a function of the clock: a keys CLI whose clock is ahead of the servers'
 * sees keys as expired (prunable) or active that the servers still sign with or still need, and one whose
 * clock is behind writes instants the servers have long passed. The servers' clock is the one that counts.
 */
import { readFile } from 'node:fs/promises'
import type { Clock } from '../../clock.js'
import { AuthzError } from '../../errors.js'
import type { Manifest } from '../../keys/manifest.js'
import { fetchLiveJwks, jwksUrl, readRemoteTls, REMOTE_TLS_OPTIONS } from '../remote-jwks.js'
import { usageError, type Io } from '../runner.js'
import { formatDuration, iso } from '../time.js'

/** The options `--against` brings (with the TLS material of an https JWKS). */
export const AGAINST_OPTIONS = { against: { type: 'string' }, ...REMOTE_TLS_OPTIONS } as const

/** How far the directory's own timeline may be ahead of this clock before the clock is called wrong. */
export const TIMELINE_TOLERANCE_MS = 60_000

/** Without --against, prune keeps an expired key this long more (see README: a clock up to this far ahead cannot remove a key in use). */
export const PRUNE_HOLD_MS = 24 * 3_600_000

export interface LiveSide {
  readonly url: string
  /** Kids the live JWKS publishes now. */
  readonly kids: ReadonlySet<string>
  /** The servers' time: their Date header, moved on by the time since it was read. */
  readonly clock: Clock
  /** Servers' time minus this machine's, ms (Date has a resolution of one second). */
  readonly offsetMs: number
}

/** Fetches the live JWKS and the servers' clock named by `--against`; undefined without it. */
export async function liveSide(values: { against?: string | undefined; ca?: string | undefined; 'client-cert'?: string | undefined; 'client-key'?: string | undefined }, clock: Clock): Promise<LiveSide | undefined> {
  if (values.against === undefined) {
    if (values.ca !== undefined || values['client-cert'] !== undefined || values['client-key'] !== undefined) throw usageError('--ca, --client-cert and --client-key are for --against')
    return undefined
  }
  const url = jwksUrl(values.against, '--against')
  const tls = await readRemoteTls(values, (path) => readFile(path, 'utf8'))
  const live = await fetchLiveJwks(url, tls)
  const localAtAnswer = clock.now()
  if (live.date === undefined) throw new AuthzError('ERR_KEYSET_READ', `${url.href} sent no Date header: cannot tell the servers' time`)
  const offsetMs = live.date - localAtAnswer
  return {
    url: url.href,
    kids: new Set(live.keys.map((k) => k.kid).filter((k): k is string => typeof k === 'string')),
    clock: { now: () => clock.now() + offsetMs },
    offsetMs,
  }
}

/** Says which clock the command judges by. */
export function reportClock(io: Io, clock: Clock, live: LiveSide | undefined): void {
  const local = clock.now()
  if (live === undefined) {
    io.out(`judged by this machine's clock (${iso(local)}); when the servers run elsewhere, pass --against <their JWKS URL> to judge by theirs`)
    return
  }
  const off = Math.abs(live.offsetMs) < 2000 ? 'agrees with this machine, within the Date header’s second' : `${formatDuration(Math.abs(live.offsetMs))} ${live.offsetMs > 0 ? 'ahead of' : 'behind'} this machine's`
  io.out(`judged by the servers' clock (${iso(live.clock.now())}, from ${live.url}): ${off}`)
}

/**
 * Refuses to change the directory with a clock that is behind its own timeline: an instant the directory
 * recorded (a key made, retired or revoked) later than now means this clock is wrong, or the directory was
 * written by a machine whose clock is.
 */
export function checkTimeline(manifest: Manifest, now: number): void {
  const instants = [
    ...manifest.keys.flatMap((k) => [k.createdAt, ...(k.retiredAt === undefined ? [] : [k.retiredAt])]),
    ...manifest.revoked.map((r) => r.revokedAt),
  ]
  const newest = Math.max(...instants)
  if (newest > now + TIMELINE_TOLERANCE_MS) {
    throw new AuthzError(
      'ERR_CLOCK',
      `this machine's clock (${iso(now)}) is ${formatDuration(newest - now)} behind the keys directory's own timeline (it recorded ${iso(newest)}): fix the clock, or pass --against <the servers' JWKS URL> to judge by theirs`,
    )
  }
}
