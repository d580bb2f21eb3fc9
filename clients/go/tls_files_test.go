package authz_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

func loadFiles(t *testing.T, d *testissuer.TLSDir, opts ...authz.TLSFilesOption) *authz.TLSFiles {
	t.Helper()
	files, err := authz.LoadTLSFiles(d.CertFile, d.KeyFile, d.CAFile, append([]authz.TLSFilesOption{authz.WithTLSPollInterval(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = files.Close() })
	return files
}

func TestTLSFilesFollowAKubeletSwapAndRefuseAHalfWrittenSet(t *testing.T) {
	first := fake.ClientCert("order-service")
	d := testissuer.NewTLSDir(t, first, fake.CAPEM())
	var events []authz.TLSReloadEvent
	logger, logs := jsonLogger()
	files := loadFiles(t, d, authz.WithTLSReloadHook(func(e authz.TLSReloadEvent) { events = append(events, e) }), authz.WithTLSLogger(logger))
	if got := files.Material().Thumbprint; got != authz.CertificateThumbprint(first.Leaf) {
		t.Fatalf("thumbprint %s", got)
	}
	if err := files.Reload(); err != nil || len(events) != 0 {
		t.Fatalf("unchanged files: %v, %d events", err, len(events))
	}
	for i := 0; i < 3; i++ {
		next := fake.Issue("order-service")
		d.Write(next, fake.CAPEM())
		if err := files.Reload(); err != nil {
			t.Fatal(err)
		}
		if files.Material().Thumbprint != authz.CertificateThumbprint(next.Leaf) || len(events) != i+1 || events[i].Err != nil {
			t.Fatalf("swap %d not followed: %+v", i+1, events)
		}
	}
	inForce := files.Material()

	// spiffe-helper writes the certificate, then the key: a read between the two is refused, and
	// reported only when read twice.
	next := fake.Issue("order-service")
	certPEM, keyPEM := testissuer.PEMOf(t, next)
	real := func(p string) string { r, _ := filepath.EvalSymlinks(p); return r }
	if err := os.WriteFile(real(d.CertFile), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := files.Reload(); err == nil || len(events) != 3 {
		t.Fatalf("a mismatched pair: %v; %d events (want no report yet)", err, len(events))
	}
	if files.Material() != inForce {
		t.Fatal("the set in force must stay")
	}
	err := files.Reload()
	if err == nil || len(events) != 4 || events[3].Err == nil || !strings.Contains(events[3].Err.Error(), "tls.key") {
		t.Fatalf("read twice: %v; events %+v", err, events)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatal("key material in an error or the log")
	}
	_ = files.Reload()
	if len(events) != 4 || strings.Count(logs.String(), "tls_files_refused") != 1 {
		t.Fatalf("reported once: %d events, log %s", len(events), logs.String())
	}
	var metrics strings.Builder
	_ = files.WritePrometheus(&metrics)
	if !strings.Contains(metrics.String(), `authz_tls_files_reload_failing{cert="`+d.CertFile+`"} 1`) {
		t.Fatalf("a gauge an alert can fire on:\n%s", metrics.String())
	}
	if err := os.WriteFile(real(d.KeyFile), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := files.Reload(); err != nil || files.Material().Thumbprint != authz.CertificateThumbprint(next.Leaf) {
		t.Fatalf("the key arrived: %v", err)
	}
	metrics.Reset()
	_ = files.WritePrometheus(&metrics)
	want := fmt.Sprintf("authz_tls_certificate_expiry_timestamp_seconds{cert=%q} %d", d.CertFile, next.Leaf.NotAfter.Unix())
	if !strings.Contains(metrics.String(), want) || !strings.Contains(metrics.String(), "authz_tls_files_reload_failing{cert=\""+d.CertFile+"\"} 0") {
		t.Fatalf("gauges after the renewal:\n%s", metrics.String())
	}
}

func TestTLSFilesReadRegularFilesOfBoundedSizeOnly(t *testing.T) {
	d := testissuer.NewTLSDir(t, fake.ClientCert("order-service"), fake.CAPEM())
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(big, make([]byte, 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	_ = os.WriteFile(empty, []byte("no certificate here"), 0o600)
	for name, c := range map[string]struct{ cert, key, ca, want string }{
		"a FIFO":               {fifo, d.KeyFile, d.CAFile, "not a regular file"},
		"a directory":          {d.CertFile, d.KeyFile, dir, "not a regular file"},
		"over 1 MiB":           {d.CertFile, d.KeyFile, big, "larger than"},
		"missing":              {filepath.Join(dir, "none"), d.KeyFile, d.CAFile, "no such file"},
		"a key of another":     {d.CertFile, d.CAFile, d.CAFile, "tls.key"},
		"a bundle without CAs": {d.CertFile, d.KeyFile, empty, "holds no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := authz.LoadTLSFiles(c.cert, c.key, c.ca, authz.WithTLSPollInterval(0))
			if err == nil || !strings.Contains(err.Error(), c.want) && !(name == "a key of another" && strings.Contains(err.Error(), "ca.crt")) {
				t.Fatalf("want an error naming %q, got %v", c.want, err)
			}
		})
	}
}

func TestTokenSourceWithFilesDropsTheOldCertificatesTokens(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	first := f.Issue("order-service")
	d := testissuer.NewTLSDir(t, first, f.CAPEM())
	files := loadFiles(t, d)
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: f.TokenURL, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	v := jwksVerifier(t, f, nil)
	old, err := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	oldMaterial := ts.Material()
	next := f.Issue("order-service")
	d.Write(next, f.CAPEM())
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	if ts.Material() == oldMaterial || ts.Material().Thumbprint != authz.CertificateThumbprint(next.Leaf) {
		t.Fatal("the source must follow the files")
	}
	fresh, err := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if err != nil || fresh == old {
		t.Fatalf("the old certificate's token must not be served any more: %v", err)
	}
	if _, err := v.Verify(ctxT(t), fresh, next.Leaf); err != nil {
		t.Fatalf("the new token must be bound to the new certificate: %v", err)
	}
	late, err := ts.TokenFor(ctxT(t), oldMaterial, "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctxT(t), late, first.Leaf); err != nil {
		t.Fatalf("TokenFor the replaced material: a token bound to it: %v", err)
	}
	if again, _ := ts.Token(ctxT(t), "inventory-service", "stock:read"); again != fresh {
		t.Fatal("...which is not cached")
	}
	if n := f.TokensIssued("inventory-service"); n != 3 {
		t.Fatalf("%d tokens issued, want 3", n)
	}
	if _, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: f.TokenURL, Files: files, TLS: f.ClientTLS("order-service")}); err == nil {
		t.Fatal("TLS and Files together must be refused")
	}
}

func TestTokenSourceInvalidateDropsATokenOncePerCooldown(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	clock := testissuer.NewFakeClock()
	ts := tokenSource(t, f, "order-service", func(c *authz.TokenSourceConfig) { c.Clock = clock; c.InvalidateCooldown = 10e9 })
	first, _ := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if !ts.Invalidate("inventory-service", "stock:read") {
		t.Fatal("the first invalidation drops the token")
	}
	second, _ := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if second == first {
		t.Fatal("want a new token")
	}
	if !ts.InvalidateToken(first, "inventory-service", "stock:read") {
		t.Fatal("a token already replaced: nothing to drop, the next Token is another one")
	}
	if again, _ := ts.Token(ctxT(t), "inventory-service", "stock:read"); again != second {
		t.Fatal("the new token stays")
	}
	if ts.InvalidateToken(second, "inventory-service", "stock:read") || ts.Invalidate("inventory-service", "stock:read") {
		t.Fatal("within the cooldown the token stays")
	}
	clock.Advance(10e9)
	if !ts.InvalidateToken(second, "inventory-service", "stock:read") {
		t.Fatal("after the cooldown: dropped")
	}
	if third, _ := ts.Token(ctxT(t), "inventory-service", "stock:read"); third == second {
		t.Fatal("want a new token")
	}
	if n := f.TokensIssued("inventory-service"); n != 3 {
		t.Fatalf("%d tokens issued, want 3: one per drop", n)
	}
}

func TestServerConfigPutsARenewedServerCertificateAndClientCABundleInForce(t *testing.T) {
	serverPKI := testissuer.NewPKI("service CA")
	first := serverPKI.Issue("localhost", true)
	d := testissuer.NewTLSDir(t, first, fake.CAPEM())
	files := loadFiles(t, d)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authz.VerifiedPeer(r.TLS) == nil {
			w.WriteHeader(401)
		}
	}))
	srv.TLS = files.ServerConfig(&tls.Config{MinVersion: tls.VersionTLS13})
	srv.StartTLS()
	defer srv.Close()
	peer := func(client tls.Certificate) (string, error) {
		cfg := &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: serverPKI.Pool, MinVersion: tls.VersionTLS12}
		res, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			return "", errors.New(res.Status)
		}
		return authz.CertificateThumbprint(res.TLS.PeerCertificates[0]), nil
	}
	if got, err := peer(fake.ClientCert("order-service")); err != nil || got != authz.CertificateThumbprint(first.Leaf) {
		t.Fatalf("first: %s %v", got, err)
	}
	// Renewed: a new server certificate, and a client CA bundle of another CA.
	other := testissuer.NewPKI("another callers' CA")
	next := serverPKI.Issue("localhost", true)
	d.Write(next, other.CAPEM())
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := peer(other.Issue("order-service", false)); err != nil || got != authz.CertificateThumbprint(next.Leaf) {
		t.Fatalf("after the renewal: %s %v", got, err)
	}
	if _, err := peer(fake.ClientCert("order-service")); err == nil {
		t.Fatal("a caller of the CA no longer in the bundle must be refused at the handshake")
	}
	res, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverPKI.Pool, MaxVersion: tls.VersionTLS12}}}).Get(srv.URL)
	if err == nil {
		res.Body.Close()
		t.Fatal("the base's MinVersion TLS 1.3 must hold after the renewal")
	}
}

