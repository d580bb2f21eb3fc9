/**
 * A service's TLS material — its certificate (chain), private key and the CA bundle it trusts — read from
 * files and re-read when they change, so that certificates renewed on disk (cert-manager, spiffe-helper,
 * a kubelet `..data` swap) take effect without a restart. The files are polled (re-read, compared by
 * content) rather than watched: a symlink swapped under a path is followed, and a file replaced by rename
 * is seen, on every file system. A new set is put in force only when it is whole: the certificate parses,
 * the key is the certificate's, the bundle holds certificates. A read that straddles an update (the new
 * certificate, the old key) is refused and read again at the next poll; the set in force stays meanwhile.
 * Only regular files of at most 1 MiB are read.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto'
import type { SecureContextOptions, Server as TlsServer, TlsOptions } from 'node:tls'
import { thumbprintOf } from './certificate.js'
import { FileReadError, readRegularFile, readRegularFileSync } from './regular-file.js'

/** How often the files are re-read by default, ms (the callee policy's interval too). */
export const TLS_FILES_POLL_MS = 2000
/** The largest file read. */
const MAX_TLS_FILE_BYTES = 1 << 20

/**
 * One set of TLS material: what a connection presents (`cert`, `key`) and trusts (`ca`). Tokens are bound to
 * the certificate: a helper sends a token only over a connection opened with the material it was fetched with.
 */
export interface TlsMaterial {
  readonly cert: string | Buffer
  readonly key: string | Buffer
  readonly ca: string | Buffer
  /** base64url SHA-256 of the leaf certificate (`cnf.x5t#S256` of the tokens fetched with it), when known. */
  readonly thumbprint?: string
  /** The leaf certificate's end of validity, when known. */
  readonly notAfter?: Date
}

/** The three files. */
export interface TlsFilePaths {
  /** The certificate, PEM: the leaf first, then any intermediates (`tls.crt`, `svid.pem`). */
  readonly certFile: string
  /** Its private key, PEM, unencrypted (`tls.key`, `svid_key.pem`). */
  readonly keyFile: string
  /** The CA bundle, PEM: the CAs this service trusts (`ca.crt`, `svid_bundle.pem`). */
  readonly caFile: string
}

export type TlsFilesErrorCode =
  /** A file cannot be read: missing, unreadable, not a regular file, larger than 1 MiB. */
  | 'ERR_TLS_FILES_READ'
  /** The files do not make a usable set: a certificate or bundle that does not parse, a key that is not the certificate's. */
  | 'ERR_TLS_FILES_INVALID'

/** The TLS files cannot be used; the message names the file and why, never a key. */
export class TlsFilesError extends Error {
  readonly code: TlsFilesErrorCode
  readonly path: string
  constructor(code: TlsFilesErrorCode, path: string, message: string) {
    super(`${path}: ${message}`)
    this.name = 'TlsFilesError'
    this.code = code
    this.path = path
  }
}

/** The outcome of a reload that found the files changed. */
export interface TlsReloadEvent {
  /** true: a new set is in force; false: the files changed but were refused (the set in force stays). */
  readonly ok: boolean
  readonly error?: TlsFilesError
  /** The thumbprint and end of validity of the certificate now in force. */
  readonly thumbprint: string
  readonly notAfter: Date
}

export interface TlsFilesOptions {
  /** Re-read the files this often, ms (default 2 s); 0 reads them once. */
  readonly pollMs?: number
  /**
   * Told once per change of the files' content: a new set in force, or a set refused (why). Write your one
   * log line here. It must not throw (a throw is ignored).
   */
  readonly onReload?: (event: TlsReloadEvent) => void
  /**
   * Where renewals (`info`, event `tls_files_renewed`) and refused sets (`warn`, `tls_files_refused`) are
   * logged, one line each, as the Go kit logs them: pino (Fastify's `app.log`) or anything alike.
   */
  readonly logger?: {
    info(fields: Record<string, unknown>, message: string): void
    warn(fields: Record<string, unknown>, message: string): void
  }
}

