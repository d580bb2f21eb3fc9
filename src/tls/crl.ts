/**
 * The dates of CRLs (RFC 5280 §5.1.2.4–5), read with PKI.js as the client trust reads its CRLs: node:crypto
 * has no CRL parser. A CRL past its nextUpdate makes OpenSSL refuse every client certificate of its issuer
 * (as does one whose thisUpdate is still to come), so authz refuses to load one and watches the one in
 * force (tls/expiry.ts).
 */
import * as pkijs from 'pkijs'
import { pemBlocks } from './trust.js'

export interface CrlDates {
  /** ms since epoch */
  readonly thisUpdate: number
  /** ms since epoch, or null when the CRL names no next update */
  readonly nextUpdate: number | null
}

const parse = (der: Uint8Array): pkijs.CertificateRevocationList =>
  // A copy: PKI.js reads the whole ArrayBuffer, and a Buffer may be a view into a larger pool.
  pkijs.CertificateRevocationList.fromBER(new Uint8Array(der).buffer)

const datesOf = (crl: pkijs.CertificateRevocationList): CrlDates => ({
  thisUpdate: crl.thisUpdate.value.getTime(),
  nextUpdate: crl.nextUpdate?.value.getTime() ?? null,
})

/** thisUpdate and nextUpdate of a DER CRL. Throws when `der` is not a CRL. */
export function crlDates(der: Uint8Array): CrlDates {
  return datesOf(parse(der))
}

/** A CRL that OpenSSL applies: the newest one (latest thisUpdate) of its issuer. */
export interface CrlInForce extends CrlDates {
  /** The issuer's CN (or its whole name when it has none), for messages. */
  readonly issuer: string
}

const COMMON_NAME = '2.5.4.3'

function issuerName(crl: pkijs.CertificateRevocationList): string {
  const attributes = crl.issuer.typesAndValues.map((tv) => ({ type: tv.type, value: String((tv.value as { valueBlock?: { value?: unknown } }).valueBlock?.value ?? '') }))
  return attributes.find((a) => a.type === COMMON_NAME)?.value ?? attributes.map((a) => a.value).join(', ')
}

/**
 * The CRLs of a PEM file that decide at the handshake: per issuer, the one with the latest thisUpdate
 * (OpenSSL prefers the newest CRL of an issuer, so an older one kept in the file beside it does not
 * matter). Throws when a block is not a CRL.
 */
export function crlsInForce(pem: string | Buffer): CrlInForce[] {
  const newest = new Map<string, CrlInForce>()
  for (const der of pemBlocks(pem, 'X509 CRL')) {
    const crl = parse(der)
    const key = Buffer.from(crl.issuer.toSchema().toBER()).toString('hex')
    const dates = datesOf(crl)
    const seen = newest.get(key)
    if (seen === undefined || dates.thisUpdate > seen.thisUpdate) newest.set(key, { issuer: issuerName(crl), ...dates })
  }
  return [...newest.values()]
}
