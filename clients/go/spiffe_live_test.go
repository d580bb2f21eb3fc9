//go:build live

package authz_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

const (
	spiffeOrder   = "spiffe://example.org/ns/default/sa/order"
	spiffeReports = "spiffe://example.org/ns/default/sa/reports"
)

// One call end to end from a SPIFFE-identified caller through the Go kit: the real authz with
// AUTHZ_IDENTITY=spiffe issues the token for the X.509-SVID its dev PKI made (files read by TLSFiles),
// NewTransport carries it, Middleware verifies it and decides with a callee policy naming the ID.
func TestLiveASPIFFEIdentifiedCallerThroughTheGoKit(t *testing.T) {
	is, err := testissuer.Start(testissuer.Options{
		Env: []string{"AUTHZ_IDENTITY=spiffe", "AUTHZ_SPIFFE_TRUST_DOMAINS=example.org"},
		Policy: `{"audiences": ["inventory-service"], "grants": {
			"` + spiffeOrder + `":   {"inventory-service": ["stock:read"]},
			"` + spiffeReports + `": {"inventory-service": ["stock:read"]}}}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	policy, err := authz.ParseCalleePolicy([]byte(`{"service": "inventory-service", "routes": {
		"GET /stock/:sku": {"scopes": ["stock:read"], "callers": ["` + spiffeOrder + `"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := jsonLogger()
	v := jwksVerifier(t, is, func(c *authz.VerifierConfig) { c.Logger = logger })
	callee := httptest.NewUnstartedServer(authz.Middleware(v, policy)(http.HandlerFunc(testissuer.CallerBody)))
	calleePKI := testissuer.NewPKI("inventory CA")
	callee.TLS = calleePKI.ServerTLS(is.CAPool())
	callee.StartTLS()
	defer callee.Close()

	// The SVID's files as spiffe-helper writes them, and a bundle trusting authz and the callee.
	ca, err := os.ReadFile(filepath.Join(is.PKIDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "svid_bundle.pem")
	if err := os.WriteFile(bundle, append(ca, calleePKI.CAPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	call := func(id string) (int, string) {
		dir := filepath.Join(is.PKIDir, "svids", strings.ReplaceAll(strings.TrimPrefix(id, "spiffe://"), "/", "+"))
		files, err := authz.LoadTLSFiles(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid-key.pem"), bundle)
		if err != nil {
			t.Fatal(err)
		}
		defer files.Close()
		ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: is.TokenURL, Files: files})
		if err != nil {
			t.Fatal(err)
		}
		defer ts.Close()
		client := &http.Client{Transport: authz.NewTransport(nil, ts, "inventory-service", "stock:read")}
		res, err := client.Get(callee.URL + "/stock/sku-1")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if status, body := call(spiffeOrder); status != 200 || body != spiffeOrder+" /stock/sku-1" {
		t.Fatalf("the SPIFFE ID the policy names: %d %q", status, body)
	}
	if status, _ := call(spiffeReports); status != 403 {
		t.Fatalf("another SPIFFE ID of the trust domain: %d, want 403", status)
	}
	if !strings.Contains(logs.String(), `"reason":"ERR_ROUTE_FORBIDDEN"`) || !strings.Contains(logs.String(), `"sub":"`+spiffeReports+`"`) {
		t.Fatalf("the denial must name the SPIFFE ID: %s", logs.String())
	}
}