interface Read {
  readonly cert: Buffer
  readonly key: Buffer
  readonly ca: Buffer
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/** The material of three files' bytes, or why they do not make one. */
function materialOf(paths: TlsFilePaths, read: Read): Required<TlsMaterial> & { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer } {
  const invalid = (path: string, why: string): TlsFilesError => new TlsFilesError('ERR_TLS_FILES_INVALID', path, why)
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(read.cert)
  } catch {
    throw invalid(paths.certFile, 'not a PEM certificate')
  }
  let matches: boolean
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(read.key))
  } catch {
    throw invalid(paths.keyFile, 'not an unencrypted PEM private key')
  }
  if (!matches) throw invalid(paths.keyFile, `not the private key of ${paths.certFile}`)
  const bundle = read.ca.toString('latin1').match(PEM_CERTIFICATE) ?? []
  if (bundle.length === 0) throw invalid(paths.caFile, 'holds no PEM certificate')
  for (const pem of bundle) {
    try {
      new X509Certificate(pem)
    } catch {
      throw invalid(paths.caFile, 'holds a certificate that does not parse')
    }
  }
  return Object.freeze({ ...read, thumbprint: thumbprintOf(leaf), notAfter: new Date(leaf.validTo) })
}

function readError(err: unknown, path: string): TlsFilesError {
  const why = err instanceof FileReadError ? err.why : 'error'
  return new TlsFilesError('ERR_TLS_FILES_READ', path, `cannot read: ${why}`)
}

const same = (a: Read, b: Read): boolean => a.cert.equals(b.cert) && a.key.equals(b.key) && a.ca.equals(b.ca)

/**
 * TLS material from files, kept current. Share one between a service's `TokenClient`, its HTTP and gRPC
 * helpers and its server (`serviceAuth`'s `tls` option): they all follow the same renewal.
 */
export class TlsFiles {
  readonly #paths: TlsFilePaths
  readonly #options: TlsFilesOptions
  readonly #listeners = new Set<(material: TlsMaterial) => void>()
  #current: ReturnType<typeof materialOf>
  /** The bytes last put in force or reported as refused: a refused set is reported once, not at every poll. */
  #seen: Read
  /** Bytes refused once and not reported yet: a read that straddled an update is read again first. */
  #refusedOnce: Read | undefined
  #timer: NodeJS.Timeout | undefined
  #reading: Promise<boolean> | undefined
  #closed = false
  /** The files on disk were refused (reported) and the set in force is older than them. */
  #failing = false
  #serverExtra: SecureContextOptions = {}

  /** Reads the files now; throws a TlsFilesError when they do not make a usable set. Then polls them. */
  constructor(paths: TlsFilePaths, options: TlsFilesOptions = {}) {
    const pollMs = options.pollMs ?? TLS_FILES_POLL_MS
    if (!(Number.isFinite(pollMs) && pollMs >= 0)) throw new TypeError('pollMs must be a finite number of ms, at least 0')
    this.#paths = Object.freeze({ ...paths })
    this.#options = options
    const read = (path: string): Buffer => {
      try {
        return readRegularFileSync(path, MAX_TLS_FILE_BYTES)
      } catch (err) {
        throw readError(err, path)
      }
    }
    this.#seen = { cert: read(paths.certFile), key: read(paths.keyFile), ca: read(paths.caFile) }
    this.#current = materialOf(this.#paths, this.#seen)
    this.#schedule()
  }

  /** The material in force. */
  get current(): TlsMaterial {
    return this.#current
  }

