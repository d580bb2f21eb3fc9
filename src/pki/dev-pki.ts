/**
 * A development PKI made with node-forge: a CA, a server certificate for localhost/127.0.0.1, client
 * certificates whose Subject CN is a service name, and X.509-SVIDs (empty subject, one `spiffe://` URI SAN,
 * as SPIRE and Istio issue them). For development and tests only: production certificates come from the
 * organisation's own CA (or SPIRE/cert-manager).
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import forge from 'node-forge'

/** A certificate and its private key, PEM. */
export interface KeyPairPem {
  readonly certPem: string
  readonly keyPem: string
}

export type ExtendedKeyUsage = 'clientAuth' | 'serverAuth' | 'both' | 'none'

/** One subjectAltName entry: a DNS name, an IP address or a URI. */
export type AltName = { readonly dns: string } | { readonly ip: string } | { readonly uri: string }

/** Key usage bits of a leaf (RFC 5280 §4.2.1.3); `none` leaves the extension out. */
export type KeyUsage = 'none' | { readonly digitalSignature?: boolean; readonly keyEncipherment?: boolean; readonly keyAgreement?: boolean; readonly keyCertSign?: boolean; readonly cRLSign?: boolean }

export interface CertOptions {
  /** Subject attributes in order; several `CN` entries make a multi-CN subject (tests); none, an empty subject. */
  readonly subject: readonly { readonly shortName: string; readonly value: string }[]
  readonly notBefore?: Date
  readonly notAfter?: Date
  /** Which EKU extension to include: `none` leaves the extension out. */
  readonly eku?: ExtendedKeyUsage
  readonly altNames?: readonly AltName[]
  /** Each list is one more subjectAltName extension (tests: a certificate with two). */
  readonly extraAltNames?: readonly (readonly AltName[])[]
  /** A leaf's key usage (default digitalSignature + keyEncipherment). */
  readonly keyUsage?: KeyUsage
  readonly isCa?: boolean
  readonly keyBits?: number
  /** Certify this private key (PKCS#8 PEM) instead of a new one: tests that make many certificates. */
  readonly keyPem?: string
}

const DAY_MS = 86_400_000

let presetKeys: string[] = []

/**
 * Tests: certify these RSA-2048 private keys (PKCS#8 PEM, each used once, in order) before generating new
 * ones. Generating an RSA key is most of what a certificate costs, and a test suite makes hundreds.
 */
export function useKeysForCertificates(pems: readonly string[]): void {
  presetKeys = [...pems]
}

function newKeyPair(bits: number, existing?: string): { privatePem: string; forgeKey: forge.pki.rsa.PrivateKey; forgePublic: forge.pki.rsa.PublicKey } {
  const key = existing ?? (bits === 2048 ? presetKeys.shift() : undefined)
  // Native key generation: forge's pure-JS RSA is far slower.
  const { privateKey, publicKey } =
    key === undefined
      ? generateKeyPairSync('rsa', { modulusLength: bits, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
      : { privateKey: key, publicKey: createPublicKey(key).export({ type: 'spki', format: 'pem' }) as string }
  return {
    privatePem: privateKey,
    forgeKey: forge.pki.privateKeyFromPem(privateKey),
    forgePublic: forge.pki.publicKeyFromPem(publicKey),
  }
}

function serialNumber(): string {
  // Positive and minimal in DER: a first byte in 0x40–0x7f needs no sign padding and is never a
  // superfluous leading zero (OpenSSL rejects both). 16 bytes; RFC 5280 allows up to 20 octets.
  const bytes = randomBytes(16)
  bytes[0] = 0x40 | ((bytes[0] as number) & 0x3f)
  return bytes.toString('hex')
}

function altNamesExtension(names: readonly AltName[], critical: boolean): object {
  return {
    name: 'subjectAltName',
    // RFC 5280 §4.1.2.6: with an empty subject, the SAN extension is critical.
    critical,
    altNames: names.map((a) => ('dns' in a ? { type: 2, value: a.dns } : 'ip' in a ? { type: 7, ip: a.ip } : { type: 6, value: a.uri })),
  }
}

function keyUsageExtension(usage: KeyUsage = { digitalSignature: true, keyEncipherment: true }): object[] {
  return usage === 'none' ? [] : [{ name: 'keyUsage', critical: true, ...usage }]
}

function ekuExtension(eku: ExtendedKeyUsage): object[] {
  if (eku === 'none') return []
  return [
    {
      name: 'extKeyUsage',
      clientAuth: eku === 'clientAuth' || eku === 'both',
      serverAuth: eku === 'serverAuth' || eku === 'both',
    },
  ]
}

/** A certificate signed by `issuer` (or self-signed when `issuer` is undefined). */
export function createCertificate(options: CertOptions, issuer?: KeyPairPem): KeyPairPem {
  const now = Date.now()
  const pair = newKeyPair(options.keyBits ?? 2048, options.keyPem)
  const cert = forge.pki.createCertificate()
  cert.publicKey = pair.forgePublic
  cert.serialNumber = serialNumber()
  cert.validity.notBefore = options.notBefore ?? new Date(now - 5 * 60_000)
  cert.validity.notAfter = options.notAfter ?? new Date(now + 365 * DAY_MS)
  const subject = options.subject.map((a) => ({ shortName: a.shortName, value: a.value }))
  cert.setSubject(subject)
  const extensions: object[] = []
  if (options.isCa === true) {
    cert.setIssuer(subject)
    extensions.push(
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    )
  } else {
    if (issuer === undefined) throw new TypeError('a leaf certificate needs an issuer')
    extensions.push({ name: 'basicConstraints', cA: false }, ...keyUsageExtension(options.keyUsage), ...ekuExtension(options.eku ?? 'clientAuth'))
  }
  for (const names of [options.altNames ?? [], ...(options.extraAltNames ?? [])]) {
    if (names.length > 0) extensions.push(altNamesExtension(names, subject.length === 0))
  }
  let signingKey = pair.forgeKey
  if (issuer !== undefined) {
    const issuerCert = forge.pki.certificateFromPem(issuer.certPem)
    cert.setIssuer(issuerCert.subject.attributes)
    extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: issuerCert.generateSubjectKeyIdentifier().getBytes() })
    signingKey = forge.pki.privateKeyFromPem(issuer.keyPem)
  }
  cert.setExtensions(extensions)
  cert.sign(signingKey, forge.md.sha256.create())
  return { certPem: forge.pki.certificateToPem(cert), keyPem: pair.privatePem }
}

