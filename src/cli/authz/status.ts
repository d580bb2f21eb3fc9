/** `authz status`: keys, policy, TLS files, and whether the ops listener's /readyz answers. */
import { keysCommand } from '../../keys/commands.js'
import { EXIT_FAILURE, EXIT_OK, json, parse, type CliContext, type Io } from '../runner.js'
import { formatDuration } from '../time.js'
import { toolConfig } from '../tool-config.js'
import { devPkiDir, statusReport, type IdentityStatus, type KeyRow, type KeysStatus, type PolicyStatus, type ServerStatus, type TlsStatus } from './status-report.js'

function keyLine(k: KeyRow, now: number): string {
  const when =
    k.state === 'next'
      ? `activates ${k.activatesAt} (in ${formatDuration(Date.parse(k.activatesAt) - now)})`
      : k.state === 'active'
        ? `signing since ${k.activatesAt}`
        : k.state === 'retired'
          ? `retired ${k.retiredAt}, published until ${k.prunableAt}`
          : `unpublished since ${k.prunableAt} (run: ${keysCommand('prune')})`
  return `  ${k.kid}  ${k.state.padEnd(7)}  ${when}`
}

function printKeys(keys: KeysStatus, now: number, io: Io): void {
  if (!keys.ok) {
    io.out(`keys: ${keys.dir}: CANNOT READ: ${keys.error}`)
    return
  }
  const count = keys.keys.length
  const revoked = keys.revoked.length
  io.out(`keys: ${keys.dir} (${count} key${count === 1 ? '' : 's'}${revoked > 0 ? `, ${revoked} revoked` : ''}${keys.active === null ? ', NONE ACTIVE: /token answers 503' : ''})`)
  for (const k of keys.keys) io.out(keyLine(k, now))
  if (count === 0) io.out(`  no keys (run: ${keysCommand('init')})`)
  for (const r of keys.revoked) io.out(`  ${r.kid}  revoked  at ${r.revokedAt}`)
}

function printPolicy(policy: PolicyStatus, identity: IdentityStatus, io: Io): void {
  io.out(
    policy.ok
      ? `policy: ${policy.path} (sha256 ${policy.sha256.slice(0, 16)}…, ${policy.callers} callers, ${policy.audiences} audiences)`
      : `policy: CANNOT READ: ${policy.error}`,
  )
  // Which certificates name which callers: said only when it is not the default.
  if (identity.mode === 'spiffe') io.out(`identity: spiffe: callers are the certificates' SPIFFE IDs (URI SAN), trust domains ${identity.trustDomains.join(', ')}`)
}

function printTls(tls: TlsStatus, devPki: string, io: Io): void {
  io.out(tls.mode === 'dev' ? `tls: dev mode (no AUTHZ_TLS_* set): ${devPki}` : tls.mode === 'missing' ? 'tls: not configured, and AUTHZ_DEV=false: the server will not start' : 'tls:')
  for (const f of tls.files) {
    const head = `  ${f.name}: ${f.path}`
    if (!f.present) io.out(`${head}: missing (${f.error})${tls.mode === 'dev' ? ', made on the first dev start' : ''}`)
    else if (f.error !== undefined) io.out(`${head}: ${f.error}`)
    for (const c of f.certificates ?? []) io.out(`${head}: ${c.subject}, expires ${c.notAfter} (${c.daysLeft < 0 ? 'EXPIRED' : `${c.daysLeft} days left`})`)
    for (const c of f.crls ?? []) {
      io.out(`${head}: readable${c.nextUpdate === null ? '' : `, next update ${c.nextUpdate} (${(c.daysLeft ?? 0) < 0 ? 'OVERDUE: clients are refused' : `${c.daysLeft} days left`})`}`)
    }
  }
}

function printServer(server: ServerStatus, io: Io): void {
  io.out(
    server.running
      ? `server: ${server.url} answers ${server.status}${server.status === 200 ? ' (ready)' : ''}: ${JSON.stringify(server.body)}`
      : `server: not running or not reachable (${server.url}: ${server.error})`,
  )
}

export async function status(args: string[], { env, io, clock }: CliContext): Promise<number> {
  const { values } = parse({ args, options: { json: { type: 'boolean' } }, strict: true })
  const cfg = toolConfig(env)
  const report = await statusReport(cfg, clock)
  const code = report.keys.ok && report.policy.ok ? EXIT_OK : EXIT_FAILURE
  if (values.json === true) {
    io.out(json(report))
    return code
  }
  printKeys(report.keys, Date.parse(report.now), io)
  printPolicy(report.policy, report.identity, io)
  printTls(report.tls, devPkiDir(cfg), io)
  printServer(report.server, io)
  return code
}
