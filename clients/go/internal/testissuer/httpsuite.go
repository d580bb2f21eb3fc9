package testissuer

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"github.com/golang-jwt/jwt/v5"
)

// InventoryPolicy is the callee policy of the HTTP guard suite.
const InventoryPolicy = `{
  "service": "inventory-service",
  "routes": {
    "GET /stock/:sku":          { "scopes": ["stock:read"] },
    "POST /stock/:sku/deduct":  { "scopes": ["stock:deduct"], "callers": ["order-service"] },
    "GET /stock/:sku/history":  { "scopes": ["stock:read"], "callers": ["payment-service"] },
    "GET /panic":               { "scopes": [] }
  }
}`

// HTTPGuard builds the guarded inventory-service under test: with v and p in front, it must serve
//
//	GET and HEAD /stock/:sku, POST /stock/:sku/deduct, GET /stock/:sku/history, GET /admin (no rule),
//	GET /panic (panics)
//
// each answering 200 with the body "<caller service> <path>" from authz.CallerFromContext.
type HTTPGuard func(v *authz.Verifier, p *authz.CalleePolicy) http.Handler

// CallerBody is what the suite's handlers answer.
func CallerBody(w http.ResponseWriter, r *http.Request) {
	c, ok := authz.CallerFromContext(r.Context())
	if !ok {
		http.Error(w, "no caller in the context", http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(w, c.Service+" "+r.URL.Path)
}

// SyncBuffer is a log destination a test reads while handlers write.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RunHTTPGuardSuite runs the receiving-side checks every HTTP guard must pass, over real mTLS, with
// real tokens from is and forgeries of every kind.
func RunHTTPGuardSuite(t *testing.T, is *Issuer, build HTTPGuard) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The verifier trusts authz's keys and one test key (kid test-rsa), so tokens with any claims
	// can be minted with a valid signature: each claim check is then really what refuses them.
	trusted := RSAKey()
	proxy := NewJWKSProxy(is.JWKSURL)
	defer proxy.Close()
	proxy.AddKey(&trusted.PublicKey, "test-rsa", "RS256")
	logs := &SyncBuffer{}
	v, err := authz.NewVerifier(ctx, authz.VerifierConfig{
		Issuer: IssuerName, Audience: "inventory-service", JWKSURL: proxy.URL(),
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	p, err := authz.ParseCalleePolicy([]byte(InventoryPolicy))
	if err != nil {
		t.Fatal(err)
	}

	pki := NewPKI("inventory CA")
	srv := httptest.NewUnstartedServer(build(v, p))
	srv.TLS = pki.ServerTLS(is.CAPool())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic's stack trace
	srv.StartTLS()
	defer srv.Close()
	// Another server of the same service that asks for a client certificate but does not verify it.
	lax := httptest.NewUnstartedServer(build(v, p))
	lax.TLS = pki.ServerTLS(is.CAPool())
	lax.TLS.ClientAuth = tls.RequestClientCert
	lax.StartTLS()
	defer lax.Close()

	clientOf := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{Certificates: certs, RootCAs: pki.Pool}}, Timeout: 20 * time.Second}
	}
	order, payment := is.ClientCert("order-service"), is.ClientCert("payment-service")
	stranger := NewPKI("another CA").Issue("order-service", false) // same CN, wrong CA
	asOrder, asPayment := clientOf(order), clientOf(payment)

	mustToken := func(caller, audience, scope string) string {
		tok, err := is.RawToken(caller, audience, scope)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	read := mustToken("order-service", "inventory-service", "stock:read")
	deduct := mustToken("order-service", "inventory-service", "stock:deduct")
	payRead := mustToken("payment-service", "inventory-service", "stock:read")
	wrongAud := mustToken("order-service", "payment-service", "")

	header, payload := Segments(read)
	realKid := header["kid"].(string)
	noneHeader := map[string]any{"alg": "none", "typ": "at+jwt", "kid": realKid}
	none := Encode(noneHeader, payload, nil)
	hsKey := issuerPublicKeyPEM(t, is, realKid)
	claims := func() jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, val := range payload {
			c[k] = val
		}
		return c
	}
	now := time.Now()
	minted := func(mod func(jwt.MapClaims)) string {
		c := claims()
		c["iat"], c["nbf"], c["exp"] = now.Unix(), now.Unix(), now.Add(10*time.Minute).Unix()
		if mod != nil {
			mod(c)
		}
		return Sign(jwt.SigningMethodRS256, trusted, "test-rsa", c, nil)
	}

	type req struct {
		name   string
		client *http.Client
		method string
		path   string
		tokens []string
		want   int
	}
	cases := []req{
		{"read token, GET /stock/sku-1", asOrder, "GET", "/stock/sku-1", []string{read}, 200},
		{"read token, HEAD /stock/sku-1 (the GET rule governs HEAD)", asOrder, "HEAD", "/stock/sku-1", []string{read}, 200},
		{"deduct token, POST deduct", asOrder, "POST", "/stock/sku-1/deduct", []string{deduct}, 200},
		{"a token minted by a trusted key (control)", asOrder, "GET", "/stock/sku-1", []string{minted(nil)}, 200},
		{"no token", asOrder, "GET", "/stock/sku-1", nil, 401},
		{"two tokens", asOrder, "GET", "/stock/sku-1", []string{read, read}, 401},
		{"empty token", asOrder, "GET", "/stock/sku-1", []string{""}, 401},
		{"replayed over another certificate", asPayment, "GET", "/stock/sku-1", []string{read}, 401},
		{"alg none", asOrder, "GET", "/stock/sku-1", []string{none}, 401},
		{"HS256 keyed with authz's public key", asOrder, "GET", "/stock/sku-1", []string{Sign(jwt.SigningMethodHS256, hsKey, realKid, claims(), nil)}, 401},
		{"a foreign key with a stolen kid", asOrder, "GET", "/stock/sku-1", []string{Sign(jwt.SigningMethodRS256, RSAKey(), realKid, claims(), nil)}, 401},
		{"wrong aud (a real token for payment-service)", asOrder, "GET", "/stock/sku-1", []string{wrongAud}, 401},
		{"wrong iss", asOrder, "GET", "/stock/sku-1", []string{minted(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })}, 401},
		{"expired", asOrder, "GET", "/stock/sku-1", []string{minted(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = now.Add(-15*time.Minute).Unix(), now.Add(-5*time.Minute).Unix()
		})}, 401},
		{"aud array", asOrder, "GET", "/stock/sku-1", []string{minted(func(c jwt.MapClaims) { c["aud"] = []string{"inventory-service"} })}, 401},
		{"garbage", asOrder, "GET", "/stock/sku-1", []string{"not.a.token"}, 401},
		{"read token, POST deduct", asOrder, "POST", "/stock/sku-1/deduct", []string{read}, 403},
		{"deduct token, GET (no stock:read)", asOrder, "GET", "/stock/sku-1", []string{deduct}, 403},
		{"deduct token, HEAD (no stock:read)", asOrder, "HEAD", "/stock/sku-1", []string{deduct}, 403},
		{"order-service on a payment-service-only route", asOrder, "GET", "/stock/sku-1/history", []string{read}, 403},
		{"payment-service on its route", asPayment, "GET", "/stock/sku-1/history", []string{payRead}, 200},
		{"a route no rule names", asOrder, "GET", "/admin", []string{read}, 403},
		{"a path no route serves", asOrder, "GET", "/nowhere", []string{read}, 403},
	}
	for _, c := range cases {
		res := do(t, c.client, srv.URL, c.method, c.path, c.tokens)
		if res.status != c.want {
			t.Errorf("%s: %d, want %d (body %q)", c.name, res.status, c.want, res.body)
			continue
		}
		if c.want == 200 && c.method != "HEAD" && !strings.HasPrefix(res.body, map[bool]string{true: "payment-service", false: "order-service"}[c.client == asPayment]) {
			t.Errorf("%s: the handler did not see the caller: %q", c.name, res.body)
		}
		if c.want != 200 && (res.body != "" || res.header.Get("Cache-Control") != "no-store" || res.header.Get("Content-Type") != "") {
			t.Errorf("%s: a denial must be bare: body %q, headers %v", c.name, res.body, res.header)
		}
	}

	// A certificate from another CA never gets past the handshake; on a server that does not verify
	// client certificates, the guard refuses a request that has none, or an unverified one.
	if _, err := clientOf(stranger).Get(srv.URL + "/stock/sku-1"); err == nil {
		t.Error("a certificate from another CA should fail the handshake")
	}
	for name, client := range map[string]*http.Client{"no certificate": clientOf(), "unverified certificate": clientOf(stranger)} {
		if res := do(t, client, lax.URL, "GET", "/stock/sku-1", []string{read}); res.status != 401 || res.body != "" {
			t.Errorf("%s on a lax server: %d %q, want a bare 401", name, res.status, res.body)
		}
	}

	// A handler that panics does not take the service down.
	r, _ := http.NewRequest("GET", srv.URL+"/panic", nil)
	r.Header.Set(authz.ServiceTokenHeader, read)
	if res, err := asOrder.Do(r); err == nil { // net/http drops the connection; Gin's Recovery answers 500
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Error("/panic answered 200")
		}
	}
	if res := do(t, asOrder, srv.URL, "GET", "/stock/sku-1", []string{read}); res.status != 200 {
		t.Errorf("after a handler panic: %d, want 200", res.status)
	}

	// Denials are logged with sub, aud, method and path — never a token.
	text := logs.String()
	for _, tok := range []string{read, deduct, payRead, wrongAud, none} {
		if sig := strings.Split(tok, ".")[2]; strings.Contains(text, tok) || (sig != "" && strings.Contains(text, sig)) {
			t.Fatal("a token reached the log")
		}
	}
	if !strings.Contains(text, `"status":403`) || !strings.Contains(text, `"sub":"order-service"`) || !strings.Contains(text, `"aud":"inventory-service"`) ||
		!strings.Contains(text, `"method":"POST"`) || !strings.Contains(text, `"path":"/stock/sku-1/deduct"`) || !strings.Contains(text, `"status":401`) {
		t.Errorf("denials should be logged with sub, aud, method, path and status:\n%s", text)
	}
}

type result struct {
	status int
	body   string
	header http.Header
}

func do(t *testing.T, client *http.Client, base, method, path string, tokens []string) result {
	t.Helper()
	r, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		r.Header.Add(authz.ServiceTokenHeader, tok)
	}
	res, err := client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return result{res.StatusCode, string(body), res.Header}
}

// issuerPublicKeyPEM is authz's public key of kid as PEM: the HMAC secret of the classic forgery.
func issuerPublicKeyPEM(t *testing.T, is *Issuer, kid string) []byte {
	res, err := http.Get(is.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range doc.Keys {
		if k.Kid == kid {
			n, _ := base64.RawURLEncoding.DecodeString(k.N)
			e, _ := base64.RawURLEncoding.DecodeString(k.E)
			der, _ := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())})
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		}
	}
	t.Fatalf("kid %s not in authz's JWKS", kid)
	return nil
}
