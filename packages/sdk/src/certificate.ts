/** The certificate thumbprint that binds a token to its caller (RFC 8705 §3.1): computed here and nowhere else. */
import { createHash, X509Certificate } from 'node:crypto'
import type { PeerCertificate } from 'node:tls'
import { VerifyError } from './errors.js'

/** A certificate as Node hands it out (TLS peer certificate), as DER bytes, a PEM string or an X509Certificate. */
export type CertificateInput = PeerCertificate | Uint8Array | string | X509Certificate

/** base64url SHA-256 of a certificate's DER: what `cnf.x5t#S256` holds. */
export function thumbprintOf(cert: CertificateInput): string {
  let der: Uint8Array
  if (cert instanceof X509Certificate) der = cert.raw
  else if (typeof cert === 'string') der = new X509Certificate(cert).raw
  else if (cert instanceof Uint8Array) der = cert
  else if (cert.raw !== undefined) der = cert.raw
  else throw new VerifyError('ERR_BINDING_REQUIRED', 'no certificate bytes')
  return createHash('sha256').update(der).digest('base64url')
}

/**
 * The thumbprint of a peer certificate as TLS reports it, or undefined when there is none (Node reports a
 * missing peer certificate as null, undefined or an empty object).
 */
export function peerThumbprintOf(cert: CertificateInput | null | undefined): string | undefined {
  if (cert === undefined || cert === null) return undefined
  if (typeof cert === 'object' && !(cert instanceof Uint8Array) && !(cert instanceof X509Certificate) && cert.raw === undefined) return undefined
  return thumbprintOf(cert)
}
