package authz

import (
	"context"
	"net/http"
)

// TokenProvider is what NewTransport and grpcauth.PerRPCCredentials take tokens from: a *TokenSource,
// or a wrapper of one (as oauth2 and go-spiffe hand their consumers one-method sources).
type TokenProvider interface {
	// Token returns a valid token for audience with these scopes.
	Token(ctx context.Context, audience string, scopes ...string) (string, error)
}

var _ TokenProvider = (*TokenSource)(nil)

// NewTransport returns an http.RoundTripper that adds X-Service-Token (a token for audience and
// scopes from ts) to every request and sends it with base. base must present the same client
// certificate as ts (the token is bound to it); nil means http.DefaultTransport. Requests that are not
// https are refused (ErrInsecureTransport): a token never travels in clear.
func NewTransport(base http.RoundTripper, ts TokenProvider, audience string, scopes ...string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &tokenTransport{base: base, ts: ts, audience: audience, scopes: append([]string(nil), scopes...)}
}

type tokenTransport struct {
	base     http.RoundTripper
	ts       TokenProvider
	audience string
	scopes   []string
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if req.URL.Scheme != "https" {
		return fail(ErrInsecureTransport)
	}
	token, err := t.ts.Token(req.Context(), t.audience, t.scopes...)
	if err != nil {
		return fail(err)
	}
	r := req.Clone(req.Context())
	r.Header.Set(ServiceTokenHeader, token)
	return t.base.RoundTrip(r)
}
