/**
 * The main listener's TLS material (server certificate and key, client CA bundle, CRLs), reloaded on file
 * change and on SIGHUP with `setSecureContext`: new connections use the new material. When the client CA
 * bundle or the CRL changed, `onTrustChange` receives the new trust, so connections accepted before are
 * checked against it (see connections.ts), and the session-ticket key is replaced, so no session verified
 * under the old material is resumed under the new; a new server certificate alone leaves both as they are.
 * A set that does not load (bad PEM, a key that does not match the certificate, a CRL past its nextUpdate,
 * a file that is not a regular file) is reported, the previous one stays in force, and the reload is
 * retried until it loads.
 */
import { randomBytes } from 'node:crypto'
import { dirname } from 'node:path'
import { createSecureContext, type Server as TlsServer } from 'node:tls'
import type { Clock } from '../clock.js'
import type { TlsFiles } from '../config.js'
import { ConfigError } from '../errors.js'
import { sha256Hex } from '../util/digest.js'
import { MiB, readFailure, readRegularFile } from '../util/read-file.js'
import { Reloader, type ReloadEvent, type ReloadResult } from '../util/reloader.js'
import { checkCrlDates } from './expiry.js'
import { secureContextOptions, type TlsMaterial } from './options.js'
import { ClientTrust } from './trust.js'

/** Certificates, keys and CA bundles are small; a CA's CRL can list many revocations. */
const PEM_MAX_BYTES = MiB
const CRL_MAX_BYTES = 64 * MiB

async function readNamed(variable: string, path: string, maxBytes = PEM_MAX_BYTES): Promise<Buffer> {
  try {
    return await readRegularFile(path, { maxBytes })
  } catch (err) {
    throw new ConfigError(variable, `cannot read ${path} (${readFailure(err)})`)
  }
}

/** Reads the TLS files; a ConfigError names the variable of a file that cannot be read. */
export async function readTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  return {
    cert: await readNamed('AUTHZ_TLS_CERT', files.cert),
    key: await readNamed('AUTHZ_TLS_KEY', files.key),
    clientCa: await readNamed('AUTHZ_CLIENT_CA', files.clientCa),
    crl: files.crl === undefined ? undefined : await readNamed('AUTHZ_CRL', files.crl, CRL_MAX_BYTES),
  }
}

/**
 * Throws a ConfigError when OpenSSL cannot make a secure context of the material, or when it would refuse
 * every client under it (a CRL past its nextUpdate at `now`).
 */
export function checkTlsMaterial(material: TlsMaterial, files: Pick<TlsFiles, 'crl'>, now: number): void {
  try {
    createSecureContext(secureContextOptions(material))
  } catch (err) {
    const message = (err as Error).message
    const variable = /crl/i.test(message) ? 'AUTHZ_CRL' : /key/i.test(message) ? 'AUTHZ_TLS_KEY' : /ca|issuer/i.test(message) ? 'AUTHZ_CLIENT_CA' : 'AUTHZ_TLS_CERT'
    // OpenSSL's message names the failing check, never key bytes.
    throw new ConfigError(variable, `TLS material does not load: ${message}`)
  }
  checkCrlDates(material, files.crl, now)
}

const materialDigest = (m: TlsMaterial): string => sha256Hex(m.cert, m.key, m.clientCa, m.crl)
/** What decides who may connect: a change here retires the connections already open. */
const trustDigest = (m: TlsMaterial): string => sha256Hex(m.clientCa, m.crl)

export type TlsReloadResult = ReloadResult<ConfigError>

export interface TlsReloaderOptions {
  readonly clock: Clock
  /** Runs after a new client CA bundle or CRL is in force. */
  readonly onTrustChange?: (trust: ClientTrust) => void
  /** Runs after any new material is in force. */
  readonly onApplied?: (material: TlsMaterial) => void
}

export class TlsReloader {
  readonly #files: TlsFiles
  readonly #server: TlsServer
  readonly #options: TlsReloaderOptions
  #current: string
  #trust: string
  readonly #reloader: Reloader<ConfigError>
  #unsubscribe: (() => void) | undefined

  constructor(files: TlsFiles, server: TlsServer, loaded: TlsMaterial, options: TlsReloaderOptions) {
    this.#files = files
    this.#server = server
    this.#options = options
    this.#trust = trustDigest(loaded)
    this.#current = materialDigest(loaded)
    this.#reloader = new Reloader({ attempt: () => this.#attempt(), toError: (err) => err as ConfigError })
  }

  /** Since when (ms) the files have failed to load, or undefined while the material in force is theirs. */
  get failingSince(): number | undefined {
    return this.#reloader.failingSince
  }

  /** Re-reads the files; applies them when they changed and load. `force` reports a still-bad set again. */
  reload(force = false): Promise<TlsReloadResult> {
    return this.#reloader.reload(force)
  }

  async #attempt(): Promise<boolean> {
    const material = await readTlsMaterial(this.#files)
    const hash = materialDigest(material)
    if (hash === this.#current) return false
    checkTlsMaterial(material, this.#files, this.#options.clock.now())
    const trustHash = trustDigest(material)
    const trust = trustHash === this.#trust ? undefined : parseTrust(material)
    // From here on, synchronously: a connection is accepted either before all of it or after all of it.
    this.#server.setSecureContext(secureContextOptions(material))
    this.#current = hash
    if (trust !== undefined) {
      // A resumed session skips the certificate check: none verified under the old CA bundle or CRL may
      // resume under the new. (Node 20 happens not to resume sessions across setSecureContext; a new
      // ticket key makes that ours to rely on.)
      this.#server.setTicketKeys(randomBytes(48))
      this.#trust = trustHash
      this.#options.onTrustChange?.(trust)
    }
    this.#options.onApplied?.(material)
    return true
  }

  watch(onEvent: (event: ReloadEvent<ConfigError>) => void, pollMs = 5000): void {
    this.#unsubscribe?.()
    this.#unsubscribe = this.#reloader.onEvent(onEvent)
    const files = [this.#files.cert, this.#files.key, this.#files.clientCa, ...(this.#files.crl === undefined ? [] : [this.#files.crl])]
    this.#reloader.watch(files.map((f) => dirname(f)), pollMs)
  }

  close(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
    this.#reloader.close()
  }
}

function parseTrust(material: TlsMaterial): ClientTrust {
  try {
    return ClientTrust.from(material)
  } catch (err) {
    throw new ConfigError(material.crl === undefined ? 'AUTHZ_CLIENT_CA' : 'AUTHZ_CRL', `cannot parse the client CA bundle or CRL: ${(err as Error).message}`)
  }
}
