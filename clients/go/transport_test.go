package authz_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

// revocableCallee is inventory-service behind authz.Middleware over mTLS (the fake's CA), which also
// refuses every token issued before revoke() — what its verifier does once a revoked key left the JWKS.
type revocableCallee struct {
	*httptest.Server
	mu       sync.Mutex
	revoked  map[string]bool
	seen     map[string]bool // every token the guard let through
	requests atomic.Int64
	peers    sync.Map // thumbprint of the connection's certificate → calls let through
	mismatch atomic.Int64
	served   chan struct{} // a value after each call let through (dropped when full)
}

func startRevocableCallee(t *testing.T, f *testissuer.Fake) *revocableCallee {
	c := &revocableCallee{revoked: map[string]bool{}, seen: map[string]bool{}, served: make(chan struct{}, 1)}
	v := jwksVerifier(t, f, nil)
	inner := authz.Middleware(v, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := authz.VerifiedPeer(r.TLS)
		n, _ := c.peers.LoadOrStore(authz.CertificateThumbprint(peer), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		select {
		case c.served <- struct{}{}:
		default:
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "ok %s", body)
	}))
	c.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		token := r.Header.Get(authz.ServiceTokenHeader)
		c.mu.Lock()
		refused := c.revoked[token]
		c.seen[token] = true
		c.mu.Unlock()
		if refused {
			authz.WriteDenial(w, http.StatusUnauthorized)
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		inner.ServeHTTP(rec, r)
		if rec.status == http.StatusUnauthorized {
			c.mismatch.Add(1)
		}
	}))
	c.TLS = testissuer.NewPKI("callee CA").ServerTLS(f.CAPool())
	c.StartTLS()
	t.Cleanup(c.Close)
	return c
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(s int) {
	r.status = s
	r.ResponseWriter.WriteHeader(s)
}

// revoke refuses, from now on, every token the callee has seen: a `keys revoke` of the key that signed them.
func (c *revocableCallee) revoke() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for tok := range c.seen {
		c.revoked[tok] = true
	}
}

func get(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func TestTransportRetriesA401OnceWithAFreshTokenAfterARevoke(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	callee := startRevocableCallee(t, f)
	client := clientWithIdentity(callee.Server, f, tokenSource(t, f, "order-service", nil))
	if s := get(t, client, callee.URL+"/stock/sku-1"); s != 200 {
		t.Fatalf("before the revoke: %d", s)
	}
	callee.revoke()
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := client.Post(callee.URL+"/echo", "text/plain", strings.NewReader(fmt.Sprintf("n=%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(body) != fmt.Sprintf("ok n=%d", i) {
				statuses[i] = res.StatusCode
			} else {
				statuses[i] = 200
			}
		}(i)
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("request %d: %d after the revoke, want 200 with its body sent again whole", i, s)
		}
	}
	if n := f.TokensIssued("inventory-service"); n != 2 {
		t.Fatalf("%d tokens issued, want 2: one fresh token for the 20 requests", n)
	}
	if n := callee.requests.Load(); n < 22 || n > 41 {
		t.Fatalf("the callee saw %d requests: each refused request is sent once more, never twice", n)
	}
}

func TestTransportAgainstACalleeThatAlwaysAnswers401IsBounded(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	var received atomic.Int64
	always := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		authz.WriteDenial(w, http.StatusUnauthorized)
	}))
	always.TLS = testissuer.NewPKI("callee CA").ServerTLS(f.CAPool())
	always.StartTLS()
	defer always.Close()
	clock := testissuer.NewFakeClock()
	ts := tokenSource(t, f, "order-service", func(c *authz.TokenSourceConfig) { c.Clock = clock })
	client := clientWithIdentity(always, f, ts)
	for i := 0; i < 50; i++ {
		if s := get(t, client, always.URL+"/stock/sku-1"); s != 401 {
			t.Fatalf("%d", s)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := client.Get(always.URL + "/stock/sku-1")
			if err == nil {
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := f.TokensIssued("inventory-service"); n != 2 {
		t.Fatalf("100 requests cost authz %d tokens, want 2", n)
	}
	if n := received.Load(); n != 101 {
		t.Fatalf("the callee saw %d requests, want 101: one retry in all", n)
	}
	clock.Advance(authz.DefaultInvalidateCooldown)
	get(t, client, always.URL+"/stock/sku-1")
	if n := f.TokensIssued("inventory-service"); n != 3 {
		t.Fatalf("after the cooldown: %d tokens, want one more", n)
	}
}

// clientWithIdentity is an http.Client through NewTransport presenting the fake's order-service
// certificate and trusting srv.
func clientWithIdentity(srv *httptest.Server, f *testissuer.Fake, ts authz.TokenProvider) *http.Client {
	cfg := f.ClientTLS("order-service")
	cfg.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	return &http.Client{Transport: authz.NewTransport(&http.Transport{TLSClientConfig: cfg}, ts, "inventory-service", "stock:read")}
}

func TestTransportNeverRetriesA403NorABodyThatCannotBeSentAgain(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	var bodies []string
	var mu sync.Mutex
	status := 403
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(body))
		first := len(bodies) == 1
		mu.Unlock()
		if first {
			authz.WriteDenial(w, status)
		}
	}))
	srv.TLS = testissuer.NewPKI("callee CA").ServerTLS(f.CAPool())
	srv.StartTLS()
	defer srv.Close()
	clock := testissuer.NewFakeClock()
	client := clientWithIdentity(srv, f, tokenSource(t, f, "order-service", func(c *authz.TokenSourceConfig) { c.Clock = clock }))
	post := func(body io.Reader) int {
		req, _ := http.NewRequest("POST", srv.URL+"/upload", body)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := post(strings.NewReader("x")); s != 403 || len(bodies) != 1 {
		t.Fatalf("403: %d, %d requests (want it as it came, not retried)", s, len(bodies))
	}
	bodies, status = nil, 401
	if s := post(io.MultiReader(strings.NewReader("a"), strings.NewReader("b"))); s != 401 || len(bodies) != 1 || bodies[0] != "ab" {
		t.Fatalf("a body without GetBody: %d, %q (want its 401, sent once)", s, bodies)
	}
	bodies = nil
	clock.Advance(authz.DefaultInvalidateCooldown)
	if s := post(bytes.NewReader([]byte("hi"))); s != 200 || len(bodies) != 2 || bodies[1] != "hi" {
		t.Fatalf("bytes: %d, %q (want them sent again whole)", s, bodies)
	}
	if _, err := client.Get("http://" + strings.TrimPrefix(srv.URL, "https://")); err == nil || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("http: %v", err)
	}
}

