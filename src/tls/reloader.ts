/**
 * The main listener's TLS material (server certificate and key, client CA bundle, CRLs), reloaded on file
 * change and on SIGHUP with `setSecureContext`: new handshakes use the new material. When the client CA
 * bundle or the CRL changed, `onTrustChange` retires the connections opened before (see
 * retireConnections in app.ts); a new server certificate alone leaves them open. A new set that does not load (bad PEM, a key that does not match the
 * certificate, an unreadable file) is reported and the previous one stays in force.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { createSecureContext, type Server as TlsServer } from 'node:tls'
import { secureContextOptions, type TlsMaterial } from '../app.js'
import type { TlsFiles } from '../config.js'
import { ConfigError } from '../errors.js'
import { ReportOnce, Serial, type ReloadResult } from '../util/report-once.js'
import { watchDir, type Watcher } from '../util/watch.js'

async function readNamed(variable: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw new ConfigError(variable, `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

/** Reads the TLS files; a ConfigError names the variable of a file that cannot be read. */
export async function readTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  return {
    cert: await readNamed('AUTHZ_TLS_CERT', files.cert),
    key: await readNamed('AUTHZ_TLS_KEY', files.key),
    clientCa: await readNamed('AUTHZ_CLIENT_CA', files.clientCa),
    crl: files.crl === undefined ? undefined : await readNamed('AUTHZ_CRL', files.crl),
  }
}

/** Throws a ConfigError when the material cannot make a secure context (the same check OpenSSL makes). */
export function checkTlsMaterial(material: TlsMaterial): void {
  try {
    createSecureContext(secureContextOptions(material))
  } catch (err) {
    const message = (err as Error).message
    const variable = /crl/i.test(message) ? 'AUTHZ_CRL' : /key/i.test(message) ? 'AUTHZ_TLS_KEY' : /ca|issuer/i.test(message) ? 'AUTHZ_CLIENT_CA' : 'AUTHZ_TLS_CERT'
    // OpenSSL's message names the failing check, never key bytes.
    throw new ConfigError(variable, `TLS material does not load: ${message}`)
  }
}

function digest(parts: readonly (string | Buffer | undefined)[]): string {
  const hash = createHash('sha256')
  for (const part of parts) hash.update(part ?? '').update('\0')
  return hash.digest('hex')
}

const materialDigest = (m: TlsMaterial): string => digest([m.cert, m.key, m.clientCa, m.crl])
/** What decides who may connect: a change here retires the connections already open. */
const trustDigest = (m: TlsMaterial): string => digest([m.clientCa, m.crl])

export type TlsReloadResult = ReloadResult<ConfigError>

export class TlsReloader {
  readonly #serial = new Serial()
  readonly #files: TlsFiles
  readonly #server: TlsServer
  #current: string
  #trust: string
  readonly #onTrustChange: () => void
  readonly #seen: ReportOnce
  #watchers: Watcher[] = []

  /** `onTrustChange` runs after a new client CA bundle or CRL is in force (to retire open connections). */
  constructor(files: TlsFiles, server: TlsServer, loaded: TlsMaterial, onTrustChange: () => void = () => undefined) {
    this.#files = files
    this.#server = server
    this.#onTrustChange = onTrustChange
    this.#trust = trustDigest(loaded)
    this.#current = materialDigest(loaded)
    this.#seen = new ReportOnce(this.#current)
  }

  /** Re-reads the files; applies them when they changed and load. `force` reports a still-bad set again. */
  /** One reload at a time, in order (see Serial). */
  reload(force = false): Promise<TlsReloadResult> {
    return this.#serial.run(() => this.#reload(force))
  }

  async #reload(force: boolean): Promise<TlsReloadResult> {
    let material: TlsMaterial
    try {
      material = await readTlsMaterial(this.#files)
    } catch (err) {
      if (!this.#seen.isNew(`error:${(err as Error).message}`, force)) return { changed: false }
      return { changed: false, error: err as ConfigError }
    }
    const hash = materialDigest(material)
    if (!this.#seen.isNew(hash, force)) return { changed: false }
    if (hash === this.#current) return { changed: false }
    try {
      checkTlsMaterial(material)
      this.#server.setSecureContext(secureContextOptions(material))
    } catch (err) {
      return { changed: false, error: err as ConfigError }
    }
    this.#current = hash
    const trust = trustDigest(material)
    if (trust !== this.#trust) {
      this.#trust = trust
      this.#onTrustChange()
    }
    return { changed: true }
  }

  watch(onReload: (result: TlsReloadResult) => void, pollMs = 5000): void {
    this.close()
    const files = [this.#files.cert, this.#files.key, this.#files.clientCa, ...(this.#files.crl === undefined ? [] : [this.#files.crl])]
    const dirs = [...new Set(files.map((f) => dirname(f)))]
    // One poll for all, one event watcher per directory.
    this.#watchers = dirs.map((dir, i) =>
      watchDir(dir, () => void this.reload().then(onReload), i === 0 ? { pollMs } : {}),
    )
  }

  close(): void {
    for (const w of this.#watchers) w.close()
    this.#watchers = []
  }
}
