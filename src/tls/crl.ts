/**
 * The dates of a CRL (RFC 5280 §5.1.2.4–5), read with PKI.js as the client trust reads its CRLs: node:crypto
 * has no CRL parser, and a CRL past its nextUpdate makes OpenSSL refuse every client certificate, so an
 * operator wants to see it coming (`authz status`).
 */
import * as pkijs from 'pkijs'

export interface CrlDates {
  /** ms since epoch */
  readonly thisUpdate: number
  /** ms since epoch, or null when the CRL names no next update */
  readonly nextUpdate: number | null
}

/** thisUpdate and nextUpdate of a DER CRL. Throws when `der` is not a CRL. */
export function crlDates(der: Uint8Array): CrlDates {
  // A copy: PKI.js reads the whole ArrayBuffer, and a Buffer may be a view into a larger pool.
  const crl = pkijs.CertificateRevocationList.fromBER(new Uint8Array(der).buffer)
  return { thisUpdate: crl.thisUpdate.value.getTime(), nextUpdate: crl.nextUpdate?.value.getTime() ?? null }
}

