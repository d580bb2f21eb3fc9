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

// iss is the real authz these tests share (its key is never rotated; tests that rotate or stop an
// issuer start their own).
var iss *testissuer.Issuer

func TestMain(m *testing.M) {
	var err error
	iss, err = testissuer.Start(testissuer.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot start authz:", err)
		os.Exit(1)
	}
	code := m.Run()
	iss.Close()
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

func tokenSource(t *testing.T, is *testissuer.Issuer, caller string, mod func(*authz.TokenSourceConfig)) *authz.TokenSource {
	t.Helper()
	cfg := authz.TokenSourceConfig{TokenURL: is.TokenURL, TLS: is.ClientTLS(caller)}
	if mod != nil {
		mod(&cfg)
	}
	ts, err := authz.NewTokenSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Close)
	return ts
}

func liveVerifier(t *testing.T, is *testissuer.Issuer, mod func(*authz.VerifierConfig)) *authz.Verifier {
	t.Helper()
	return newVerifier(t, authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", JWKSURL: is.JWKSURL}, mod)
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
	t.Cleanup(v.Close)
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
