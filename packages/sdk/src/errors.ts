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
  /** authz's `Retry-After` on a 429 or 503, seconds: the client asks again no sooner. */
  readonly retryAfterSeconds: number | undefined
  /**
   * The failure may pass by itself: authz unreachable, 429 `slow_down`, a 5xx (`temporarily_unavailable`),
   * an answer that is not a token response. False for a refusal (`invalid_scope`, `invalid_target`,
   * `invalid_client`…) and for a closed client. gRPC credentials report a retryable failure as UNAVAILABLE,
   * any other as UNAUTHENTICATED.
   */
  readonly retryable: boolean
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
    const status = details.status ?? 0
    this.retryable = code === 'ERR_TOKEN_NETWORK' || code === 'ERR_TOKEN_RESPONSE' || status === 429 || status >= 500
  }
}

/**
 * The codes of VerifyError: the same set, with the same meaning, as the Go kit's `VerifyCode` constants
 * (both are compared with conformance/codes.json by the tests).
 */
export const VERIFY_ERROR_CODES = Object.freeze([
  'ERR_TOKEN_MISSING',
  'ERR_TOKEN_MALFORMED',
  'ERR_TOKEN_ALG',
  'ERR_TOKEN_TYP',
  'ERR_TOKEN_SIGNATURE',
  'ERR_TOKEN_UNKNOWN_KID',
  'ERR_TOKEN_ISSUER',
  'ERR_TOKEN_AUDIENCE',
  'ERR_TOKEN_EXPIRED',
  'ERR_TOKEN_NOT_YET_VALID',
  /** `iat` later than now + leeway. */
  'ERR_TOKEN_ISSUED_IN_FUTURE',
  /** `exp − iat` not positive, or longer than the verifier's `maxLifetime`. */
  'ERR_TOKEN_LIFETIME',
  /** A required claim missing, or a claim of the wrong type. */
  'ERR_TOKEN_CLAIMS',
  'ERR_BINDING_MISMATCH',
  'ERR_BINDING_REQUIRED',
  /** No key set loaded yet (the JWKS could not be fetched). */
  'ERR_JWKS_UNAVAILABLE',
  /** A static key set (`keys`) that holds no usable public key, or private key material. */
  'ERR_JWKS_INVALID',
] as const)

/** Codes of VerifyError. */
export type VerifyErrorCode = (typeof VERIFY_ERROR_CODES)[number]

/**
 * Why a token was rejected. The caller only ever sees a bare 401; this is for logs and tests. `subject` and
 * `audience` are the token's `sub` and `aud` when its signature verified (so they are authz's words, not
 * the caller's) and they are strings: a refusal of an expired or replayed token says whose it was.
 */
export class VerifyError extends Error {
  readonly code: VerifyErrorCode
  readonly subject: string | undefined
  readonly audience: string | undefined
  constructor(code: VerifyErrorCode, message: string, options?: { cause?: unknown; subject?: string | undefined; audience?: string | undefined }) {
    super(message, options)
    this.name = 'VerifyError'
    this.code = code
    this.subject = options?.subject
    this.audience = options?.audience
  }
}

/**
 * Why the receiving edge refused a call, as logged and counted by both kits (conformance/codes.json): a
 * VerifyError code (401), or what the callee policy said (403).
 */
export const DENIAL_REASONS = Object.freeze([
  /** The call did not come over TLS with a client certificate the server verified (401). */
  'ERR_PEER_UNVERIFIED',
  ...VERIFY_ERROR_CODES.filter((c): c is Exclude<VerifyErrorCode, 'ERR_JWKS_INVALID'> => c !== 'ERR_JWKS_INVALID'),
  /** A rule names the route and the caller lacks one of its scopes, or is not one of its callers (403). */
  'ERR_ROUTE_FORBIDDEN',
  /** No rule names the route, or no route matched (403). */
  'ERR_ROUTE_UNLISTED',
] as const)

/** A reason of DENIAL_REASONS. */
export type DenialReason = (typeof DENIAL_REASONS)[number]

/** The codes of CalleePolicyError (the Go kit's `PolicyError` has the same). */
export const CALLEE_POLICY_ERROR_CODES = Object.freeze([
  /** The file cannot be read (missing, unreadable). */
  'ERR_POLICY_READ',
  /** The file is not JSON. */
  'ERR_POLICY_JSON',
  /** A route key is not `METHOD /path` or a gRPC `/package.Service/Method`. */
  'ERR_POLICY_ROUTE_KEY',
  /** Any other entry breaks the schema (`entry` says which). */
  'ERR_POLICY_INVALID',
] as const)

/** Codes of CalleePolicyError. */
export type CalleePolicyErrorCode = (typeof CALLEE_POLICY_ERROR_CODES)[number]

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
