package testissuer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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
type HTTPGuard func(v *authz.Verifier, p *authz.CalleePolicy, opts ...authz.GuardOption) http.Handler

// RunHTTPGuardSuite runs the receiving-side checks every HTTP guard must pass, over real mTLS, with
// real tokens from is and forgeries of every kind.
func RunHTTPGuardSuite(t *testing.T, is Authority, build HTTPGuard) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The verifier trusts authz's keys and one test key (kid test-rsa), so tokens with any claims
	// can be minted with a valid signature: each claim check is then really what refuses them.
	trusted := RSAKey()
	_, jwksURL := is.Endpoints()
	proxy := NewJWKSProxy(jwksURL)
	defer proxy.Close()
	proxy.AddKey(&trusted.PublicKey, "test-rsa", "RS256")
	logs := &SyncBuffer{}
	// The denial log forgets a (reason, caller) quiet for a whole interval, after which its next denial is
	// a line at once again: long enough that the cases below run well inside it, short enough that the
	// flood's summary lines come within the wait below.
	const denialInterval = 2 * time.Second
	v, err := authz.NewVerifier(ctx, authz.VerifierConfig{
		Issuer: IssuerName, Audience: "inventory-service", JWKSURL: proxy.URL(),
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), DenialLogInterval: denialInterval,
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
	counters := &authz.CalleeCounters{}
	srv := httptest.NewUnstartedServer(build(v, p, authz.OnDecision(counters.Observe)))
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
		reason string // the denial's reason in the log; sub and aud are logged from ERR_BINDING_MISMATCH on
	}
	cases := []req{
		{"read token, GET /stock/sku-1", asOrder, "GET", "/stock/sku-1", []string{read}, 200, ""},
		{"read token, HEAD /stock/sku-1 (the GET rule governs HEAD)", asOrder, "HEAD", "/stock/sku-1", []string{read}, 200, ""},
		{"deduct token, POST deduct", asOrder, "POST", "/stock/sku-1/deduct", []string{deduct}, 200, ""},
		{"a token minted by a trusted key (control)", asOrder, "GET", "/stock/sku-1", []string{minted(nil)}, 200, ""},
		{"no token", asOrder, "GET", "/stock/sku-1", nil, 401, "ERR_TOKEN_MISSING"},
		{"two tokens", asOrder, "GET", "/stock/sku-1", []string{read, read}, 401, "ERR_TOKEN_MISSING"},
		{"empty token", asOrder, "GET", "/stock/sku-1", []string{""}, 401, "ERR_TOKEN_MISSING"},
		{"replayed over another certificate", asPayment, "GET", "/stock/sku-1", []string{read}, 401, "ERR_BINDING_MISMATCH"},
		{"alg none", asOrder, "GET", "/stock/sku-1", []string{none}, 401, "ERR_TOKEN_ALG"},
		{"HS256 keyed with authz's public key", asOrder, "GET", "/stock/sku-1", []string{Sign(jwt.SigningMethodHS256, hsKey, realKid, claims(), nil)}, 401, "ERR_TOKEN_ALG"},
		{"a foreign key with a stolen kid", asOrder, "GET", "/stock/sku-1", []string{Sign(jwt.SigningMethodRS256, RSAKey(), realKid, claims(), nil)}, 401, "ERR_TOKEN_SIGNATURE"},
		{"wrong aud (a real token for payment-service)", asOrder, "GET", "/stock/sku-1", []string{wrongAud}, 401, "ERR_TOKEN_AUDIENCE"},
		{"wrong iss", asOrder, "GET", "/stock/sku-1", []string{minted(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })}, 401, "ERR_TOKEN_ISSUER"},
		{"expired", asOrder, "GET", "/stock/sku-1", []string{minted(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = now.Add(-15*time.Minute).Unix(), now.Add(-5*time.Minute).Unix()
		})}, 401, "ERR_TOKEN_EXPIRED"},
		{"aud array", asOrder, "GET", "/stock/sku-1", []string{minted(func(c jwt.MapClaims) { c["aud"] = []string{"inventory-service"} })}, 401, "ERR_TOKEN_AUDIENCE"},
		{"garbage", asOrder, "GET", "/stock/sku-1", []string{"not.a.token"}, 401, "ERR_TOKEN_MALFORMED"},
		{"read token, POST deduct", asOrder, "POST", "/stock/sku-1/deduct", []string{read}, 403, "ERR_ROUTE_FORBIDDEN"},
		{"deduct token, GET (no stock:read)", asOrder, "GET", "/stock/sku-1", []string{deduct}, 403, "ERR_ROUTE_FORBIDDEN"},
		{"deduct token, HEAD (no stock:read)", asOrder, "HEAD", "/stock/sku-1", []string{deduct}, 403, "ERR_ROUTE_FORBIDDEN"},
		{"order-service on a payment-service-only route", asOrder, "GET", "/stock/sku-1/history", []string{read}, 403, "ERR_ROUTE_FORBIDDEN"},
		{"payment-service on its route", asPayment, "GET", "/stock/sku-1/history", []string{payRead}, 200, ""},
		{"a route no rule names", asOrder, "GET", "/admin", []string{read}, 403, "ERR_ROUTE_UNLISTED"},
		{"a path no route serves", asOrder, "GET", "/nowhere", []string{read}, 403, "ERR_ROUTE_UNLISTED"},
	}
	denied := map[string]uint64{}
	// Denial lines are bounded: a line at once for the first denial of a (reason, caller), then counts.
	logged := map[string]bool{}
	lastDenied := map[string]time.Time{} // when each key's previous denial was asked for
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(denialLines(logs.String()))
			sent := time.Now()
			res := do(t, c.client, srv.URL, c.method, c.path, c.tokens)
			if res.status != c.want {
				t.Fatalf("%d, want %d (body %q)", res.status, c.want, res.body)
			}
			if c.want == 200 && c.method != "HEAD" && !strings.HasPrefix(res.body, map[bool]string{true: "payment-service", false: "order-service"}[c.client == asPayment]) {
				t.Errorf("the handler did not see the caller: %q", res.body)
			}
			if c.want != 200 && (res.body != "" || res.header.Get("Cache-Control") != "no-store" || res.header.Get("Content-Type") != "") {
				t.Errorf("a denial must be bare: body %q, headers %v", res.body, res.header)
			}
			lines := denialLines(logs.String())[before:]
			if c.want == 200 {
				if len(lines) != 0 {
					t.Errorf("an allowed call logged a denial: %v", lines)
				}
				return
			}
			denied[c.reason]++
			// sub once the token's signature verified: the policy's refusals, the claims' and the
			// binding's; never for a token that is missing, malformed or forged.
			authenticated := map[string]bool{"ERR_BINDING_MISMATCH": true, "ERR_TOKEN_EXPIRED": true, "ERR_TOKEN_ISSUER": true, "ERR_TOKEN_AUDIENCE": true}
			wantSub := c.want == 403 || authenticated[c.reason]
			key := c.reason + "\n" + map[bool]string{true: "order-service"}[wantSub] // every refused token here is order-service's
			previous, quiet := lastDenied[key], false
			lastDenied[key] = sent
			if logged[key] {
				// On a machine so slow that a whole interval passed since this key's previous denial, the
				// key may have been forgotten (by design) and a line at once is right: nothing to judge.
				quiet = time.Since(previous) >= denialInterval
			}
			if logged[key] && !quiet {
				if len(lines) != 0 {
					t.Fatalf("a second %s denial of one caller wrote a line at once: %v", c.reason, lines)
				}
				return
			}
			if quiet && len(lines) == 0 {
				return // not forgotten yet
			}
			logged[key] = true
			if len(lines) != 1 {
				t.Fatalf("%d denial lines, want one: %v", len(lines), lines)
			}
			got := lines[0]
			if got["reason"] != c.reason || got["status"] != float64(c.want) || got["method"] != c.method || got["path"] != c.path {
				t.Errorf("denial logged as %v, want reason %s, status %d, method %s, path %s", got, c.reason, c.want, c.method, c.path)
			}
			if _, has := got["sub"]; has != wantSub {
				t.Errorf("denial logged as %v: sub present %v, want %v", got, has, wantSub)
			}
		})
	}
	if got := counters.Denied(); !mapsEqual(got, denied) {
		t.Errorf("OnDecision counters: denied %v, want %v", got, denied)
	}

	// A flood of forged tokens: a bounded number of lines, which account for every denial; the
	// counters count every one (before: a line per request).
	mark := len(logs.String())
	forged := Sign(jwt.SigningMethodRS256, RSAKey(), realKid, claims(), nil)
	for i := 0; i < 200; i++ {
		if res := do(t, asOrder, srv.URL, "GET", "/stock/sku-1", []string{forged}); res.status != 401 {
			t.Fatalf("a forged token: %d", res.status)
		}
	}
	counted := func() (n float64, lines int) {
		for _, l := range deniedLogLines(logs.String()[mark:], false) {
			if l["reason"] == "ERR_TOKEN_SIGNATURE" {
				n, lines = n+l["count"].(float64), lines+1
			}
		}
		for _, l := range summaryLines(logs.String()[mark:]) {
			if l["reason"] == "ERR_TOKEN_SIGNATURE" {
				n, lines = n+l["count"].(float64), lines+1
			}
		}
		return n, lines
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if n, _ := counted(); n >= 200 || time.Now().After(deadline) {
			break
		}
		logs.Wait(time.Second)
	}
	if n, lines := counted(); n != 200 || lines == 0 || lines > 50 {
		t.Errorf("200 forged tokens: %d lines counting %v denials, want a few lines counting 200", lines, n)
	}
	if got := counters.Denied()["ERR_TOKEN_SIGNATURE"]; got != denied["ERR_TOKEN_SIGNATURE"]+200 {
		t.Errorf("the counter: %d, want every one", got)
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
	for _, line := range denialLines(text) {
		if line["event"] != "service_call_denied" || line["reason"] == "" {
			t.Errorf("a denial line without its reason: %v", line)
		}
	}
}

// denialLines are the JSON log lines of denials written at once (not the summaries), in order.
func denialLines(text string) []map[string]any { return deniedLogLines(text, false) }

// summaryLines are the summary lines of denials (a count per interval), in order.
func summaryLines(text string) []map[string]any { return deniedLogLines(text, true) }

func deniedLogLines(text string, summaries bool) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(text, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == "service_call_denied" {
			if _, summary := m["interval_s"]; summary == summaries {
				out = append(out, m)
			}
		}
	}
	return out
}

// mapsEqual compares counts, a missing key counting 0.
func mapsEqual(a, b map[string]uint64) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}
