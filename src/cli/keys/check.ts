/**
 * `keys check --against <jwks-url>`: is publishing this directory safe for the live JWKS? Exit 1 when it
 * would unpublish a key this directory does not know (a stale copy: that key may sign now).
 */
import { readFile } from 'node:fs/promises'
import { statusesOf } from '../../keys/admin.js'
import { parseManifest, readManifest } from '../../keys/manifest.js'
import { publicationChange, type PublicationChange } from '../../keys/publication.js'
import { fetchJwks, jwksUrl, readRemoteTls, REMOTE_TLS_OPTIONS } from '../remote-jwks.js'
import { EXIT_FAILURE, EXIT_OK, json, parse, usageError, type CliContext, type Io } from '../runner.js'
import { keysOptions, toolConfig } from '../tool-config.js'

/** `check --json`: what publishing the directory would change, against which JWKS. */
export interface CheckReport extends PublicationChange {
  /** The live JWKS URL. */
  readonly against: string
}

const WHY = {
  revoked: 'revoked in this directory: intended',
  expired: 'expired: no valid token needs it',
  unknown: 'NOT KNOWN to this directory: it may sign tokens now',
} as const

function printCheck(report: CheckReport, dir: string, io: Io): void {
  io.out(`comparing ${dir} with ${report.against}`)
  for (const kid of report.kept) io.out(`  keeps     ${kid}`)
  for (const kid of report.added) {
    io.out(
      report.returning.includes(kid)
        ? `  publishes ${kid} (OLDER than a live key and gone from the live JWKS: revoked or pruned there, it would come back)`
        : `  publishes ${kid} (new to verifiers)`,
    )
  }
  for (const r of report.removed) io.out(`  removes   ${r.kid} (${WHY[r.why]})`)
  if (report.active !== null && !report.active.published) {
    io.out(`  note: ${report.active.kid} signs from now on but verifiers have not seen it yet: they fetch it on its first token (one refetch per unknown kid)`)
  }
  io.out(
    report.safe
      ? 'safe: publishing this directory unpublishes no key that may sign now'
      : report.removed.some((r) => r.why === 'unknown')
        ? 'NOT SAFE: this copy is older than what is live; publishing it would unpublish a key that may be signing now. Start again from the live keys.'
        : 'NOT SAFE: this copy is older than what is live; publishing it would bring back a key the live side removed (revoked or pruned). Start again from the live keys.',
  )
}

export async function check(args: string[], { env, io, clock }: CliContext): Promise<number> {
  const options = keysOptions(toolConfig(env), clock)
  const { values } = parse({
    args,
    options: { against: { type: 'string' }, 'live-manifest': { type: 'string' }, ...REMOTE_TLS_OPTIONS, json: { type: 'boolean' } },
    strict: true,
  })
  if (values.against === undefined) throw usageError('check needs --against <jwks-url>')
  const url = jwksUrl(values.against, '--against')
  const tls = await readRemoteTls(values, (path) => readFile(path, 'utf8'))
  const live = (await fetchJwks(url, tls)).map((k) => k.kid).filter((k): k is string => typeof k === 'string')
  const manifest = await readManifest(options.dir)
  // The live directory's manifest (it holds no secret: kids, instants, revoked kids) when the operator has it.
  const liveRevoked = values['live-manifest'] === undefined ? undefined : new Set(parseManifest(await readFile(values['live-manifest'], 'utf8')).revoked.map((r) => r.kid))
  const { safe, ...change } = publicationChange(live, manifest, statusesOf(manifest, options), liveRevoked)
  const report: CheckReport = { safe, against: url.href, ...change }
  if (values.json === true) io.out(json(report))
  else printCheck(report, options.dir, io)
  return report.safe ? EXIT_OK : EXIT_FAILURE
}
