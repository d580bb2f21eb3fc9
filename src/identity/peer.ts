/**
 * Who is calling: the leaf certificate the TLS handshake verified, and nothing else. Headers and body
 * never take part. The identity is computed once per TLS connection (renegotiation is off, so a
 * connection's certificate cannot change); its validity period is checked again at every request, against
 * the injected clock, because a keep-alive connection or a resumed session outlives the handshake.
 */
import type { PeerCertificate, TLSSocket } from 'node:tls'
import { thumbprintOf } from '@authz/sdk'

/** id-kp-clientAuth (RFC 5280 §4.2.1.12). */
export const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2'

export interface PeerIdentity {
  /** The certificate's one Subject CommonName. */
  readonly subject: string
  /** base64url SHA-256 of the certificate's DER: the token's `cnf.x5t#S256`. */
  readonly thumbprint: string
}

export type PeerRefusal =
  | 'no_certificate'
  | 'not_authorized'
  | 'no_common_name'
  | 'several_common_names'
  | 'not_for_client_auth'
  | 'ca_certificate'
  | 'expired'
  | 'not_yet_valid'

export type PeerResult = { readonly ok: true; readonly identity: PeerIdentity } | { readonly ok: false; readonly reason: PeerRefusal }

/** A certificate's validity period, ms since epoch. */
interface Validity {
  readonly notBefore: number
  readonly notAfter: number
}

type Judged = { readonly result: PeerResult; readonly validity: Validity | undefined }

/**
 * Judges a peer certificate as Node reports it, at `now` (ms) when given. Pure: exported for tests and the
 * operator tools.
 */
export function identityOf(cert: PeerCertificate | undefined | null, now?: number): PeerResult {
  const { result, validity } = judge(cert)
  return now === undefined || !result.ok ? result : withinValidity(result, validity, now)
}

function withinValidity(result: PeerResult, validity: Validity | undefined, now: number): PeerResult {
  if (validity === undefined) return { ok: false, reason: 'no_certificate' }
  if (now < validity.notBefore) return { ok: false, reason: 'not_yet_valid' }
  if (now > validity.notAfter) return { ok: false, reason: 'expired' }
  return result
}

function judge(cert: PeerCertificate | undefined | null): Judged {
  const refuse = (reason: PeerRefusal): Judged => ({ result: { ok: false, reason }, validity: undefined })
  if (cert === undefined || cert === null || cert.raw === undefined || cert.subject === undefined) return refuse('no_certificate')
  // A CA certificate is an issuer, never a caller (basicConstraints CA:TRUE).
  if (cert.ca === true) return refuse('ca_certificate')
  const cn: unknown = (cert.subject as unknown as Record<string, unknown>).CN
  if (Array.isArray(cn)) return refuse('several_common_names')
  if (typeof cn !== 'string' || cn.trim() === '') return refuse('no_common_name')
  // With an EKU extension present, it must allow client authentication; without one, any use is allowed.
  const eku = (cert as PeerCertificate & { ext_key_usage?: string[] }).ext_key_usage
  if (Array.isArray(eku) && !eku.includes(CLIENT_AUTH_OID)) return refuse('not_for_client_auth')
  const notBefore = Date.parse(cert.valid_from)
  const notAfter = Date.parse(cert.valid_to)
  return {
    result: { ok: true, identity: Object.freeze({ subject: cn, thumbprint: thumbprintOf(cert.raw) }) },
    // Unknown dates fail every check against a clock.
    validity: Number.isFinite(notBefore) && Number.isFinite(notAfter) ? { notBefore, notAfter } : undefined,
  }
}

const cache = new WeakMap<TLSSocket, Judged>()

/**
 * The caller's identity on this TLS connection at `now` (ms): the certificate is judged once per
 * connection, its validity period at every call.
 */
export function peerIdentity(socket: TLSSocket, now: number): PeerResult {
  let judged = cache.get(socket)
  if (judged === undefined) {
    judged =
      socket.authorized !== true
        ? { result: { ok: false, reason: 'not_authorized' }, validity: undefined }
        : judge(typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate(false) : undefined)
    cache.set(socket, judged)
  }
  return judged.result.ok ? withinValidity(judged.result, judged.validity, now) : judged.result
}
