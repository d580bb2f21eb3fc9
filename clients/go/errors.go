package authz

import (
	"errors"
	"fmt"
)

// TokenError is authz refusing a token request: Code is the OAuth error code it answered
// (invalid_client, invalid_request, invalid_target, invalid_scope, slow_down,
// temporarily_unavailable, ...). Find it with errors.As.
type TokenError struct {
	// Code is the OAuth "error" member of authz's answer.
	Code string
	// Status is the HTTP status of the answer.
	Status int
	// Audience is the audience that was asked for.
	Audience string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("authz refused a token for %q: %d %s", e.Audience, e.Status, e.Code)
}

var (
	// ErrIssuerUnreachable wraps a failure to reach authz (connection refused, TLS failure, timeout).
	ErrIssuerUnreachable = errors.New("authz: cannot reach the token endpoint")
	// ErrBadTokenResponse is an answer from authz that is neither a token nor an OAuth error.
	ErrBadTokenResponse = errors.New("authz: unexpected answer from the token endpoint")
	// ErrClosed is returned by a TokenSource after Close.
	ErrClosed = errors.New("authz: token source is closed")
	// ErrInsecureTransport: a service token is only ever sent over TLS.
	ErrInsecureTransport = errors.New("authz: refusing to send a service token without TLS")
)

// VerifyCode says why a token was refused. Callers only ever see a bare 401; the code is for logs,
// metrics and tests. The values are the TypeScript SDK's VerifyError codes.
type VerifyCode string

// The reasons a Verifier refuses a token.
const (
	ErrCodeTokenMissing     VerifyCode = "ERR_TOKEN_MISSING"
	ErrCodeTokenMalformed   VerifyCode = "ERR_TOKEN_MALFORMED"
	ErrCodeTokenAlg         VerifyCode = "ERR_TOKEN_ALG"
	ErrCodeTokenTyp         VerifyCode = "ERR_TOKEN_TYP"
	ErrCodeTokenSignature   VerifyCode = "ERR_TOKEN_SIGNATURE"
	ErrCodeTokenUnknownKID  VerifyCode = "ERR_TOKEN_UNKNOWN_KID"
	ErrCodeTokenIssuer      VerifyCode = "ERR_TOKEN_ISSUER"
	ErrCodeTokenAudience    VerifyCode = "ERR_TOKEN_AUDIENCE"
	ErrCodeTokenExpired     VerifyCode = "ERR_TOKEN_EXPIRED"
	ErrCodeTokenNotYetValid VerifyCode = "ERR_TOKEN_NOT_YET_VALID"
	ErrCodeTokenIssuedAt    VerifyCode = "ERR_TOKEN_ISSUED_AT"
	ErrCodeTokenLifetime    VerifyCode = "ERR_TOKEN_LIFETIME"
	ErrCodeTokenClaims      VerifyCode = "ERR_TOKEN_CLAIMS"
	ErrCodeBindingMismatch  VerifyCode = "ERR_BINDING_MISMATCH"
	ErrCodeBindingRequired  VerifyCode = "ERR_BINDING_REQUIRED"
	ErrCodeJWKSUnavailable  VerifyCode = "ERR_JWKS_UNAVAILABLE"
)

// VerifyError is a refused token. Branch on Code (errors.As), never on the message.
type VerifyError struct {
	Code VerifyCode
	// Err is the underlying cause, when there is one (never contains the token).
	Err error
}

func (e *VerifyError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("authz: token refused (%s): %v", e.Code, e.Err)
	}
	return fmt.Sprintf("authz: token refused (%s)", e.Code)
}

func (e *VerifyError) Unwrap() error { return e.Err }

func verifyErr(code VerifyCode, format string, args ...any) *VerifyError {
	return &VerifyError{Code: code, Err: fmt.Errorf(format, args...)}
}
