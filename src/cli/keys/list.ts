/** `keys list`: every key with its state and instants, the revoked kids, and a held lock. */
import { statusesOf } from '../../keys/admin.js'
import { keysCommand } from '../../keys/commands.js'
import type { KeyState } from '../../keys/lifecycle.js'
import { describeLock, lockStatus, type LockOwner, type LockStatus } from '../../keys/lock.js'
import { readManifest, type KeyStoreKind } from '../../keys/manifest.js'
import type { Alg } from '../../keys/material.js'
import { EXIT_OK, json, parse, type CliContext } from '../runner.js'
import { iso, isoOrNull } from '../time.js'
import { keysOptions, toolConfig } from '../tool-config.js'

/** `list --json`. */
export interface KeysListReport {
  readonly now: string
  readonly keys: readonly {
    readonly kid: string
    readonly state: KeyState
    readonly createdAt: string
    readonly activatesAt: string
    readonly retiredAt: string | null
    readonly prunableAt: string | null
    readonly alg: Alg
    /** `file`, or `pkcs11` with the key pair's label in the token. */
    readonly store: KeyStoreKind
    readonly label?: string
  }[]
  readonly revoked: readonly { readonly kid: string; readonly revokedAt: string }[]
  /** The directory's lock while a keys command holds it (or a killed one left it). */
  readonly lock: (Partial<LockOwner> & { readonly path: string; readonly ageSeconds: number; readonly stale: LockStatus['stale'] }) | null
}

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? []
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd())
}

const cell = (ms: number | null): string => (ms === null ? '-' : iso(ms))

export async function list(args: string[], { env, io, clock }: CliContext): Promise<number> {
  const options = keysOptions(toolConfig(env), clock)
  const { values } = parse({ args, options: { json: { type: 'boolean' } }, strict: true })
  const manifest = await readManifest(options.dir)
  const statuses = statusesOf(manifest, options)
  const lock = await lockStatus(options.dir)
  if (values.json === true) {
    const report: KeysListReport = {
      now: iso(clock.now()),
      keys: statuses.map((s) => ({
        kid: s.key.kid,
        state: s.state,
        createdAt: iso(s.key.createdAt),
        activatesAt: iso(s.key.activatesAt),
        retiredAt: isoOrNull(s.retiredAt),
        prunableAt: isoOrNull(s.prunableAt),
        alg: s.key.alg,
        store: s.key.store,
        ...(s.key.store === 'pkcs11' ? { label: s.key.label } : {}),
      })),
      revoked: manifest.revoked.map((r) => ({ kid: r.kid, revokedAt: iso(r.revokedAt) })),
      lock: lock === null ? null : { ...(lock.owner ?? {}), path: lock.path, ageSeconds: Math.round(lock.ageMs / 1000), stale: lock.stale },
    }
    io.out(json(report))
    return EXIT_OK
  }
  if (lock !== null) io.out(`lock: ${describeLock(lock)}${lock.stale === null ? '' : ' (stale: the next keys command takes it over)'}`)
  if (statuses.length === 0) {
    io.out(`no keys in ${options.dir} (run: ${keysCommand('init')})`)
    return EXIT_OK
  }
  const rows = [['KID', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRES', 'PRUNABLE AT', 'ALG', 'STORE']]
  for (const s of statuses) {
    rows.push([s.key.kid, s.state, iso(s.key.createdAt), iso(s.key.activatesAt), cell(s.retiredAt), cell(s.prunableAt), s.key.alg, s.key.store === 'pkcs11' ? `pkcs11:${s.key.label}` : 'file'])
  }
  for (const line of table(rows)) io.out(line)
  for (const r of manifest.revoked) io.out(`revoked ${r.kid} at ${iso(r.revokedAt)}`)
  return EXIT_OK
}
