/**
 * Who is calling: the leaf certificate the TLS handshake verified, and nothing else. Headers and body
 * never take part. Which part of the certificate names the caller is the identity mode (`AUTHZ_IDENTITY`):
 * its one Subject CommonName, or its one SPIFFE ID URI SAN (see svid.ts). The identity is computed once per
 * TLS connection (renegotiation is off, so a connection's certificate cannot change); its validity period is
 * checked again at every request, against the injected clock, because a keep-alive connection or a resumed
 * session outlives the handshake.
 */
import type { PeerCertificate, TLSSocket } from 'node:tls'
import { thumbprintOf } from '@authz/sdk'
import { CN_IDENTITY, type IdentityMode } from './mode.js'
import { svidOf, type SvidRefusal } from './svid.js'

/** id-kp-clientAuth (RFC 5280 §4.2.1.12). */
export const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2'

export interface PeerIdentity {
  /** The caller's name: the certificate's one Subject CN, or its SPIFFE ID. The token's `sub`. */
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
  | SvidRefusal

export type PeerResult =
  | { readonly ok: true; readonly identity: PeerIdentity }
  | { readonly ok: false; readonly reason: PeerRefusal; /** The SPIFFE ID's trust domain, when it is not a trusted one. */ readonly trustDomain?: string }

/** A certificate's validity period, ms since epoch. */
interface Validity {
  readonly notBefore: number
  readonly notAfter: number
}

type Judged = { readonly result: PeerResult; readonly validity: Validity | undefined }

/**
 * Judges a peer certificate as Node reports it, under an identity mode (CN by default), at `now` (ms) when
 * given. Pure: exported for tests and the operator tools.
 */
export function identityOf(cert: PeerCertificate | undefined | null, now?: number, mode: IdentityMode = CN_IDENTITY): PeerResult {
  const { result, validity } = judge(cert, mode)
  return now === undefined || !result.ok ? result : withinValidity(result, validity, now)
}

function withinValidity(result: PeerResult, validity: Validity | undefined, now: number): PeerResult {
  if (validity === undefined) return { ok: false, reason: 'no_certificate' }
  if (now < validity.notBefore) return { ok: false, reason: 'not_yet_valid' }
  if (now > validity.notAfter) return { ok: false, reason: 'expired' }
  return result
}

/** The caller's name under `mode`, or why the certificate names none. */
function nameOf(cert: PeerCertificate & { raw: Buffer }, mode: IdentityMode): { name: string } | { refusal: PeerResult } {
  if (mode.kind === 'spiffe') {
    // The Subject plays no part: SVIDs often have none, and a CN that spells a SPIFFE ID names nobody.
    const svid = svidOf(cert.raw, mode.trustDomains)
    if (!svid.ok) return { refusal: { ok: false, reason: svid.reason, ...(svid.trustDomain === undefined ? {} : { trustDomain: svid.trustDomain }) } }
    return { name: svid.id }
  }
  const cn: unknown = (cert.subject as unknown as Record<string, unknown> | undefined)?.CN
  if (Array.isArray(cn)) return { refusal: { ok: false, reason: 'several_common_names' } }
  if (typeof cn !== 'string' || cn.trim() === '') return { refusal: { ok: false, reason: 'no_common_name' } }
  return { name: cn }
}

function judge(cert: PeerCertificate | undefined | null, mode: IdentityMode): Judged {
  const refuse = (result: PeerResult): Judged => ({ result, validity: undefined })
  if (cert === undefined || cert === null || cert.raw === undefined) return refuse({ ok: false, reason: 'no_certificate' })
  // A CA certificate is an issuer, never a caller (basicConstraints CA:TRUE).
  if (cert.ca === true) return refuse({ ok: false, reason: 'ca_certificate' })
  const named = nameOf(cert as PeerCertificate & { raw: Buffer }, mode)
  if ('refusal' in named) return refuse(named.refusal)
  // With an EKU extension present, it must allow client authentication; without one, any use is allowed.
  const eku = (cert as PeerCertificate & { ext_key_usage?: string[] }).ext_key_usage
  if (Array.isArray(eku) && !eku.includes(CLIENT_AUTH_OID)) return refuse({ ok: false, reason: 'not_for_client_auth' })
  const notBefore = Date.parse(cert.valid_from)
  const notAfter = Date.parse(cert.valid_to)
  return {
    result: { ok: true, identity: Object.freeze({ subject: named.name, thumbprint: thumbprintOf(cert.raw) }) },
    // Unknown dates fail every check against a clock.
    validity: Number.isFinite(notBefore) && Number.isFinite(notAfter) ? { notBefore, notAfter } : undefined,
  }
}

/**
 * The identities of an app's TLS connections under one identity mode. A certificate is judged once per
 * connection (`onRefused` hears of each refusal then, not at every request on it); its validity period at
 * every call.
 */
export class PeerJudge {
  readonly mode: IdentityMode
  readonly #cache = new WeakMap<TLSSocket, Judged>()
  readonly #onRefused: ((refusal: PeerResult & { ok: false }) => void) | undefined

  constructor(mode: IdentityMode = CN_IDENTITY, onRefused?: (refusal: PeerResult & { ok: false }) => void) {
    this.mode = mode
    this.#onRefused = onRefused
  }

  /** The caller's identity on this TLS connection at `now` (ms). */
  identify(socket: TLSSocket, now: number): PeerResult {
    let judged = this.#cache.get(socket)
    if (judged === undefined) {
      judged =
        socket.authorized !== true
          ? { result: { ok: false, reason: 'not_authorized' }, validity: undefined }
          : judge(typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate(false) : undefined, this.mode)
      this.#cache.set(socket, judged)
      if (!judged.result.ok) this.#onRefused?.(judged.result)
    }
    return judged.result.ok ? withinValidity(judged.result, judged.validity, now) : judged.result
  }
}
