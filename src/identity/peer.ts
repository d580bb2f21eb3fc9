/**
 * Who is calling: the leaf certificate the TLS handshake verified, and nothing else. Headers and body
 * never take part. The identity is computed once per TLS connection (renegotiation is off, so a
 * connection's certificate cannot change).
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

export type PeerRefusal = 'no_certificate' | 'not_authorized' | 'no_common_name' | 'several_common_names' | 'not_for_client_auth'

export type PeerResult = { readonly ok: true; readonly identity: PeerIdentity } | { readonly ok: false; readonly reason: PeerRefusal }

/** Judges a peer certificate as Node reports it. Pure: exported for tests and the operator tools. */
export function identityOf(cert: PeerCertificate | undefined | null): PeerResult {
  if (cert === undefined || cert === null || cert.raw === undefined || cert.subject === undefined) {
    return { ok: false, reason: 'no_certificate' }
  }
  const cn: unknown = (cert.subject as unknown as Record<string, unknown>).CN
  if (Array.isArray(cn)) return { ok: false, reason: 'several_common_names' }
  if (typeof cn !== 'string' || cn.trim() === '') return { ok: false, reason: 'no_common_name' }
  // With an EKU extension present, it must allow client authentication; without one, any use is allowed.
  const eku = (cert as PeerCertificate & { ext_key_usage?: string[] }).ext_key_usage
  if (Array.isArray(eku) && !eku.includes(CLIENT_AUTH_OID)) return { ok: false, reason: 'not_for_client_auth' }
  return { ok: true, identity: Object.freeze({ subject: cn, thumbprint: thumbprintOf(cert.raw) }) }
}

const cache = new WeakMap<TLSSocket, PeerResult>()

/** The caller's identity on this TLS connection. */
export function peerIdentity(socket: TLSSocket): PeerResult {
  let result = cache.get(socket)
  if (result === undefined) {
    result =
      socket.authorized !== true
        ? { ok: false, reason: 'not_authorized' }
        : identityOf(typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate(false) : undefined)
    cache.set(socket, result)
  }
  return result
}
