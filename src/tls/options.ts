/**
 * The main listener's TLS policy: protocol floor, cipher suites, secure-context options (re-applied on
 * every reload), and connection hygiene limits.
 */
import { constants } from 'node:crypto'
import type { SecureContextOptions } from 'node:tls'

/** TLS 1.2 suites: ECDHE key exchange and AEAD ciphers only (TLS 1.3 suites are all AEAD). */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** The PEM material of the main listener. */
export interface TlsMaterial {
  readonly cert: string | Buffer
  readonly key: string | Buffer
  readonly clientCa: string | Buffer
  readonly crl?: string | Buffer | undefined
}

/** How long a TLS session may be resumed, seconds. Every /token request re-checks the certificate anyway. */
export const SESSION_TIMEOUT_SEC = 300

/** The CRLs of a PEM file, one PEM string each. */
export function crlList(pem: string | Buffer): string[] {
  const text = typeof pem === 'string' ? pem : pem.toString('latin1')
  return text.match(/-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----/g) ?? [text]
}

/** What is re-applied with setSecureContext on a reload: certificates, CA, CRL and the TLS policy. */
export function secureContextOptions(tls: TlsMaterial): SecureContextOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    ca: tls.clientCa,
    // One entry per CRL: given a PEM string, Node loads only its first CRL (a file with several would
    // silently ignore the others: a CA's newer CRL, or another CA's).
    ...(tls.crl === undefined ? {} : { crl: crlList(tls.crl) }),
    minVersion: 'TLSv1.2',
    ciphers: TLS12_CIPHERS,
    honorCipherOrder: true,
    // No TLS compression (CRIME), no renegotiation (a connection's identity must not change).
    secureOptions: constants.SSL_OP_NO_COMPRESSION | constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_CIPHER_SERVER_PREFERENCE,
    sessionTimeout: SESSION_TIMEOUT_SEC,
  }
}

/** Connection hygiene of the main listener, ms unless said otherwise. */
export interface ConnectionLimits {
  /** Time to complete the TLS handshake. */
  readonly handshakeMs: number
  /** Time to receive the complete request headers (slow-loris). */
  readonly headersMs: number
  /** Time to receive the complete request. */
  readonly requestMs: number
  /** Idle time allowed between requests on a keep-alive connection. */
  readonly keepAliveMs: number
  /** Largest request header block, bytes. */
  readonly maxHeaderBytes: number
  /** How often open connections are checked against the header/request timeouts. */
  readonly checkIntervalMs: number
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  handshakeMs: 10_000,
  headersMs: 10_000,
  requestMs: 15_000,
  keepAliveMs: 65_000,
  maxHeaderBytes: 8192,
  checkIntervalMs: 1_000,
}

/** Server options of the main listener: mTLS required, TLS ≥ 1.2, ECDHE + AEAD only, connection limits. */
export function tlsOptions(tls: TlsMaterial, limits: ConnectionLimits = DEFAULT_LIMITS) {
  return {
    ...secureContextOptions(tls),
    requestCert: true as const,
    rejectUnauthorized: true as const,
    handshakeTimeout: limits.handshakeMs,
    headersTimeout: limits.headersMs,
    requestTimeout: limits.requestMs,
    keepAliveTimeout: limits.keepAliveMs,
    maxHeaderSize: limits.maxHeaderBytes,
    connectionsCheckingInterval: limits.checkIntervalMs,
  }
}
