/**
 * What `authz status` reports: the keys and the policy as the server would load them, the TLS files and
 * their expiry (CRLs: their next update), and whether the ops listener's /readyz answers. Each part reports
 * its own failure; reading one never stops the others.
 */
import { X509Certificate } from 'node:crypto'
import { Agent as HttpAgent } from 'node:http'
import { join } from 'node:path'
import type { Clock } from '../../clock.js'
import type { Config } from '../../config.js'
import { statusesOf } from '../../keys/admin.js'
import { loadKeyset } from '../../keys/keyset.js'
import type { KeyState } from '../../keys/lifecycle.js'
import { readManifest } from '../../keys/manifest.js'
import { PolicyStore } from '../../policy/store.js'
import { httpRequestText } from '@authz/sdk'
import { crlDates } from '../../tls/crl.js'
import { pemBlocks } from '../../tls/trust.js'
import { MiB, readFailure, readRegularFile } from '../../util/read-file.js'
import { failure } from '../runner.js'
import { iso, isoOrNull } from '../time.js'
import { keysOptions } from '../tool-config.js'

export interface KeyRow {
  readonly kid: string
  readonly state: KeyState
  readonly activatesAt: string
  readonly retiredAt: string | null
  readonly prunableAt: string | null
}

export type KeysStatus =
  | {
      readonly dir: string
      readonly ok: true
      /** The kid that signs now; null: /token answers 503. */
      readonly active: string | null
      readonly nextActivation: string | null
      readonly keys: readonly KeyRow[]
      readonly revoked: readonly { readonly kid: string; readonly revokedAt: string }[]
    }
  | { readonly dir: string; readonly ok: false; readonly error: string }

export type PolicyStatus =
  | { readonly path: string; readonly ok: true; readonly sha256: string; readonly callers: number; readonly audiences: number }
  | { readonly path: string; readonly ok: false; readonly error: string }

export interface CertificateInfo {
  readonly subject: string
  readonly notAfter: string
  readonly daysLeft: number
}

/** A CRL's dates; all null when the block is not a readable CRL. */
export interface CrlInfo {
  readonly thisUpdate: string | null
  readonly nextUpdate: string | null
  readonly daysLeft: number | null
}

export interface FileStatus {
  /** The variable that names the file, or what the dev file is. */
  readonly name: string
  readonly path: string
  readonly present: boolean
  readonly error?: string
  readonly certificates?: readonly CertificateInfo[]
  readonly crls?: readonly CrlInfo[]
}

export interface TlsStatus {
  /** configured: AUTHZ_TLS_* set; dev: the dev PKI under the keys directory; missing: the server will not start. */
  readonly mode: 'configured' | 'dev' | 'missing'
  readonly files: readonly FileStatus[]
}

export interface ServerStatus {
  /** The ops listener's /readyz. */
  readonly url: string
  readonly running: boolean
  readonly status?: number
  /** Its answer, parsed when it is JSON. */
  readonly body?: unknown
  readonly error?: string
}

/** What names callers (AUTHZ_IDENTITY), and from which trust domains in spiffe mode. */
export type IdentityStatus = { readonly mode: 'cn' } | { readonly mode: 'spiffe'; readonly trustDomains: readonly string[] }

/** `status --json`. */
export interface StatusReport {
  readonly now: string
  readonly identity: IdentityStatus
  readonly keys: KeysStatus
  readonly policy: PolicyStatus
  readonly tls: TlsStatus
  readonly server: ServerStatus
}

const DAY_MS = 86_400_000

async function keysStatus(cfg: Config, clock: Clock): Promise<KeysStatus> {
  try {
    const options = keysOptions(cfg, clock)
    const manifest = await readManifest(options.dir)
    const statuses = statusesOf(manifest, options)
    // The server loads every key file the manifest names; so does this check.
    await loadKeyset(options.dir, { passphrase: options.passphrase, token: options.token })
    const next = statuses.find((s) => s.state === 'next')
    return {
      dir: cfg.keysDir,
      ok: true,
      active: statuses.find((s) => s.state === 'active')?.key.kid ?? null,
      nextActivation: next === undefined ? null : iso(next.key.activatesAt),
      keys: statuses.map((s) => ({
        kid: s.key.kid,
        state: s.state,
        activatesAt: iso(s.key.activatesAt),
        retiredAt: isoOrNull(s.retiredAt),
        prunableAt: isoOrNull(s.prunableAt),
      })),
      revoked: manifest.revoked.map((r) => ({ kid: r.kid, revokedAt: iso(r.revokedAt) })),
    }
  } catch (err) {
    return { dir: cfg.keysDir, ok: false, error: failure(err) }
  }
}