// A wrapper of a TokenSource that does not drop tokens: no retry (nothing would change).
type plainProvider struct{ ts *authz.TokenSource }

func (p plainProvider) Token(ctx context.Context, audience string, scopes ...string) (string, error) {
	return p.ts.Token(ctx, audience, scopes...)
}

func TestTransportWithAProviderThatCannotDropTokensDoesNotRetry(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	callee := startRevocableCallee(t, f)
	client := clientWithIdentity(callee.Server, f, plainProvider{tokenSource(t, f, "order-service", nil)})
	get(t, client, callee.URL+"/stock/sku-1")
	callee.revoke()
	if s := get(t, client, callee.URL+"/stock/sku-1"); s != 401 {
		t.Fatalf("%d, want the 401 as it came", s)
	}
}

func TestTransportFollowsACertificateRenewalUnderTrafficWithoutAFailure(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	callee := startRevocableCallee(t, f)
	certs := []tls.Certificate{f.Issue("order-service"), f.Issue("order-service"), f.Issue("order-service")}
	d := testissuer.NewTLSDir(t, certs[0], append(f.CAPEM(), calleeCAPEM(callee)...))
	files := loadFiles(t, d)
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: f.TokenURL, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	client := &http.Client{Transport: authz.NewTransport(nil, ts, "inventory-service", "stock:read")}
	var ok, failed atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Get(callee.URL + "/stock/sku-1")
				if err != nil {
					failed.Add(1)
					failures.Store(err.Error(), true)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					failed.Add(1)
					failures.Store(res.Status, true)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	served := func(c tls.Certificate) int64 {
		if n, found := callee.peers.Load(authz.CertificateThumbprint(c.Leaf)); found {
			return n.(*atomic.Int64).Load()
		}
		return 0
	}
	deadline := time.After(60 * time.Second)
	waitFor := func(what string, cond func() bool) {
		for !cond() {
			if failed.Load() > 20 {
				t.Fatalf("waiting for %s: %d ok, %d failed", what, ok.Load(), failed.Load())
			}
			select {
			case <-callee.served: // a call was let through: look again
			case <-time.After(time.Second): // or a failure (none is let through)
			case <-deadline:
				t.Fatalf("waiting for %s: %d ok, %d failed", what, ok.Load(), failed.Load())
			}
		}
	}
	waitFor("calls over the first certificate", func() bool { return served(certs[0]) >= 40 })
	for _, next := range certs[1:] {
		d.Write(next, append(f.CAPEM(), calleeCAPEM(callee)...))
		if err := files.Reload(); err != nil {
			t.Fatal(err)
		}
		waitFor("calls over the renewed certificate", func() bool { return served(next) >= 40 })
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		var why []string
		failures.Range(func(k, _ any) bool { why = append(why, k.(string)); return true })
		t.Fatalf("%d of %d calls failed: %v", n, n+ok.Load(), why)
	}
	if n := callee.mismatch.Load(); n != 0 {
		t.Fatalf("%d tokens came over another certificate than theirs", n)
	}
	t.Logf("%d calls over three certificates, no failure", ok.Load())
}

func calleeCAPEM(c *revocableCallee) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate().Raw})
}

// Attack finding: the Transport drained a refused request's 401 body (up to 4 KiB) before sending it
// again: a callee that states a body and trickles it, or never sends it, held the caller for as long as
// it liked (until the request's context ended, and then the retry failed too). A 401 with a body is now
// closed, or drained in the background when its stated length is at most 4 KiB.
func TestTransportA401WhoseBodyNeverComesDoesNotHoldTheRetry(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	for _, stated := range []bool{true, false} {
		release := make(chan struct{})
		var calls atomic.Int64
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) > 1 {
				_, _ = io.WriteString(w, "second")
				return
			}
			if stated {
				w.Header().Set("Content-Length", "100")
			}
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "x")
			w.(http.Flusher).Flush()
			<-release // the rest of the body never comes
		}))
		srv.TLS = testissuer.NewPKI("callee CA").ServerTLS(f.CAPool())
		srv.StartTLS()
		client := clientWithIdentity(srv, f, tokenSource(t, f, "order-service", nil))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/stock/sku-1", nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("stated length %v: %v (want the retry's answer, not a wait on the 401's body)", stated, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "second" {
			t.Fatalf("stated length %v: %d %q", stated, res.StatusCode, body)
		}
		cancel()
		close(release)
		srv.CloseClientConnections()
		srv.Close()
	}
}
