/**
 * Refused handshakes, counted and logged by reason. Node decides a client certificate after the handshake
 * (its OpenSSL verify callback accepts everything, then `rejectUnauthorized` destroys the socket): a
 * revoked, expired or unknown-CA caller just sees its connection closed, and the server would see nothing
 * at all. Node does report every TLS socket that ends before `secureConnection` as a `tlsClientError`, with
 * the verify error in `authorizationError`; this turns that into `authz_tls_handshake_failures_total{reason}`
 * and at most one log line per reason per interval (LogSummary), never one per attempt.
 */
import type { Server as NetServer, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics.js'
import { LogSummary } from '@authz/sdk'
import { rawSocketOf, sourceOf } from './admission.js'

/** The reasons of `authz_tls_handshake_failures_total` (a fixed set: the label stays bounded). */
export const HANDSHAKE_FAILURE_REASONS = ['no_certificate', 'unknown_ca', 'revoked', 'expired', 'not_yet_valid', 'crl_expired', 'protocol', 'timeout', 'other'] as const
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number]

/** OpenSSL's verify results (as Node names them) by the reason they are counted under; the rest is `other`. */
const BY_VERIFY_ERROR: Readonly<Record<string, HandshakeFailureReason>> = {
  CERT_REVOKED: 'revoked',
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not_yet_valid',
  CRL_HAS_EXPIRED: 'crl_expired',
  UNABLE_TO_GET_ISSUER_CERT: 'unknown_ca',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown_ca',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown_ca',
  SELF_SIGNED_CERT_IN_CHAIN: 'unknown_ca',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'unknown_ca',
  CERT_UNTRUSTED: 'unknown_ca',
  CERT_SIGNATURE_FAILURE: 'unknown_ca',
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: 'unknown_ca',
}

/**
 * Why a handshake failed, from what Node reports: the verify error of the client certificate when there is
 * one, else the error's code. Undefined when nothing was attempted: a peer that closed before sending a
 * byte (a TCP health check, a port scan) has not been refused anything.
 */
export function handshakeFailureReason(code: string | undefined, verifyError: string | null | undefined, bytesReceived: number): HandshakeFailureReason | undefined {
  if (typeof verifyError === 'string' && verifyError !== '') return BY_VERIFY_ERROR[verifyError] ?? 'other'
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'no_certificate'
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout'
  if (code === 'ECONNRESET') return bytesReceived === 0 ? undefined : 'other'
  if (code?.startsWith('ERR_SSL_') === true) return 'protocol'
  return 'other'
}

export interface HandshakeFailureOptions {
  /** True when the server itself closed the socket (a connection budget, the drain): not a refusal. */
  readonly closedByServer: (raw: Socket) => boolean
  /** Called on every failure with its reason (the CRL watch checks its deadline on `crl_expired`). */
  readonly onFailure?: (reason: HandshakeFailureReason) => void
}

/** Counts and logs the refused handshakes of a TLS server. Returns what stops its log summary. */
export function watchHandshakeFailures(server: NetServer, metrics: Metrics, logger: Logger, options: HandshakeFailureOptions): { close(): void } {
  for (const reason of HANDSHAKE_FAILURE_REASONS) metrics.tlsHandshakeFailures.inc({ reason }, 0)
  const log = new LogSummary({
    logger,
    event: 'tls_handshake_refused',
    message: 'TLS handshake refused (see authz_tls_handshake_failures_total)',
  })
  server.on('tlsClientError', (err: NodeJS.ErrnoException, tls: TLSSocket) => {
    const raw = rawSocketOf(tls)
    if (raw !== undefined && options.closedByServer(raw)) return
    const reason = handshakeFailureReason(err.code, tls.authorizationError as unknown as string | null, raw?.bytesRead ?? 1)
    if (reason === undefined) return
    metrics.tlsHandshakeFailures.inc({ reason })
    // The source of the first refusal of each reason; never the certificate (its subject is the caller's
    // name, harmless, but a refused certificate is not an identity).
    log.note(reason, { reason, detail: tls.authorizationError ?? err.code, source: sourceOf(raw?.remoteAddress) })
    options.onFailure?.(reason)
  })
  return { close: () => log.close() }
}