async function policyStatus(cfg: Config): Promise<PolicyStatus> {
  try {
    const current = (await PolicyStore.load(cfg.policyPath, cfg.identity)).current
    return { path: cfg.policyPath, ok: true, sha256: current.sha256, callers: current.grants.size, audiences: current.audiences.size }
  } catch (err) {
    return { path: cfg.policyPath, ok: false, error: failure(err) }
  }
}

function crlInfo(der: Uint8Array, now: number): CrlInfo {
  try {
    const { thisUpdate, nextUpdate } = crlDates(der)
    return { thisUpdate: iso(thisUpdate), nextUpdate: isoOrNull(nextUpdate), daysLeft: nextUpdate === null ? null : Math.floor((nextUpdate - now) / DAY_MS) }
  } catch {
    return { thisUpdate: null, nextUpdate: null, daysLeft: null }
  }
}

function certificateInfo(der: Uint8Array, now: number): CertificateInfo {
  const cert = new X509Certificate(der)
  const notAfter = new Date(cert.validTo).getTime()
  return { subject: cert.subject.split('\n').join(', '), notAfter: iso(notAfter), daysLeft: Math.floor((notAfter - now) / DAY_MS) }
}

async function fileStatus(name: string, path: string, kind: 'certificates' | 'crl', now: number): Promise<FileStatus> {
  let text: string
  try {
    // What the server reads, as the server reads it: a FIFO here must not hang `authz status` either.
    text = (await readRegularFile(path, { maxBytes: 64 * MiB })).toString('utf8')
  } catch (err) {
    return { name, path, present: false, error: readFailure(err) }
  }
  try {
    if (kind === 'crl') {
      const blocks = pemBlocks(text, 'X509 CRL')
      if (blocks.length === 0) return { name, path, present: true, error: 'no PEM CRL in the file' }
      return { name, path, present: true, crls: blocks.map((der) => crlInfo(der, now)) }
    }
    const blocks = pemBlocks(text, 'CERTIFICATE')
    if (blocks.length === 0) return { name, path, present: true, error: 'no PEM certificate in the file' }
    return { name, path, present: true, certificates: blocks.map((der) => certificateInfo(der, now)) }
  } catch (err) {
    return { name, path, present: true, error: `unreadable: ${failure(err)}` }
  }
}

/** Where the dev PKI lives (`authz-pki`, and the server in dev mode). */
export const devPkiDir = (cfg: Config): string => join(cfg.keysDir, 'dev-pki')

async function tlsStatus(cfg: Config, now: number): Promise<TlsStatus> {
  if (cfg.tls !== null) {
    const files = [
      fileStatus('AUTHZ_TLS_CERT', cfg.tls.cert, 'certificates', now),
      fileStatus('AUTHZ_CLIENT_CA', cfg.tls.clientCa, 'certificates', now),
      ...(cfg.tls.crl === undefined ? [] : [fileStatus('AUTHZ_CRL', cfg.tls.crl, 'crl', now)]),
    ]
    return { mode: 'configured', files: await Promise.all(files) }
  }
  if (!cfg.dev) return { mode: 'missing', files: [] }
  const dir = devPkiDir(cfg)
  const files = [fileStatus('dev server certificate', join(dir, 'server.pem'), 'certificates', now), fileStatus('dev CA', join(dir, 'ca.pem'), 'certificates', now)]
  return { mode: 'dev', files: await Promise.all(files) }
}

async function serverStatus(cfg: Config): Promise<ServerStatus> {
  // A wildcard bind address is reachable on loopback.
  const host = cfg.opsHost === '0.0.0.0' || cfg.opsHost === '' ? '127.0.0.1' : cfg.opsHost === '::' ? '::1' : cfg.opsHost
  const url = new URL(`http://${host.includes(':') ? `[${host}]` : host}:${cfg.opsPort}/readyz`)
  try {
    const res = await httpRequestText(url, { agent: new HttpAgent({ keepAlive: false }), timeoutMs: 1500 })
    let body: unknown = res.body
    try {
      body = JSON.parse(res.body)
    } catch {
      // not JSON: keep the text
    }
    return { url: url.href, running: true, status: res.status, body }
  } catch (err) {
    return { url: url.href, running: false, error: (err as NodeJS.ErrnoException).code ?? failure(err) }
  }
}

/** Reads every part; `keys.ok` and `policy.ok` say whether the server could start from them. */
export async function statusReport(cfg: Config, clock: Clock): Promise<StatusReport> {
  const now = clock.now()
  const keys = await keysStatus(cfg, clock)
  const policy = await policyStatus(cfg)
  const tls = await tlsStatus(cfg, now)
  const server = await serverStatus(cfg)
  const identity: IdentityStatus = cfg.identity.kind === 'cn' ? { mode: 'cn' } : { mode: 'spiffe', trustDomains: cfg.identity.trustDomains }
  return { now: iso(now), identity, keys, policy, tls, server }
}