  /** Calls `listener` with each new set put in force; returns the function that stops it. */
  onChange(listener: (material: TlsMaterial) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /**
   * Reads the files now (on SIGHUP, say). Resolves true when they held a new usable set, now in force; false
   * when nothing changed or the new content was refused (the set in force stays; `onReload` is told when the
   * same refused content is read twice in a row).
   */
  reload(): Promise<boolean> {
    this.#reading ??= this.#reload().finally(() => (this.#reading = undefined))
    return this.#reading
  }

  /**
   * Options for an https/TLS server (Fastify's `https`) with this material: client certificates required and
   * verified against the bundle, plus `extra` (`minVersion`, ciphers…), which renewals keep.
   */
  serverOptions(extra: SecureContextOptions = {}): TlsOptions {
    this.#serverExtra = { ...extra }
    return { ...extra, ...this.#pick(this.#current), requestCert: true, rejectUnauthorized: true }
  }

  /**
   * Puts every renewed set in force on `server` for the connections it accepts from then on (Node's
   * `setSecureContext`), with the `extra` options last given to `serverOptions`. Returns the function that
   * stops it. Connections already open keep the certificate they were opened with.
   */
  watchServer(server: Pick<TlsServer, 'setSecureContext'>): () => void {
    return this.onChange((material) => server.setSecureContext({ ...this.#serverExtra, ...this.#pick(material) }))
  }

  /**
   * Two gauges in the Prometheus text format, for a service's own `/metrics` (the Go kit's names):
   * `authz_tls_certificate_expiry_timestamp_seconds` (the certificate in force ends then: alert well
   * before, a renewal that never comes ends there) and `authz_tls_files_reload_failing` (1 while the files
   * on disk are refused), labelled with the certificate file.
   */
  prometheus(): string {
    const label = `{cert="${this.#paths.certFile.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"}`
    return [
      '# HELP authz_tls_certificate_expiry_timestamp_seconds End of validity of the certificate in force, from the TLS files.',
      '# TYPE authz_tls_certificate_expiry_timestamp_seconds gauge',
      `authz_tls_certificate_expiry_timestamp_seconds${label} ${this.#current.notAfter.getTime() / 1000}`,
      '# HELP authz_tls_files_reload_failing 1 while the TLS files on disk are refused; the certificate in force stays.',
      '# TYPE authz_tls_files_reload_failing gauge',
      `authz_tls_files_reload_failing${label} ${this.#failing ? 1 : 0}`,
      '',
    ].join('\n')
  }

  /** Stops polling. The material in force stays readable. */
  close(): void {
    this.#closed = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#listeners.clear()
  }

  #pick(material: TlsMaterial): SecureContextOptions {
    return { cert: material.cert, key: material.key, ca: material.ca }
  }

  #schedule(): void {
    const pollMs = this.#options.pollMs ?? TLS_FILES_POLL_MS
    if (this.#closed || pollMs === 0) return
    this.#timer = setTimeout(() => {
      void this.reload().finally(() => this.#schedule())
    }, pollMs)
    this.#timer.unref()
  }

  async #reload(): Promise<boolean> {
    const { certFile, keyFile, caFile } = this.#paths
    let read: Read
    try {
      const [cert, key, ca] = await Promise.all(
        [certFile, keyFile, caFile].map((path) => readRegularFile(path, MAX_TLS_FILE_BYTES).catch((err: unknown) => Promise.reject(readError(err, path)))),
      )
      read = { cert: cert as Buffer, key: key as Buffer, ca: ca as Buffer }
    } catch (err) {
      // A file missing for a moment (a rename in progress) or for good: reported once per kind of failure.
      this.#refuse(err as TlsFilesError, { cert: Buffer.alloc(0), key: Buffer.alloc(0), ca: Buffer.from((err as TlsFilesError).message) })
      return false
    }
    if (this.#closed || same(read, this.#seen)) return false
    if (same(read, this.#current)) {
      this.#seen = read // back to the set in force: nothing to report
      this.#failing = false
      return false
    }
    let material: ReturnType<typeof materialOf>
    try {
      material = materialOf(this.#paths, read)
    } catch (err) {
      this.#refuse(err as TlsFilesError, read)
      return false
    }
    this.#seen = read
    this.#refusedOnce = undefined
    this.#failing = false
    this.#current = material
    this.#report({ ok: true, thumbprint: material.thumbprint, notAfter: material.notAfter })
    for (const listener of this.#listeners) {
      try {
        listener(material)
      } catch {
        // a listener's fault; the others, and the material in force, stand
      }
    }
    return true
  }

  /**
   * Reports a refused set when the next poll finds the same bytes: files written one after the other
   * (spiffe-helper writes the certificate, then the key) are refused once, read again, and put in force
   * without a false alarm.
   */
  #refuse(error: TlsFilesError, read: Read): void {
    if (same(read, this.#seen)) return
    if (this.#refusedOnce === undefined || !same(read, this.#refusedOnce)) {
      this.#refusedOnce = read
      return
    }
    this.#refusedOnce = undefined
    this.#seen = read
    this.#failing = true
    this.#report({ ok: false, error, thumbprint: this.#current.thumbprint, notAfter: this.#current.notAfter })
  }

  #report(event: TlsReloadEvent): void {
    try {
      const fields = { cert: this.#paths.certFile, x5t: event.thumbprint, not_after: event.notAfter.toISOString() }
      if (event.ok) this.#options.logger?.info({ event: 'tls_files_renewed', ...fields }, 'TLS files renewed; new connections and tokens use the new certificate')
      else this.#options.logger?.warn({ event: 'tls_files_refused', ...fields, error: event.error?.message }, 'TLS files refused; the certificate in force stays')
      this.#options.onReload?.(event)
    } catch {
      // the listener's own fault
    }
  }
}
