/**
 * When the TLS material in force stops working: the server certificate chain's and the client CA bundle's
 * earliest notAfter, and the CRLs' nextUpdate. They become gauges (`*_timestamp_seconds`) an alert can
 * see coming. A CRL is refused at start and at reload when OpenSSL would refuse every client under it,
 * and the one in force is watched so the moment it passes its nextUpdate is an error line, not silence.
 *
 * Why an expired CRL fails closed (every client of its issuer refused) with no grace period: that is what
 * OpenSSL does at the handshake, where authz leaves the certificate decision; a grace period would mean
 * taking that decision out of OpenSSL's hands for every handshake. A CRL's nextUpdate is the issuer's
 * promise of when revocations made since will be known; past it, a certificate revoked in the meantime
 * would pass. The expiry is visible days ahead (the gauge, `authz status`), and the remedy, publishing the
 * CRL, is the issuer's routine job.
 */
import { X509Certificate } from 'node:crypto'
import type { Logger } from 'pino'
import type { Clock } from '../clock.js'
import { ConfigError } from '../errors.js'
import { crlsInForce } from './crl.js'
import type { TlsMaterial } from './options.js'
import { pemBlocks } from './trust.js'

/** Instants (ms since epoch) when parts of the TLS material in force stop working; null when unknown or absent. */
export interface MaterialDates {
  /** The earliest notAfter of the chain the server presents (its certificate and any intermediates in the file). */
  readonly serverCertificateNotAfter: number | null
  /** The earliest notAfter in the client CA bundle. */
  readonly clientCaNotAfter: number | null
  /** The earliest nextUpdate of the CRLs in force; null without AUTHZ_CRL (or when none names one). */
  readonly crlNextUpdate: number | null
}

function earliestNotAfter(pem: string | Buffer): number | null {
  const dates = pemBlocks(pem, 'CERTIFICATE')
    .map((der) => Date.parse(new X509Certificate(der).validTo))
    .filter((ms) => Number.isFinite(ms))
  return dates.length === 0 ? null : Math.min(...dates)
}

function earliestNextUpdate(crl: string | Buffer | undefined): number | null {
  if (crl === undefined) return null
  const dates = crlsInForce(crl)
    .map((c) => c.nextUpdate)
    .filter((d): d is number => d !== null)
  return dates.length === 0 ? null : Math.min(...dates)
}

/** The dates of material OpenSSL has accepted (checkTlsMaterial). */
export function materialDates(material: TlsMaterial): MaterialDates {
  return {
    serverCertificateNotAfter: earliestNotAfter(material.cert),
    clientCaNotAfter: earliestNotAfter(material.clientCa),
    crlNextUpdate: earliestNextUpdate(material.crl),
  }
}

const iso = (ms: number): string => new Date(ms).toISOString()

/**
 * Throws a ConfigError naming AUTHZ_CRL, the file and the date when a CRL in force is past its nextUpdate
 * or before its thisUpdate at `now`: OpenSSL would refuse every client certificate of that issuer.
 */
export function checkCrlDates(material: TlsMaterial, file: string | undefined, now: number): void {
  if (material.crl === undefined) return
  let crls
  try {
    crls = crlsInForce(material.crl)
  } catch (err) {
    throw new ConfigError('AUTHZ_CRL', `${file ?? 'CRL'}: not a readable CRL (${(err as Error).message})`)
  }
  for (const crl of crls) {
    if (crl.nextUpdate !== null && crl.nextUpdate <= now) {
      throw new ConfigError(
        'AUTHZ_CRL',
        `${file ?? 'CRL'}: the CRL of ${crl.issuer} is past its nextUpdate ${iso(crl.nextUpdate)}: every client certificate it covers would be refused; publish a fresh CRL`,
      )
    }
    if (crl.thisUpdate > now) {
      throw new ConfigError('AUTHZ_CRL', `${file ?? 'CRL'}: the CRL of ${crl.issuer} is not valid before its thisUpdate ${iso(crl.thisUpdate)} (a clock ahead at the issuer, or behind here): every client certificate it covers would be refused`)
    }
  }
}

/**
 * Watches the nextUpdate of the CRL in force: at that instant (a timer, and every `passed()` call, so a
 * late timer changes nothing) it logs one error line and `passed()` turns true, until a fresh CRL is
 * followed.
 */
export class CrlDeadline {
  readonly #clock: Clock
  readonly #logger: Logger
  readonly #file: string | undefined
  #nextUpdate: number | null = null
  #reported = false
  #timer: NodeJS.Timeout | undefined

  constructor(clock: Clock, logger: Logger, file: string | undefined) {
    this.#clock = clock
    this.#logger = logger
    this.#file = file
  }

  /** The nextUpdate of the CRL now in force (null: none, or no CRL). */
  follow(nextUpdate: number | null): void {
    this.#nextUpdate = nextUpdate
    this.#reported = false
    this.#arm()
  }

  /** True once the CRL in force is past its nextUpdate: OpenSSL refuses every client it covers. */
  passed(): boolean {
    const next = this.#nextUpdate
    if (next === null || this.#clock.now() < next) return false
    if (!this.#reported) {
      this.#reported = true
      this.#logger.error(
        { event: 'crl_expired', file: this.#file, next_update: iso(next) },
        'the CRL in force is past its nextUpdate: every client certificate it covers is refused at the handshake until a fresh CRL is loaded (publish one at AUTHZ_CRL)',
      )
    }
    return true
  }

  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #arm(): void {
    this.close()
    const next = this.#nextUpdate
    if (next === null || this.passed()) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (!this.passed()) this.#arm()
    }, Math.min(next - this.#clock.now(), 2 ** 31 - 1))
    this.#timer.unref()
  }
}
