/**
 * Who may connect, as a value: the client CA bundle and the CRLs in force. The TLS handshake applies them
 * to new connections (OpenSSL); this re-applies them to a connection opened under older material, whose
 * certificate must not be trusted because it was trusted once (a CRL that revokes it, a CA that was
 * removed). PKI.js does the path building and revocation checking (RFC 5280 §6), on WebCrypto.
 */
import { webcrypto } from 'node:crypto'
import type { PeerCertificate, TLSSocket } from 'node:tls'
import * as pkijs from 'pkijs'
import type { TlsMaterial } from './options.js'

pkijs.setEngine('node', new pkijs.CryptoEngine({ name: 'node', crypto: webcrypto as never }))

/** The DER bodies of the PEM blocks labelled `label` (RFC 7468) in `text`. */
export function pemBlocks(text: string | Buffer, label: string): Buffer[] {
  const source = typeof text === 'string' ? text : text.toString('latin1')
  const out: Buffer[] = []
  const pattern = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*?)-----END ${label}-----`, 'g')
  for (const match of source.matchAll(pattern)) out.push(Buffer.from((match[1] ?? '').replace(/\s+/g, ''), 'base64'))
  return out
}

const toArrayBuffer = (der: Uint8Array): ArrayBuffer => der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength) as ArrayBuffer

/** The certificates a peer presented, leaf first, as DER (Node links them through issuerCertificate). */
export function presentedChain(socket: TLSSocket): Buffer[] {
  const chain: Buffer[] = []
  const seen = new Set<string>()
  let cert: PeerCertificate | undefined = socket.getPeerCertificate(true)
  while (cert !== undefined && cert.raw !== undefined && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256)
    chain.push(cert.raw)
    cert = (cert as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate
  }
  return chain
}

export class ClientTrust {
  readonly #anchors: readonly pkijs.Certificate[]
  readonly #crls: readonly pkijs.CertificateRevocationList[]

  private constructor(anchors: pkijs.Certificate[], crls: pkijs.CertificateRevocationList[]) {
    this.#anchors = anchors
    this.#crls = crls
  }

  /** Parses the CA bundle and CRLs (already accepted by OpenSSL for the handshake). */
  static from(material: Pick<TlsMaterial, 'clientCa' | 'crl'>): ClientTrust {
    const anchors = pemBlocks(material.clientCa, 'CERTIFICATE').map((der) => pkijs.Certificate.fromBER(toArrayBuffer(der)))
    const crls = material.crl === undefined ? [] : pemBlocks(material.crl, 'X509 CRL').map((der) => pkijs.CertificateRevocationList.fromBER(toArrayBuffer(der)))
    return new ClientTrust(anchors, crls)
  }

  /** True when `chain` (leaf first, DER) leads to an anchor of this trust, valid at `at`, and nothing on it is revoked. */
  async accepts(chain: readonly Uint8Array[], at: Date): Promise<boolean> {
    if (chain.length === 0) return false
    try {
      const engine = new pkijs.CertificateChainValidationEngine({
        trustedCerts: [...this.#anchors],
        // PKI.js validates the *last* of its certificates as the end entity: leaf first, it would check
        // the intermediate above it and pass a revoked leaf.
        certs: chain.map((der) => pkijs.Certificate.fromBER(toArrayBuffer(der))).reverse(),
        crls: [...this.#crls],
        checkDate: at,
      })
      return (await engine.verify()).result === true
    } catch {
      return false
    }
  }
}