/** A self-signed dev CA (5 years). */
export function createCa(commonName = 'authz dev CA', options: Partial<CertOptions> = {}): KeyPairPem {
  return createCertificate({ subject: [{ shortName: 'CN', value: commonName }], isCa: true, notAfter: new Date(Date.now() + 5 * 365 * DAY_MS), ...options })
}

/** A server certificate for the given host names and IPs, signed by `ca`. */
export function createServerCert(ca: KeyPairPem, hosts: readonly string[] = ['localhost', '127.0.0.1', '::1']): KeyPairPem {
  return createCertificate(
    {
      subject: [{ shortName: 'CN', value: hosts[0] ?? 'localhost' }],
      eku: 'serverAuth',
      altNames: hosts.map((h) => (/^[\d.]+$|:/.test(h) ? { ip: h } : { dns: h })),
    },
    ca,
  )
}

/** A client certificate (EKU clientAuth) with Subject CN `commonName`, signed by `ca`. */
export function createClientCert(ca: KeyPairPem, commonName: string, options: Partial<CertOptions> = {}): KeyPairPem {
  return createCertificate({ subject: [{ shortName: 'CN', value: commonName }], eku: 'clientAuth', ...options }, ca)
}

/**
 * An X.509-SVID (X509-SVID.md): empty subject, one critical URI SAN `spiffeId`, CA:FALSE, key usage
 * digitalSignature, EKU clientAuth + serverAuth, signed by `ca`. `options` shape look-alikes in tests.
 */
export function createSvid(ca: KeyPairPem, spiffeId: string, options: Partial<CertOptions> = {}): KeyPairPem {
  return createCertificate({ subject: [], eku: 'both', keyUsage: { digitalSignature: true }, altNames: [{ uri: spiffeId }], ...options }, ca)
}

/**
 * A CRL (v2, PEM) signed by `ca`, revoking the given certificates. node-forge reads and writes X.509
 * but has no CRL writer, so the TBSCertList is assembled with its ASN.1 module (RFC 5280 §5.1).
 */
export function createCrl(ca: KeyPairPem, revoked: readonly KeyPairPem[], options: { thisUpdate?: Date; nextUpdate?: Date } = {}): string {
  const { asn1 } = forge
  const caCert = forge.pki.certificateFromPem(ca.certPem)
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem)
  const thisUpdate = options.thisUpdate ?? new Date(Date.now() - 60_000)
  const nextUpdate = options.nextUpdate ?? new Date(Date.now() + 7 * DAY_MS)
  const time = (d: Date) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(d))
  const sha256WithRsa = () =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(forge.pki.oids.sha256WithRSAEncryption as string).getBytes()),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
    ])
  const entries = revoked.map((pair) =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, forge.util.hexToBytes(forge.pki.certificateFromPem(pair.certPem).serialNumber)),
      time(thisUpdate),
    ]),
  )
  const tbs = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, String.fromCharCode(1)), // v2
    sha256WithRsa(),
    forge.pki.distinguishedNameToAsn1(caCert.subject),
    time(thisUpdate),
    time(nextUpdate),
    ...(entries.length > 0 ? [asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, entries)] : []),
  ])
  const md = forge.md.sha256.create()
  md.update(asn1.toDer(tbs).getBytes())
  const signature = caKey.sign(md)
  const crl = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    sha256WithRsa(),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, String.fromCharCode(0) + signature),
  ])
  return forge.pem.encode({ type: 'X509 CRL', body: asn1.toDer(crl).getBytes() })
}
