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

/** Base class of the errors a token request can end with. The message is for the log, never the wire. */
export class OAuthError extends WireError {
  declare readonly code: OAuthErrorCode
  constructor(code: OAuthErrorCode, statusCode: number, message: string) {
    super(code, statusCode, message)
  }
}

/** A method or path the listener does not serve. */
export class NotFound extends WireError {
  constructor() {
    super('not_found', 404, 'not found')
  }
}

export class InvalidRequest extends OAuthError {
  constructor(message = 'invalid request') {
    super('invalid_request', 400, message)
  }
}

export class InvalidClient extends OAuthError {
  constructor(message = 'client authentication failed') {
    super('invalid_client', 401, message)
  }
}

export class UnsupportedGrantType extends OAuthError {
  constructor(message = 'unsupported grant type') {
    super('unsupported_grant_type', 400, message)
  }
}

export class InvalidTarget extends OAuthError {
  constructor(message = 'invalid target') {
    super('invalid_target', 400, message)
  }
}

export class InvalidScope extends OAuthError {
  constructor(message = 'invalid scope') {
    super('invalid_scope', 400, message)
  }
}

export class SlowDown extends OAuthError {
  readonly retryAfterSeconds: number
  constructor(retryAfterSeconds: number) {
    super('slow_down', 429, 'rate limit exceeded')
    this.retryAfterSeconds = retryAfterSeconds
  }
}

export class TemporarilyUnavailable extends OAuthError {
  constructor(message = 'no usable signing key') {
    super('temporarily_unavailable', 503, message)
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
  | 'ERR_ROTATION_REFUSED'
  | 'ERR_USAGE'

/**
 * Why a keyset failed, finer than its code (tests and tools assert on it, never on the message): a key
 * file that is not a usable key, and why.
 */
export type AuthzErrorReason = 'passphrase_missing' | 'passphrase_wrong' | 'not_a_key' | 'key_type' | 'key_too_weak' | 'key_mismatch'

/** Operator-facing error: bad configuration, policy or keys. Its message is meant for the operator's eyes. */
export class AuthzError extends Error {
  readonly code: AuthzErrorCode
  readonly reason: AuthzErrorReason | undefined
  constructor(code: AuthzErrorCode, message: string, options?: { cause?: unknown; reason?: AuthzErrorReason }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
    this.reason = options?.reason
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
