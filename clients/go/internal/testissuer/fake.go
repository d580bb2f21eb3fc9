package testissuer

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authz "authz.internal/clients/go"
	"github.com/golang-jwt/jwt/v5"
)

// Authority is what the shared suites need of an issuer: the real one (Issuer, node) or the fake one
// (Fake, Go only), so that one suite runs as a unit test and against the real authz.
type Authority interface {
	// Endpoints are the token URL (https, mTLS) and the JWKS URL.
	Endpoints() (tokenURL, jwksURL string)
	// CAPool holds the CA of the issuer's server certificate and of its callers' certificates.
	CAPool() *x509.CertPool
	ClientCert(name string) tls.Certificate
	ClientTLS(name string) *tls.Config
	RawToken(caller, audience, scope string) (string, error)
}

var _ Authority = (*Issuer)(nil)
var _ Authority = (*Fake)(nil)

// Endpoints of the real issuer.
func (is *Issuer) Endpoints() (string, string) { return is.TokenURL, is.JWKSURL }

// grants is DefaultPolicy's grants: caller -> audience -> scopes.
var grants = map[string]map[string][]string{
	"order-service":   {"inventory-service": {"stock:read", "stock:deduct"}, "payment-service": {"pay:charge"}},
	"payment-service": {"inventory-service": {"stock:read"}, "order-service": {"order:read"}},
}

// Fake is authz's token endpoint and JWKS in Go, for the kit's unit tests (no node): POST /token over
// mTLS with certificates of its own CA, the caller from the certificate CN, DefaultPolicy's grants,
// RS256 tokens of the issuer's shape (claims, cnf binding, kid = RFC 7638 thumbprint), and a plain-http
// JWKS with Cache-Control max-age=600. Mode makes /token misbehave.
type Fake struct {
	TokenURL, JWKSURL string
	// Mode: "" serves; "reset" drops every connection (authz unreachable); "slow_down" answers 429
	// with Retry-After; "unavailable" 503 temporarily_unavailable with Retry-After; "garbage" 200 with
	// a body that is not JSON.
	Mode atomic.Value
	// RetryAfter is the Retry-After of the failing modes, seconds (default 7).
	RetryAfter atomic.Int64
	// TTL is expires_in, seconds (default 600).
	TTL atomic.Int64
	// Now is the issuer's clock (default time.Now).
	Now func() time.Time

	pki        *PKI
	key        *rsa.PrivateKey
	kid        string
	tokenSrv   *httptest.Server
	jwksSrv    *httptest.Server
	requests   atomic.Int64
	mu         sync.Mutex
	issued     map[string]int
	clientKeys map[string]tls.Certificate
}

// StartFake starts a fake authz; Close stops it.
func StartFake() *Fake {
	f := &Fake{pki: NewPKI("fake authz CA"), key: RSAKey(), issued: map[string]int{}, clientKeys: map[string]tls.Certificate{}, Now: time.Now}
	f.kid = authz.Thumbprint(&f.key.PublicKey)
	f.Mode.Store("")
	f.RetryAfter.Store(7)
	f.TTL.Store(600)
	f.tokenSrv = httptest.NewUnstartedServer(http.HandlerFunc(f.token))
	f.tokenSrv.TLS = f.pki.ServerTLS(f.pki.Pool)
	f.tokenSrv.StartTLS()
	f.jwksSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(JWKS(JWK(&f.key.PublicKey, f.kid, "RS256")))
	}))
	f.TokenURL = f.tokenSrv.URL + "/token"
	f.JWKSURL = f.jwksSrv.URL + "/.well-known/jwks.json"
	return f
}

// Close stops both servers.
func (f *Fake) Close() {
	f.tokenSrv.Close()
	f.jwksSrv.Close()
}

// Endpoints of the fake.
func (f *Fake) Endpoints() (string, string) { return f.TokenURL, f.JWKSURL }

// CAPool holds the fake's CA (its server certificate and every client certificate chain to it).
func (f *Fake) CAPool() *x509.CertPool { return f.pki.Pool }

// ClientCert is a client certificate of the fake's CA with CN name (one per name, made once).
func (f *Fake) ClientCert(name string) tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	cert, ok := f.clientKeys[name]
	if !ok {
		cert = f.pki.Issue(name, false)
		f.clientKeys[name] = cert
	}
	return cert
}

// ClientTLS is the TLS config of a caller talking to the fake.
func (f *Fake) ClientTLS(name string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{f.ClientCert(name)}, RootCAs: f.pki.Pool, MinVersion: tls.VersionTLS12}
}

// Requests counts the token requests received (whatever they were answered).
func (f *Fake) Requests() int64 { return f.requests.Load() }

// TokensIssued counts the tokens issued for audience.
func (f *Fake) TokensIssued(audience string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued[audience]
}

// RawToken gets a token with a plain HTTP client (no cache).
func (f *Fake) RawToken(caller, audience, scope string) (string, error) {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: f.ClientTLS(caller)}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	return postToken(client, f.TokenURL, audience, scope)
}

func (f *Fake) token(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	oauth := func(status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if status == 429 || status == 503 {
			w.Header().Set("Retry-After", strconv.FormatInt(f.RetryAfter.Load(), 10))
		}
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"error":%q}`, code)
	}
	switch f.Mode.Load().(string) {
	case "reset":
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	case "slow_down":
		oauth(429, "slow_down")
		return
	case "unavailable":
		oauth(503, "temporarily_unavailable")
		return
	case "garbage":
		_, _ = io.WriteString(w, "<html>proxy error")
		return
	}
	peer := authz.VerifiedPeer(r.TLS)
	if peer == nil || grants[peer.Subject.CommonName] == nil {
		oauth(401, "invalid_client")
		return
	}
	caller := peer.Subject.CommonName
	var body struct {
		Audience string `json:"audience"`
		Scope    string `json:"scope"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&body) != nil || body.Audience == "" {
		oauth(400, "invalid_request")
		return
	}
	granted, ok := grants[caller][body.Audience]
	if !ok {
		oauth(400, "invalid_target")
		return
	}
	scopes := granted
	if body.Scope != "" {
		scopes = strings.Fields(body.Scope)
		for _, s := range scopes {
			if !contains(granted, s) {
				oauth(400, "invalid_scope")
				return
			}
		}
	}
	now, ttl := f.Now(), f.TTL.Load()
	claims := Claims(caller, body.Audience, peer, strings.Join(scopes, " "), now)
	claims["exp"] = now.Add(time.Duration(ttl) * time.Second).Unix()
	token := Sign(jwt.SigningMethodRS256, f.key, f.kid, claims, nil)
	f.mu.Lock()
	f.issued[body.Audience]++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": strings.Join(scopes, " ")})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
