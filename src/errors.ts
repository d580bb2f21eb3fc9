/**
 * One errors module. Every error the service can answer with carries its OAuth wire name (`code`) and its
 * HTTP status; `routes/errors.ts` is the only place that turns them into a response. Tests assert on codes,
 * never on message text.
 */

/** OAuth 2.0 error codes that authz puts on the wire (RFC 6749 §5.2, RFC 8707, RFC 8628 `slow_down`). */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'unsupported_grant_type'
  | 'invalid_target'
  | 'invalid_scope'
  | 'slow_down'
  | 'temporarily_unavailable'
  | 'server_error'

/** Every `error` member a response body can carry: the OAuth codes, and `not_found` for an unserved path. */
export type WireErrorCode = OAuthErrorCode | 'not_found'

/** An error with an answer: its wire code and HTTP status. `routes/errors.ts` turns it into a response. */
export class WireError extends Error {
  readonly code: WireErrorCode
  readonly statusCode: number

  constructor(code: WireErrorCode, statusCode: number, message: string) {
    super(message)
    this.name = new.target.name
    this.code = code
    this.statusCode = statusCode
  }
}

/** The HTTP status of each wire code: the one table (the CLI's `explain` reads it too). */
export const STATUS_OF: Readonly<Record<WireErrorCode, number>> = Object.freeze({
  invalid_request: 400,
  invalid_client: 401,
  unsupported_grant_type: 400,
  invalid_target: 400,
  invalid_scope: 400,
  slow_down: 429,
  temporarily_unavailable: 503,
  server_error: 500,
  not_found: 404,
})

/** Base class of the errors a token request can end with. The message is for the log, never the wire. */
export class OAuthError extends WireError {
  declare readonly code: OAuthErrorCode
  constructor(code: OAuthErrorCode, message: string) {
    super(code, STATUS_OF[code], message)
  }
}

/** A subclass of OAuthError for one code, with a default log message. */
const oauthError = (code: OAuthErrorCode, defaultMessage: string) =>
  class extends OAuthError {
    constructor(message = defaultMessage) {
      super(code, message)
    }
  }

/** A method or path the listener does not serve. */
export class NotFound extends WireError {
  constructor() {
    super('not_found', STATUS_OF.not_found, 'not found')
  }
}

export class InvalidRequest extends oauthError('invalid_request', 'invalid request') {}
export class InvalidClient extends oauthError('invalid_client', 'client authentication failed') {}
export class UnsupportedGrantType extends oauthError('unsupported_grant_type', 'unsupported grant type') {}
export class InvalidTarget extends oauthError('invalid_target', 'invalid target') {}
export class InvalidScope extends oauthError('invalid_scope', 'invalid scope') {}
/** Why no token can be signed now (the `reason` of `authz_token_requests_unavailable_total`). */
export type UnavailableReason = 'no_active_key' | 'signer_unavailable' | 'signing_failed'

/** A 503 the caller should retry: `Retry-After` says when. */
export class TemporarilyUnavailable extends OAuthError {
  readonly reason: UnavailableReason
  readonly retryAfterSeconds: number
  constructor(reason: UnavailableReason, retryAfterSeconds: number) {
    super('temporarily_unavailable', reason === 'no_active_key' ? 'no signing key is active' : 'signing failed')
    this.reason = reason
    this.retryAfterSeconds = retryAfterSeconds
  }
}

export class SlowDown extends OAuthError {
  readonly retryAfterSeconds: number
  constructor(retryAfterSeconds: number) {
    super('slow_down', 'rate limit exceeded')
    this.retryAfterSeconds = retryAfterSeconds
  }
}

/** Codes of the errors raised by configuration, policy and keystore loading (never sent to a caller). */
export type AuthzErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_POLICY_INVALID'
  | 'ERR_POLICY_READ'
  | 'ERR_KEYSET_INVALID'
  | 'ERR_KEYSET_READ'
  | 'ERR_KEYSET_LOCKED'
  | 'ERR_KEY_NOT_FOUND'
  | 'ERR_NO_ACTIVE_KEY'
  | 'ERR_CLOCK'
  | 'ERR_ROTATION_REFUSED'
  | 'ERR_USAGE'
  | 'ERR_TOKEN_UNAVAILABLE'

/**
 * Why a keyset failed, finer than its code (tests and tools assert on it, never on the message): no
 * manifest, a key file the manifest names that is not there, or a key file that is not a usable key, and
 * why.
 */
export type AuthzErrorReason =
  | 'manifest_missing'
  | 'key_file_missing'
  | 'passphrase_missing'
  | 'passphrase_wrong'
  | 'not_a_key'
  | 'key_type'
  | 'key_too_weak'
  | 'key_mismatch'

/** Operator-facing error: bad configuration, policy or keys. Its message is meant for the operator's eyes. */
export class AuthzError extends Error {
  readonly code: AuthzErrorCode
  readonly reason: AuthzErrorReason | undefined
  /** The key the error is about, when it is about one. */
  readonly kid: string | undefined
  constructor(code: AuthzErrorCode, message: string, options?: { cause?: unknown; reason?: AuthzErrorReason; kid?: string }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
    this.reason = options?.reason
    this.kid = options?.kid
  }
}

/** A configuration variable is missing or invalid; `variable` names it. */
export class ConfigError extends AuthzError {
  readonly variable: string
  constructor(variable: string, message: string) {
    super('ERR_CONFIG', `${variable}: ${message}`)
    this.variable = variable
  }
}
