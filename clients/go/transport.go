package authz

import (
	"context"
	"io"
	"net/http"
	"sync"
)

// TokenProvider is what NewTransport and grpcauth.PerRPCCredentials take tokens from: a *TokenSource,
// or a wrapper of one (as oauth2 and go-spiffe hand their consumers one-method sources).
type TokenProvider interface {
	// Token returns a valid token for audience with these scopes.
	Token(ctx context.Context, audience string, scopes ...string) (string, error)
}

// TokenInvalidator is what a TokenProvider also implements when the helpers may retry a 401 with a
// fresh token (a *TokenSource does).
type TokenInvalidator interface {
	// InvalidateToken drops token if it is still the one cached for (audience, scopes), at most once per
	// cooldown, and reports whether the next Token returns another one.
	InvalidateToken(token, audience string, scopes ...string) bool
}

var (
	_ TokenProvider    = (*TokenSource)(nil)
	_ TokenInvalidator = (*TokenSource)(nil)
)

// NewTransport returns an http.RoundTripper that adds X-Service-Token (a token for audience and scopes
// from ts) to every request. Requests that are not https are refused (ErrInsecureTransport): a token
// never travels in clear.
//
// With a *TokenSource, the token and the connection come from the same TLS material: base (nil: the
// settings of http.DefaultTransport) is cloned for the TokenSource's certificate and CA bundle
// (Material), and, when its Files are renewed, cloned again for the new certificate — new requests go
// over new connections with tokens bound to it, the old clone's idle connections are closed. A base
// that is an *http.Transport given with a fixed-TLS TokenSource is used as it is (it must present the
// TokenSource's certificate); any other RoundTripper too (no renewal is followed then).
//
// A 401 answer to a token it supplied is retried once with a fresh token (the refused token is dropped
// with InvalidateToken, at most once per key per cooldown; the request is sent again only if the new
// token differs), so callers recover from a `keys revoke` by themselves. Never a loop, never for a 403.
// A request whose body cannot be sent again (a Body without GetBody: http.NewRequest sets GetBody for
// bytes, strings and bytes.Buffer bodies) is not retried; its token is dropped all the same.
func NewTransport(base http.RoundTripper, ts TokenProvider, audience string, scopes ...string) http.RoundTripper {
	t := &tokenTransport{base: base, ts: ts, audience: audience, scopes: append([]string(nil), scopes...)}
	t.src, _ = ts.(*TokenSource)
	t.invalidator, _ = ts.(TokenInvalidator)
	template, isTransport := base.(*http.Transport)
	switch {
	case t.src != nil && base == nil:
		t.template = http.DefaultTransport.(*http.Transport)
	case t.src != nil && isTransport && t.src.cfg.Files != nil:
		t.template = template
	case base == nil:
		t.base = http.DefaultTransport
	}
	return t
}

type tokenTransport struct {
	base        http.RoundTripper
	ts          TokenProvider
	src         *TokenSource     // ts, when it is a *TokenSource
	invalidator TokenInvalidator // ts, when it can drop a refused token
	template    *http.Transport  // cloned per TLS material, when the transport follows the source's
	audience    string
	scopes      []string

	mu      sync.Mutex
	current *materialTransport
}

// materialTransport is the transport of one set of TLS material.
type materialTransport struct {
	material *TLSMaterial
	rt       http.RoundTripper
}

// pick is the material in force and its transport: after a renewal, a new clone of the template (the
// old one's idle connections closed; its requests in flight finish).
func (t *tokenTransport) pick() (*TLSMaterial, http.RoundTripper) {
	if t.template == nil {
		if t.src != nil {
			return t.src.Material(), t.base
		}
		return nil, t.base
	}
	m := t.src.Material()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == nil || t.current.material != m {
		clone := t.template.Clone()
		// The template's TLS settings, with the identity and the trust of the material.
		cfg := m.ClientConfig()
		if base := t.template.TLSClientConfig; base != nil {
			identity := cfg
			cfg = base.Clone()
			cfg.Certificates, cfg.GetClientCertificate, cfg.RootCAs = identity.Certificates, identity.GetClientCertificate, identity.RootCAs
		}
		clone.TLSClientConfig = cfg
		if old := t.current; old != nil {
			old.rt.(*http.Transport).CloseIdleConnections()
		}
		t.current = &materialTransport{material: m, rt: clone}
	}
	return t.current.material, t.current.rt
}

func (t *tokenTransport) token(ctx context.Context, m *TLSMaterial) (string, error) {
	if t.src != nil && m != nil {
		return t.src.TokenFor(ctx, m, t.audience, t.scopes...)
	}
	return t.ts.Token(ctx, t.audience, t.scopes...)
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
	m, rt := t.pick()
	token, err := t.token(req.Context(), m)
	if err != nil {
		return fail(err)
	}
	r := req.Clone(req.Context())
	r.Header.Set(ServiceTokenHeader, token)
	res, err := rt.RoundTrip(r)
	if err != nil || res.StatusCode != http.StatusUnauthorized || t.invalidator == nil {
		return res, err
	}
	// Once, with another token: never for a token the cooldown kept, never again after this.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !t.invalidator.InvalidateToken(token, t.audience, t.scopes...) || !replayable {
		return res, nil
	}
	m2, rt2 := t.pick()
	fresh, err := t.token(req.Context(), m2)
	if err != nil || fresh == token {
		return res, nil
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return res, nil
		}
		again.Body = body
	}
	again.Header.Set(ServiceTokenHeader, fresh)
	drop(res)
	return rt2.RoundTrip(again)
}

// drop lets go of a refused answer without waiting on it (as the TypeScript kit does): a bare 401 (a
// stated length of at most 4 KiB) is drained in the background so that its connection is reused;
// anything else is closed unread — a callee that trickles a body, or states one and never sends it,
// would otherwise hold the caller.
func drop(res *http.Response) {
	if res.ContentLength < 0 || res.ContentLength > 4<<10 {
		res.Body.Close()
		return
	}
	go func() {
		_, _ = io.CopyN(io.Discard, res.Body, 4<<10)
		res.Body.Close()
	}()
}