// A session resumed after the client CA bundle changed must not carry the old verification: Go restores
// a resumed session's verified chains without checking them against the ClientCAs in force, and tickets
// are sealed with the outer configuration's keys unless the configuration of the handshake has its own.
func TestServerConfigDoesNotResumeASessionAcrossABundleChange(t *testing.T) {
	serverPKI := testissuer.NewPKI("service CA")
	d := testissuer.NewTLSDir(t, serverPKI.Issue("localhost", true), fake.CAPEM())
	files := loadFiles(t, d)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authz.VerifiedPeer(r.TLS) == nil {
			w.WriteHeader(401)
			return
		}
		fmt.Fprint(w, r.TLS.DidResume)
	}))
	srv.TLS = files.ServerConfig(nil)
	srv.StartTLS()
	defer srv.Close()
	cache := tls.NewLRUClientSessionCache(8)
	get := func() (string, error) {
		cfg := &tls.Config{Certificates: []tls.Certificate{fake.ClientCert("order-service")}, RootCAs: serverPKI.Pool, ClientSessionCache: cache, MinVersion: tls.VersionTLS13}
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return fmt.Sprintf("%d %s", res.StatusCode, body), nil
	}
	if got, err := get(); err != nil || got != "200 false" {
		t.Fatalf("first: %q %v", got, err)
	}
	if got, err := get(); err != nil || got != "200 true" {
		t.Fatalf("resumption within a bundle should work: %q %v", got, err)
	}
	// The bundle no longer holds the callers' CA (say it was compromised).
	d.Write(serverPKI.Issue("localhost", true), testissuer.NewPKI("another callers' CA").CAPEM())
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := get(); err == nil {
		t.Fatalf("a session of the old bundle resumed: %q", got)
	}
}
