package authz_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

// fake is a Go stand-in for authz (its /token over mTLS and its JWKS): the unit tests need no node.
// The tests against the real issuer are in live_test.go, built with -tags live (npm run test:go runs
// both).
var fake *testissuer.Fake

func TestMain(m *testing.M) {
	fake = testissuer.StartFake()
	stopLive, err := startLive()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot start authz:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopLive()
	fake.Close()
	os.Exit(code)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func jsonLogger() (*slog.Logger, *testissuer.SyncBuffer) {
	buf := &testissuer.SyncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, nil)), buf
}

func tokenSource(t *testing.T, is testissuer.Authority, caller string, mod func(*authz.TokenSourceConfig)) *authz.TokenSource {
	t.Helper()
	tokenURL, _ := is.Endpoints()
	cfg := authz.TokenSourceConfig{TokenURL: tokenURL, TLS: is.ClientTLS(caller)}
	if mod != nil {
		mod(&cfg)
	}
	ts, err := authz.NewTokenSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts
}

// jwksVerifier is a verifier of inventory-service over the issuer's JWKS.
func jwksVerifier(t *testing.T, is testissuer.Authority, mod func(*authz.VerifierConfig)) *authz.Verifier {
	t.Helper()
	_, jwksURL := is.Endpoints()
	return newVerifier(t, authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", JWKSURL: jwksURL}, mod)
}

// newVerifier builds a verifier from cfg as mod changes it, closed when the test ends.
func newVerifier(t *testing.T, cfg authz.VerifierConfig, mod func(*authz.VerifierConfig)) *authz.Verifier {
	t.Helper()
	if mod != nil {
		mod(&cfg)
	}
	v, err := authz.NewVerifier(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

func leaf(c tls.Certificate) *x509.Certificate { return c.Leaf }

func wantCode(t *testing.T, err error, code authz.VerifyCode) {
	t.Helper()
	ve, ok := err.(*authz.VerifyError)
	if !ok {
		t.Fatalf("want a *VerifyError %s, got %v", code, err)
	}
	if ve.Code != code {
		t.Fatalf("want %s, got %s (%v)", code, ve.Code, ve)
	}
}
