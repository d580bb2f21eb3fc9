package authz_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"time"

	authz "authz.internal/clients/go"
)

// The API as issues 13 and 23 name it: these assignments stop compiling if a signature drifts.
var (
	_ func(authz.TokenSourceConfig) (*authz.TokenSource, error)                                        = authz.NewTokenSource
	_ func(*authz.TokenSource, context.Context, string, ...string) (string, error)                     = (*authz.TokenSource).Token
	_ func(*authz.TokenSource) error                                                                   = (*authz.TokenSource).Close
	_ func(*authz.Verifier) error                                                                      = (*authz.Verifier).Close
	_ func(*authz.CalleePolicy) error                                                                  = (*authz.CalleePolicy).Close
	_ func(http.RoundTripper, authz.TokenProvider, string, ...string) http.RoundTripper                = authz.NewTransport
	_ func(context.Context, authz.VerifierConfig) (*authz.Verifier, error)                             = authz.NewVerifier
	_ func(*authz.Verifier, context.Context, string, *x509.Certificate) (*authz.Caller, error)         = (*authz.Verifier).Verify
	_ func(string) (*authz.CalleePolicy, error)                                                        = authz.LoadCalleePolicy
	_ func(*authz.Verifier, *authz.CalleePolicy, ...authz.GuardOption) func(http.Handler) http.Handler = authz.Middleware
	_ func(context.Context) (*authz.Caller, bool)                                                      = authz.CallerFromContext
	_ func(*authz.Verifier, ...authz.GuardOption) *authz.Guard                                         = authz.NewGuard
	_ func(*authz.Guard, context.Context, authz.Request) (*authz.Caller, *authz.Denial)                = (*authz.Guard).Check

	_ authz.TokenProvider = (*authz.TokenSource)(nil)
	_                     = authz.TokenSourceConfig{TokenURL: "", TLS: nil}
	_                     = authz.VerifierConfig{Issuer: "", Audience: "", JWKSURL: "", TLS: nil, Leeway: time.Second, Algorithms: []string{}, AllowNoPeer: false, StartWithoutKeys: false}
	_                     = authz.Caller{Service: "", Audience: "", Scopes: []string{}, TokenID: "", ExpiresAt: time.Time{}}
	_                     = authz.TokenError{Code: "", RetryAfter: time.Second}
	_                     = authz.ErrCodeTokenIssuedAt // the deprecated alias, kept for one release
)
