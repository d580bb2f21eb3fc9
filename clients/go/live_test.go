//go:build live

package authz_test

// The kit against the real authz (node dist/bin/server.js, built by npm run build): what the fake
// cannot prove — authz's own tokens, kids, max-age, keys CLI exports and rotations. Run by
// `npm run test:go` (go test -tags live -run Live).

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

// iss is the real authz these tests share (its key is never rotated; tests that rotate or stop an
// issuer start their own).
var iss *testissuer.Issuer

func startLive() (func(), error) {
	var err error
	if iss, err = testissuer.Start(testissuer.Options{}); err != nil {
		return nil, err
	}
	return iss.Close, nil
}

func TestLiveThumbprintIsTheKidAuthzGivesItsKey(t *testing.T) {
	res, err := http.Get(iss.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil || len(doc.Keys) == 0 {
		t.Fatalf("JWKS: %v", err)
	}
	for _, k := range doc.Keys {
		n, _ := base64.RawURLEncoding.DecodeString(k.N)
		e, _ := base64.RawURLEncoding.DecodeString(k.E)
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if got := authz.Thumbprint(pub); got != k.Kid {
			t.Fatalf("Thumbprint %s, authz's kid %s", got, k.Kid)
		}
	}
}

func TestLiveVerifierAcceptsARealTokenFromAuthz(t *testing.T) {
	token, err := iss.RawToken("order-service", "inventory-service", "stock:read stock:deduct")
	if err != nil {
		t.Fatal(err)
	}
	peer := leaf(iss.ClientCert("order-service"))
	caller, err := jwksVerifier(t, iss, nil).Verify(ctxT(t), token, peer)
	if err != nil {
		t.Fatal(err)
	}
	if !caller.HasScope("stock:read") || !caller.HasScope("stock:deduct") || caller.HasScope("stock") {
		t.Fatalf("scopes %v", caller.Scopes)
	}
	for _, c := range []struct {
		name string
		mod  func(*authz.VerifierConfig)
		code authz.VerifyCode
	}{
		{"at a service it was not issued for", func(c *authz.VerifierConfig) { c.Audience = "payment-service" }, authz.ErrCodeTokenAudience},
		{"at a verifier of another issuer", func(c *authz.VerifierConfig) { c.Issuer = "https://authz.other" }, authz.ErrCodeTokenIssuer},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := jwksVerifier(t, iss, c.mod).Verify(ctxT(t), token, peer)
			wantCode(t, err, c.code)
		})
	}
}

func TestLiveStaticKeysExportedByTheKeysCLIVerifyRealTokens(t *testing.T) {
	token, err := iss.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{"JWKS": {"export", "--public"}, "PEM": {"export", "--public", "--format", "pem"}} {
		t.Run(name, func(t *testing.T) {
			out, err := iss.KeysCLI(ctxT(t), args...)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "keys")
			if err := os.WriteFile(file, out, 0o644); err != nil {
				t.Fatal(err)
			}
			v := newVerifier(t, authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", KeysFile: file}, nil)
			if _, err := v.Verify(ctxT(t), token, leaf(iss.ClientCert("order-service"))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLiveKeyRotationOnAuthzCostsOneJWKSRefetch(t *testing.T) {
	rot, err := testissuer.Start(testissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rot.Close)
	proxy := testissuer.NewJWKSProxy(rot.JWKSURL)
	defer proxy.Close()
	clock := testissuer.NewFakeClock()
	v, _ := loaded(t, proxy, clock)
	peer := leaf(rot.ClientCert("order-service"))
	oldToken, err := rot.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	oldKids := v.KIDs()
	newKid, err := rot.Rotate(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	newToken, err := rot.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := testissuer.Segments(newToken); h["kid"] != newKid {
		t.Fatalf("the new token's kid is %v, want %s", h["kid"], newKid)
	}
	clock.Advance(authz.DefaultUnknownKIDCooldown) // the cooldown since the first load has passed
	for i := 0; i < 5; i++ {
		if _, err := v.Verify(ctxT(t), newToken, peer); err != nil {
			t.Fatalf("token with the new kid: %v", err)
		}
	}
	if got := proxy.Requests.Load(); got != 2 {
		t.Fatalf("%d JWKS requests, want 2 (the first load and one refetch for the new kid)", got)
	}
	if _, err := v.Verify(ctxT(t), oldToken, peer); err != nil {
		t.Fatalf("a token of the retired key still verifies while it is published: %v", err)
	}
	if len(v.KIDs()) != len(oldKids)+1 {
		t.Fatalf("kids %v, want the old ones and %s", v.KIDs(), newKid)
	}
}

func TestLiveTheDefaultIssuerMaxAgeIsHonoured(t *testing.T) {
	clock := testissuer.NewFakeClock()
	proxy := testissuer.NewJWKSProxy(iss.JWKSURL) // passes authz's own Cache-Control through
	defer proxy.Close()
	_, _ = loaded(t, proxy, clock)
	if got := drainArmed(clock); got != 600*time.Second {
		t.Fatalf("next refresh in %v, want authz's AUTHZ_JWKS_MAX_AGE default (600 s)", got)
	}
}

// The TokenSource against authz itself: a bound token, one per (audience, scopes), one request for a
// hundred callers, authz's refusals as TokenErrors.
func TestLiveTokenSourceAgainstAuthz(t *testing.T) {
	ts := tokenSource(t, iss, "order-service", nil)
	before, _ := iss.TokensIssued("inventory-service")
	token, err := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	v := jwksVerifier(t, iss, nil)
	if _, err := v.Verify(ctxT(t), token, leaf(iss.ClientCert("order-service"))); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(ctxT(t), token, leaf(iss.ClientCert("payment-service")))
	wantCode(t, err, authz.ErrCodeBindingMismatch)
	a, _ := ts.Token(ctxT(t), "inventory-service", "stock:read", "stock:deduct")
	b, _ := ts.Token(ctxT(t), "inventory-service", "stock:deduct stock:read")
	if a != b || a == token {
		t.Fatal("want one cached token per (audience, scope set)")
	}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = ts.Token(ctxT(t), "inventory-service", "stock:deduct")
		}()
	}
	wg.Wait()
	if after, _ := iss.TokensIssued("inventory-service"); after-before != 3 {
		t.Fatalf("authz issued %d tokens, want 3", after-before)
	}
	refused := tokenSource(t, iss, "payment-service", nil)
	for _, c := range []struct{ audience, scope, code string }{{"inventory-service", "stock:deduct", "invalid_scope"}, {"billing-service", "", "invalid_target"}} {
		_, err := refused.Token(ctxT(t), c.audience, c.scope)
		var te *authz.TokenError
		if !errors.As(err, &te) || te.Code != c.code || te.Status != 400 || te.Retryable() {
			t.Fatalf("%s %s: want a TokenError %s, not retryable, got %v", c.audience, c.scope, c.code, err)
		}
	}
}

func TestLiveMiddlewareGuardsANetHTTPService(t *testing.T) {
	testissuer.RunHTTPGuardSuite(t, iss, netHTTPGuard)
}
