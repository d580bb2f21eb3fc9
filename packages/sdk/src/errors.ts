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
  /** authz's `Retry-After` on a 429, seconds: the client asks again no sooner. */
  readonly retryAfterSeconds: number | undefined
  constructor(
    code: TokenClientErrorCode,
    message: string,
    details: { status?: number; oauthError?: string; retryAfterSeconds?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: details.cause })
    this.name = 'TokenClientError'
    this.code = code
    this.status = details.status
    this.oauthError = details.oauthError
    this.retryAfterSeconds = details.retryAfterSeconds
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
  /** `iat` later than now + leeway. */
  | 'ERR_TOKEN_ISSUED_IN_FUTURE'
  /** `exp − iat` longer than the verifier's `maxLifetime`. */
  | 'ERR_TOKEN_LIFETIME'
  | 'ERR_TOKEN_CLAIMS'
  | 'ERR_BINDING_MISMATCH'
  | 'ERR_BINDING_REQUIRED'
  /** No key set loaded yet (the JWKS could not be fetched). */
  | 'ERR_JWKS_UNAVAILABLE'
  /** A static key set (`keys`) that holds no usable public key, or private key material. */
  | 'ERR_JWKS_INVALID'

/** Why a token was rejected. The caller only ever sees a bare 401; this is for logs and tests. */
export class VerifyError extends Error {
  readonly code: VerifyErrorCode
  constructor(code: VerifyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'VerifyError'
    this.code = code
  }
}

/** Codes of CalleePolicyError. */
export type CalleePolicyErrorCode =
  /** The file cannot be read (missing, unreadable). */
  | 'ERR_POLICY_READ'
  /** The file is not JSON. */
  | 'ERR_POLICY_JSON'
  /** A route key is not `METHOD /path` or a gRPC `/pkg.Service/Method`. */
  | 'ERR_POLICY_ROUTE_KEY'
  /** Any other entry breaks the schema (`entry` says which). */
  | 'ERR_POLICY_INVALID'

/** A callee policy that cannot be used; `entry` names the bad part (a JSON pointer), `source` the file. */
export class CalleePolicyError extends Error {
  readonly code: CalleePolicyErrorCode
  readonly source: string
  readonly entry: string
  constructor(code: CalleePolicyErrorCode, source: string, entry: string, message: string) {
    super(`${source}: ${message}`)
    this.name = 'CalleePolicyError'
    this.code = code
    this.source = source
    this.entry = entry
  }
}
