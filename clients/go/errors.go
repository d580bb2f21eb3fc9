package authz

import (
	"errors"
	"fmt"
	"time"
)

// TokenError is authz answering a token request with an OAuth error: Code is the error it answered
// (invalid_client, invalid_request, invalid_target, invalid_scope, slow_down,
// temporarily_unavailable, ...). Find it with errors.As.
type TokenError struct {
	// Code is the OAuth "error" member of authz's answer.
	Code string
	// Status is the HTTP status of the answer.
	Status int
	// Audience is the audience that was asked for.
	Audience string
	// RetryAfter is authz's Retry-After (a 429 slow_down, a 503), zero without one. The TokenSource
	// asks again no sooner.
	RetryAfter time.Duration
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("authz refused a token for %q: %d %s", e.Audience, e.Status, e.Code)
}

// Retryable reports whether the refusal may pass by itself: a 429 (slow_down) or a 5xx
// (temporarily_unavailable). grpcauth answers those UNAVAILABLE, and any other refusal UNAUTHENTICATED.
func (e *TokenError) Retryable() bool { return e.Status == 429 || e.Status >= 500 }

var (
	// ErrIssuerUnreachable wraps a failure to reach authz (connection refused, TLS failure, timeout);
	// the cause is wrapped too (errors.Is and errors.As find both).
	ErrIssuerUnreachable = errors.New("authz: cannot reach the token endpoint")
	// ErrBadTokenResponse is an answer from authz that is neither a token nor an OAuth error.
	ErrBadTokenResponse = errors.New("authz: unexpected answer from the token endpoint")
	// ErrClosed is returned by a TokenSource after Close.
	ErrClosed = errors.New("authz: token source is closed")
	// ErrInsecureTransport: a service token is only ever sent over TLS.
	ErrInsecureTransport = errors.New("authz: refusing to send a service token without TLS")
)

// Retryable reports whether a failure to get a token may pass by itself: authz unreachable, an
// answer that is not a token response, a 429 or a 5xx. A refusal by authz (invalid_scope,
// invalid_target, invalid_client, ...) and a closed TokenSource are not.
func Retryable(err error) bool {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Retryable()
	}
	return errors.Is(err, ErrIssuerUnreachable) || errors.Is(err, ErrBadTokenResponse)
}
