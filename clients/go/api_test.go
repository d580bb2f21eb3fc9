package authz_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"time"

	authz "authz.internal/clients/go"
)

// The API as issue 13 names it: these assignments stop compiling if a signature drifts.
var (
	_ func(authz.TokenSourceConfig) (*authz.TokenSource, error)                                = authz.NewTokenSource
	_ func(*authz.TokenSource, context.Context, string, ...string) (string, error)             = (*authz.TokenSource).Token
	_ func(*authz.TokenSource)                                                                 = (*authz.TokenSource).Close
	_ func(http.RoundTripper, *authz.TokenSource, string, ...string) http.RoundTripper         = authz.NewTransport
	_ func(context.Context, authz.VerifierConfig) (*authz.Verifier, error)                     = authz.NewVerifier
	_ func(*authz.Verifier, context.Context, string, *x509.Certificate) (*authz.Caller, error) = (*authz.Verifier).Verify
	_ func(string) (*authz.CalleePolicy, error)                                                = authz.LoadCalleePolicy
	_ func(*authz.Verifier, *authz.CalleePolicy) func(http.Handler) http.Handler               = authz.Middleware
	_ func(context.Context) (*authz.Caller, bool)                                              = authz.CallerFromContext

	_ = authz.TokenSourceConfig{TokenURL: "", TLS: nil}
	_ = authz.VerifierConfig{Issuer: "", Audience: "", JWKSURL: "", TLS: nil, Leeway: time.Second, Algorithms: []string{}}
	_ = authz.Caller{Service: "", Audience: "", Scopes: []string{}, TokenID: "", ExpiresAt: time.Time{}}
	_ = authz.TokenError{Code: ""}
)
