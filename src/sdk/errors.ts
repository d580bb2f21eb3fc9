/** Errors of the SDK, with stable codes to branch on (never the message text). */

export type TokenClientErrorCode =
  /** authz refused the request: `oauthError` says why (invalid_target, invalid_scope, invalid_client...). */
  | 'ERR_TOKEN_DENIED'
  /** authz answered something that is not a token response (5xx, bad JSON, missing fields). */
  | 'ERR_TOKEN_RESPONSE'
  /** authz could not be reached (connection refused, TLS failure, timeout). */
  | 'ERR_TOKEN_NETWORK'
  /** The client was closed. */
  | 'ERR_CLIENT_CLOSED'

/** A TokenClient could not produce a valid token; `code` says why. */
export class TokenClientError extends Error {
  readonly code: TokenClientErrorCode
  /** HTTP status from authz, when there was one. */
  readonly status: number | undefined
  /** OAuth `error` from authz, when there was one. */
  readonly oauthError: string | undefined
  constructor(code: TokenClientErrorCode, message: string, details: { status?: number; oauthError?: string; cause?: unknown } = {}) {
    super(message, { cause: details.cause })
    this.name = 'TokenClientError'
    this.code = code
    this.status = details.status
    this.oauthError = details.oauthError
  }
}

/** Codes of VerifyError. */
export type VerifyErrorCode =
  | 'ERR_TOKEN_MISSING'
  | 'ERR_TOKEN_MALFORMED'
  | 'ERR_TOKEN_ALG'
  | 'ERR_TOKEN_TYP'
  | 'ERR_TOKEN_SIGNATURE'
  | 'ERR_TOKEN_UNKNOWN_KID'
  | 'ERR_TOKEN_ISSUER'
  | 'ERR_TOKEN_AUDIENCE'
  | 'ERR_TOKEN_EXPIRED'
  | 'ERR_TOKEN_NOT_YET_VALID'
  | 'ERR_TOKEN_CLAIMS'
  | 'ERR_BINDING_MISMATCH'
  | 'ERR_BINDING_REQUIRED'
  | 'ERR_JWKS_UNAVAILABLE'

/** Why a token was rejected. The caller only ever sees a bare 401; this is for logs and tests. */
export class VerifyError extends Error {
  readonly code: VerifyErrorCode
  constructor(code: VerifyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'VerifyError'
    this.code = code
  }
}
