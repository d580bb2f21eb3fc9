package authz_test

// Callee policies pulled from a configuration center: conformance/policy-sources.json's sources and
// answers, and the schedule, the start, mutual TLS and the secrets of a URL source, against a local
// HTTPS server. Time is a fake clock: the pulls, the retries and the fetch timeout move with it.

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

type sourceVectors struct {
	Defaults struct {
		FilePollMs, URLPullMs, RetryFirstMs, RetryFactor, FetchTimeoutMs, MaxBytes int64
		Jitter                                                                     float64
	} `json:"defaults"`
	Sources []struct {
		Source    string `json:"source"`
		AllowHTTP bool   `json:"allowHttp"`
		Expect    struct {
			Kind, Shown string
			Refused     bool
		} `json:"expect"`
	} `json:"sources"`
	Documents map[string]json.RawMessage `json:"documents"`
	Answers   []configAnswer             `json:"answers"`
}

// configAnswer is what the configuration server answers: a status with a document of Documents (body),
// padded to size bytes, or text; or a mode: reset, hang, trickle, down.
type configAnswer struct {
	Name    string          `json:"name"`
	Status  int             `json:"status"`
	Body    string          `json:"body"`
	Text    *string         `json:"text"`
	Size    int             `json:"size"`
	ETag    json.RawMessage `json:"etag"`
	Chunked bool            `json:"chunked"`
	Enc     string          `json:"encoding"`
	Uncond  bool            `json:"unconditional"`
	Start   *struct {
		ETag json.RawMessage `json:"etag"`
	} `json:"start"`
	Headers map[string]string `json:"headers"`
	Mode    string            `json:"mode"`
	Expect  json.RawMessage   `json:"expect"`
}

func readSourceVectors(t *testing.T) *sourceVectors {
	var v sourceVectors
	readVectors(t, "policy-sources.json", &v)
	return &v
}

// ---- a configuration server ---------------------------------------------------------------------------

type configServer struct {
	t       *testing.T
	vectors *sourceVectors
	addr    string
	tls     *tls.Config
	pki     *testissuer.PKI

	mu       sync.Mutex
	srv      *httptest.Server
	answer   configAnswer
	requests []*http.Request
	received chan struct{} // a request arrived
	release  chan struct{} // ends hanging answers
}

// startConfigServer serves vectors.Documents["a"] over TLS (client certificates of clients required).
func startConfigServer(t *testing.T, v *sourceVectors, clients *x509.CertPool) *configServer {
	pki := testissuer.NewPKI("config CA")
	s := &configServer{t: t, vectors: v, pki: pki, tls: pki.ServerTLS(clients), received: make(chan struct{}, 64), release: make(chan struct{})}
	s.set(configAnswer{Status: 200, Body: "a"})
	s.up("127.0.0.1:0")
	t.Cleanup(func() {
		close(s.release)
		s.down()
	})
	return s
}

func (s *configServer) up(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.Listener.Close()
	srv.Listener = l
	srv.TLS = s.tls
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	s.mu.Lock()
	s.srv, s.addr = srv, l.Addr().String()
	s.mu.Unlock()
}

func (s *configServer) down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

func (s *configServer) url(path string) string { return "https://" + s.addr + path }

// drain forgets the requests received so far: the next wait is for a request yet to come.
func (s *configServer) drain() {
	for len(s.received) > 0 {
		<-s.received
	}
}

func (s *configServer) set(a configAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = a
}

func (s *configServer) last() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[len(s.requests)-1]
}

// document is Documents[name], padded with spaces to size bytes.
func (s *configServer) document(name string, size int) []byte {
	doc := []byte(s.vectors.Documents[name])
	if size > 0 {
		doc = append(doc, bytes.Repeat([]byte(" "), size-len(doc))...)
	}
	return doc
}

func (s *configServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	a := s.answer
	s.requests = append(s.requests, r.Clone(r.Context()))
	_, port, _ := net.SplitHostPort(s.addr)
	s.mu.Unlock()
	s.received <- struct{}{}
	if r.URL.Path == "/redirected.json" {
		a = configAnswer{Status: 200, Body: "b"}
	}
	switch a.Mode {
	case "reset":
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	case "hang", "trickle":
		if a.Mode == "trickle" {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"routes": `)
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-s.release:
		}
		return
	}
	for k, v := range a.Headers {
		w.Header().Set(k, strings.ReplaceAll(v, "{port}", port))
	}
	var body []byte
	switch {
	case a.Text != nil:
		body = []byte(*a.Text)
	case a.Body != "":
		body = s.document(a.Body, a.Size)
		var etag *string
		switch err := json.Unmarshal(a.ETag, &etag); {
		case len(a.ETag) == 0 || err != nil:
			w.Header().Set("ETag", `"`+a.Body+`"`)
		case etag != nil: // null: no ETag
			w.Header()["Etag"] = []string{*etag}
		}
	}
	if a.Enc == "gzip" {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = z.Bytes()
		w.Header().Set("Content-Encoding", "gzip")
	}
	if a.Status == http.StatusNotModified && !a.Uncond && r.Header.Get("If-None-Match") != `"a"` {
		a.Status = http.StatusPreconditionFailed // the client must have asked with the ETag of what it holds
	}
	if !a.Chunked && a.Status != http.StatusNotModified && a.Status != http.StatusNoContent {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	}
	w.WriteHeader(a.Status)
	if a.Chunked {
		_, _ = w.Write(body[:1])
		w.(http.Flusher).Flush()
		body = body[1:]
	}
	_, _ = w.Write(body)
}

// ---- a policy on it ---------------------------------------------------------------------------------------

type pulled struct {
	err  error
	next time.Duration
}

type remotePolicy struct {
	*authz.CalleePolicy
	clock    *testissuer.FakeClock
	pulls    chan pulled
	logs     *testissuer.SyncBuffer
	counters *authz.CalleeCounters
}

// inventoryClient is the certificate the policy's fetches present, and the CA the server trusts for it.
func inventoryClient() (tls.Certificate, *x509.CertPool) {
	pki := testissuer.NewPKI("inventory CA")
	return pki.Issue("inventory-service", false), pki.Pool
}

// serveAndLoad starts a configuration server serving document "a" and a policy on it, over mutual TLS.
func serveAndLoad(t *testing.T, opts ...authz.PolicyOption) (*configServer, *remotePolicy) {
	t.Helper()
	client, clients := inventoryClient()
	s := startConfigServer(t, readSourceVectors(t), clients)
	p, err := loadRemote(t, s.url("/policy.json"), append([]authz.PolicyOption{authz.WithPolicyTLS(clientTLS(s, client))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

// clientTLS is the mutual TLS of the policy's fetches: the config server's CA, a client certificate.
func clientTLS(s *configServer, client tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: s.pki.Pool, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12}
}

func loadRemote(t *testing.T, source string, opts ...authz.PolicyOption) (*remotePolicy, error) {
	logger, logs := jsonLogger()
	r := &remotePolicy{clock: testissuer.NewFakeClock(), pulls: make(chan pulled, 64), logs: logs, counters: &authz.CalleeCounters{}}
	opts = append([]authz.PolicyOption{
		authz.WithPolicyClock(r.clock), authz.WithPolicyLogger(logger), authz.WithPolicyCounters(r.counters),
		authz.WithPullHook(func(err error, next time.Duration) { r.pulls <- pulled{err, next} }),
	}, opts...)
	p, err := authz.LoadCalleePolicyWith(source, opts...)
	if err != nil {
		return r, err
	}
	r.CalleePolicy = p
	t.Cleanup(func() { _ = p.Close() })
	return r, nil
}

// pull moves the clock past the next pull and waits for it; hung answers get the fetch timeout.
func (r *remotePolicy) pull(t *testing.T, s *configServer, hangs bool) pulled {
	t.Helper()
	s.drain()
	r.clock.Advance(authz.DefaultPolicyPullInterval * 11 / 10)
	if hangs {
		<-s.received
		r.clock.Advance(authz.DefaultPolicyFetchTimeout)
	}
	select {
	case p := <-r.pulls:
		return p
	case <-time.After(30 * time.Second):
		t.Fatal("no pull")
		return pulled{}
	}
}

func (r *remotePolicy) failureLines() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(r.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == "policy_reload_failed" {
			out = append(out, m)
		}
	}
	return out
}

var stockReader = &authz.Caller{Service: "order-service", Scopes: []string{"stock:read"}}
var stockDeducter = &authz.Caller{Service: "order-service", Scopes: []string{"stock:deduct"}}

// rules says which document is in force: "a" lets stock:read read, "b" stock:deduct.
func rules(p *authz.CalleePolicy) string {
	switch {
	case p.DecideRoute("GET", "/stock/:sku", stockReader) == authz.Allow:
		return "a"
	case p.DecideRoute("GET", "/stock/:sku", stockDeducter) == authz.Allow:
		return "b"
	}
	return "?"
}

// ---- the vectors -------------------------------------------------------------------------------------------

func TestConformancePolicySources(t *testing.T) {
	v := readSourceVectors(t)
	d := v.Defaults
	if d.FilePollMs != authz.DefaultPolicyPollInterval.Milliseconds() || d.URLPullMs != authz.DefaultPolicyPullInterval.Milliseconds() ||
		d.FetchTimeoutMs != authz.DefaultPolicyFetchTimeout.Milliseconds() || d.MaxBytes != 1<<20 {
		t.Fatalf("the kit's defaults differ from %+v", d)
	}
	for _, c := range v.Sources {
		t.Run(fmt.Sprintf("%s allowHttp %v", c.Source, c.AllowHTTP), func(t *testing.T) {
			kind, shown, err := authz.DescribePolicySource(c.Source, c.AllowHTTP)
			if c.Expect.Refused {
				var pe *authz.PolicyError
				if !errors.As(err, &pe) || pe.Code != authz.ErrCodePolicyRead || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("want a refusal, got %q %q %v", kind, shown, err)
				}
				return
			}
			if err != nil || kind != c.Expect.Kind || shown != c.Expect.Shown {
				t.Fatalf("got %q %q %v, want %q %q", kind, shown, err, c.Expect.Kind, c.Expect.Shown)
			}
		})
	}
	// The schedule: the interval after a success, 1 s doubling to the interval after failures, ±10 %.
	for failures, base := range []time.Duration{30 * time.Second, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		for i := 0; i < 20; i++ {
			got := authz.PolicyPullSchedule(30*time.Second, failures)
			if got < base*9/10 || got > base*11/10 {
				t.Fatalf("after %d failures: %s, want %s ± 10 %%", failures, got, base)
			}
		}
	}
}

// Every answer of a configuration server, one pull each, on a policy that holds document "a": a new
// document is in force at once; anything else keeps "a", is logged once and counted at every pull.
func TestConformancePolicyAnswers(t *testing.T) {
	v := readSourceVectors(t)
	client, clients := inventoryClient()
	for _, a := range v.Answers {
		t.Run(a.Name, func(t *testing.T) {
			s := startConfigServer(t, v, clients)
			held := `"a"`
			if a.Start != nil {
				s.set(configAnswer{Status: 200, Body: "a", ETag: a.Start.ETag})
				held = ""
			}
			p, err := loadRemote(t, s.url("/v1/kv/inventory/policy?raw"), authz.WithPolicyTLS(clientTLS(s, client)))
			if err != nil {
				t.Fatal(err)
			}
			<-s.received
			if rules(p.CalleePolicy) != "a" {
				t.Fatal("the first fetch is in force")
			}
			s.set(a)
			if a.Mode == "down" {
				s.down()
			}
			hangs := a.Mode == "hang" || a.Mode == "trickle"
			got := p.pull(t, s, hangs)
			if a.Mode == "" {
				<-s.received
				if inm := s.last().Header.Get("If-None-Match"); inm != held {
					t.Errorf("If-None-Match %q, want the ETag of what it holds", inm)
				}
			}
			switch string(a.Expect) {
			case `"applied"`, `"unchanged"`:
				want := map[string]string{`"applied"`: a.Body, `"unchanged"`: "a"}[string(a.Expect)]
				if got.err != nil || rules(p.CalleePolicy) != want || len(p.failureLines()) != 0 || p.counters.PolicyReloadFailures() != 0 {
					t.Fatalf("pull: %v, rules %s (want %s), failures logged %v", got.err, rules(p.CalleePolicy), want, p.failureLines())
				}
				if got.next < 27*time.Second || got.next > 33*time.Second {
					t.Fatalf("next pull in %s, want 30 s ± 10 %%", got.next)
				}
				return
			}
			var want struct{ Code string }
			_ = json.Unmarshal(a.Expect, &want)
			var pe *authz.PolicyError
			if !errors.As(got.err, &pe) || string(pe.Code) != want.Code {
				t.Fatalf("pull: %v, want %s", got.err, want.Code)
			}
			if rules(p.CalleePolicy) != "a" {
				t.Fatal("the rules in force must stay")
			}
			lines := p.failureLines()
			if len(lines) != 1 || lines[0]["code"] != want.Code || lines[0]["source"] != "https://"+s.addr+"/v1/kv/inventory/policy?redacted" {
				t.Fatalf("want one failure line naming %s, got %v", want.Code, lines)
			}
			if got.next < 900*time.Millisecond || got.next > 1100*time.Millisecond || !p.counters.PolicyReloadFailing() || p.counters.PolicyReloadFailures() != 1 {
				t.Fatalf("next pull in %s (want 1 s ± 10 %%), counters failing %v failures %d", got.next, p.counters.PolicyReloadFailing(), p.counters.PolicyReloadFailures())
			}
			// Again: counted, not logged again; then the server answers "b" and the next pull applies it.
			s.drain()
			p.clock.Advance(2 * time.Second)
			if hangs {
				<-s.received
				p.clock.Advance(authz.DefaultPolicyFetchTimeout)
			}
			if again := <-p.pulls; again.err == nil || len(p.failureLines()) != 1 || p.counters.PolicyReloadFailures() != 2 {
				t.Fatalf("the same failure again: %v, lines %d, failures %d", again.err, len(p.failureLines()), p.counters.PolicyReloadFailures())
			}
			if a.Mode == "down" {
				s.up(s.addr)
			}
			s.set(configAnswer{Status: 200, Body: "b"})
			p.clock.Advance(3 * time.Second)
			if back := <-p.pulls; back.err != nil || rules(p.CalleePolicy) != "b" || p.counters.PolicyReloadFailing() || !strings.Contains(p.logs.String(), "policy_reload_recovered") {
				t.Fatalf("recovery: %v, rules %s, failing %v", back.err, rules(p.CalleePolicy), p.counters.PolicyReloadFailing())
			}
		})
	}
}

// ---- the pull schedule and what a pull must never do -------------------------------------------------

// The rules served change: the next pull — within one interval, 30 s ± 10 % — applies them; the pulls
// are jittered, and a request decided during a fetch that hangs is not delayed by it.
func TestARemotePolicyChangeIsInForceAfterTheNextPull(t *testing.T) {
	changes := make(chan error, 8)
	s, p := serveAndLoad(t, authz.WithReloadHook(func(err error) { changes <- err }))
	<-s.received
	first := <-p.clock.Armed // the first fetch's timeout
	next := <-p.clock.Armed  // the first pull
	if first != authz.DefaultPolicyFetchTimeout || next < 27*time.Second || next > 33*time.Second {
		t.Fatalf("armed %s then %s", first, next)
	}
	s.set(configAnswer{Status: 200, Body: "b"})
	p.clock.Advance(next - time.Millisecond)
	if rules(p.CalleePolicy) != "a" || len(p.pulls) != 0 {
		t.Fatal("pulled before its time")
	}
	p.clock.Advance(time.Millisecond)
	got := <-p.pulls
	if err := <-changes; err != nil || got.err != nil || rules(p.CalleePolicy) != "b" {
		t.Fatalf("after %s: %v %v, rules %s", next, err, got.err, rules(p.CalleePolicy))
	}
	t.Logf("the new rules were in force %s after the start (one pull interval of fake time)", next)

	// Jitter: successive pulls are not all one interval apart.
	delays := map[time.Duration]bool{got.next: true}
	for i := 0; i < 4; i++ {
		p.clock.Advance(33 * time.Second)
		delays[(<-p.pulls).next] = true
	}
	if len(delays) < 3 {
		t.Fatalf("pull delays %v: not jittered", delays)
	}

	// A fetch that hangs: requests are decided at once, with the rules in force.
	s.set(configAnswer{Mode: "hang"})
	s.drain()
	p.clock.Advance(33 * time.Second)
	<-s.received
	v2 := jwksVerifier(t, fake, nil)
	handler := authz.Middleware(v2, p.CalleePolicy)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	token, err := fake.RawToken("order-service", "inventory-service", "stock:deduct")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 50; i++ {
		req := httptest.NewRequest("GET", "/stock/sku-1", nil)
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{fake.ClientCert("order-service").Leaf}}}
		req.Header.Set(authz.ServiceTokenHeader, token)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != 204 {
			t.Fatalf("during a hanging fetch: %d", rec.Code)
		}
	}
	if len(p.pulls) != 0 {
		t.Fatal("the fetch should still hang")
	}
	t.Logf("50 requests decided in %s while a fetch hung", time.Since(start))
	p.clock.Advance(authz.DefaultPolicyFetchTimeout)
	if got := <-p.pulls; got.err == nil || rules(p.CalleePolicy) != "b" {
		t.Fatalf("the timeout: %v, rules %s", got.err, rules(p.CalleePolicy))
	}
}

// Backoff while the server is down: 1 s, 2 s, 4 s … up to the interval; one line for the outage, one
// when it ends; a request never waits.
func TestARemotePolicyBacksOffWhileItsServerIsDown(t *testing.T) {
	s, p := serveAndLoad(t)
	s.down()
	p.clock.Advance(33 * time.Second)
	var delays []time.Duration
	for i := 0; i < 7; i++ {
		if i > 0 {
			p.clock.Advance(delays[i-1])
		}
		got := <-p.pulls
		if got.err == nil {
			t.Fatal("pulled from a server that is down")
		}
		delays = append(delays, got.next)
	}
	for i, base := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		if d := delays[i]; d < base*time.Second*9/10 || d > base*time.Second*11/10 {
			t.Fatalf("retry delays %v, want 1 s doubling to 30 s ± 10 %%", delays)
		}
	}
	if n := len(p.failureLines()); n != 1 || p.counters.PolicyReloadFailures() != 7 || rules(p.CalleePolicy) != "a" {
		t.Fatalf("%d failure lines (want 1), %d failures counted (want 7), rules %s", n, p.counters.PolicyReloadFailures(), rules(p.CalleePolicy))
	}
	s.up(s.addr)
	s.set(configAnswer{Status: 200, Body: "b"})
	p.clock.Advance(33 * time.Second)
	if got := <-p.pulls; got.err != nil || rules(p.CalleePolicy) != "b" || strings.Count(p.logs.String(), "policy_reload_recovered") != 1 {
		t.Fatalf("after the server came back: %v, rules %s\n%s", got.err, rules(p.CalleePolicy), p.logs.String())
	}
}

// ---- the start ----------------------------------------------------------------------------------------------

func TestARemotePolicyStartsFromItsSourceOrABundledFile(t *testing.T) {
	v := readSourceVectors(t)
	client, clients := inventoryClient()
	s := startConfigServer(t, v, clients)
	dir := t.TempDir()
	bundled := filepath.Join(dir, "bundled.json")
	writeAtomic(t, bundled, string(v.Documents["b"]))
	withTLS := authz.WithPolicyTLS(clientTLS(s, client))

	for _, a := range []configAnswer{{Status: 503}, {Status: 200, Text: ptr("<html>")}, {Mode: "down"}} {
		s.set(a)
		if a.Mode == "down" {
			s.down()
		}
		if _, err := loadRemote(t, s.url("/policy.json"), withTLS); err == nil {
			t.Fatalf("%+v: a start that cannot fetch its policy must fail", a)
		}
		// With a bundled file: the start succeeds on it, says so once, and the source replaces it.
		p, err := loadRemote(t, s.url("/policy.json"), withTLS, authz.WithBundledPolicy(bundled))
		if err != nil {
			t.Fatal(err)
		}
		lines := p.failureLines()
		if rules(p.CalleePolicy) != "b" || len(lines) != 1 || !strings.Contains(lines[0]["msg"].(string), "bundled") || !p.counters.PolicyReloadFailing() {
			t.Fatalf("%+v: rules %s, lines %v", a, rules(p.CalleePolicy), lines)
		}
		if a.Mode == "down" {
			s.up(s.addr)
		}
		s.set(configAnswer{Status: 200, Body: "a"})
		p.clock.Advance(1100 * time.Millisecond) // the first retry
		if got := <-p.pulls; got.err != nil || rules(p.CalleePolicy) != "a" || p.counters.PolicyReloadFailing() {
			t.Fatalf("%+v: the source's rules after the retry: %v, rules %s", a, got.err, rules(p.CalleePolicy))
		}
	}

	// A broken bundled file fails the start even when the source answers: it would fail when needed.
	writeAtomic(t, bundled, `{"routes": {"HEAD /x": {"scopes": []}}}`)
	var pe *authz.PolicyError
	if _, err := loadRemote(t, s.url("/policy.json"), withTLS, authz.WithBundledPolicy(bundled)); !errors.As(err, &pe) || pe.Source != bundled {
		t.Fatalf("a broken bundled file: %v", err)
	}
}

// Mutual TLS to the configuration server: without the client certificate, or with a server of another
// CA, there is no policy; plain http only when allowed.
func TestARemotePolicyNeedsItsTLS(t *testing.T) {
	v := readSourceVectors(t)
	client, clients := inventoryClient()
	s := startConfigServer(t, v, clients)
	stranger := testissuer.NewPKI("another CA")
	for name, cfg := range map[string]*tls.Config{
		"no client certificate":                  {RootCAs: s.pki.Pool},
		"a client certificate it does not trust": {RootCAs: s.pki.Pool, Certificates: []tls.Certificate{stranger.Issue("inventory-service", false)}},
		"a server of another CA":                 {RootCAs: stranger.Pool, Certificates: []tls.Certificate{client}},
	} {
		if _, err := loadRemote(t, s.url("/policy.json"), authz.WithPolicyTLS(cfg)); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(v.Documents["a"]) }))
	defer plain.Close()
	if _, err := loadRemote(t, plain.URL+"/policy.json"); err == nil {
		t.Error("http:// without WithPlainHTTP loaded")
	}
	p, err := loadRemote(t, plain.URL+"/policy.json", authz.WithPlainHTTP())
	if err != nil || rules(p.CalleePolicy) != "a" {
		t.Fatalf("http:// with WithPlainHTTP: %v", err)
	}
}

// User information and headers are sent; neither they nor the query reach an error or a log line.
func TestARemotePolicyKeepsItsSecrets(t *testing.T) {
	v := readSourceVectors(t)
	client, clients := inventoryClient()
	s := startConfigServer(t, v, clients)
	source := "https://inventory:s3cret-pw@" + s.addr + "/v1/kv/policy?raw&token=s3cret-q"
	p, err := loadRemote(t, source, authz.WithPolicyTLS(clientTLS(s, client)), authz.WithPolicyHeader("X-Consul-Token", "s3cret-h"))
	if err != nil {
		t.Fatal(err)
	}
	<-s.received
	r := s.last()
	if user, pw, ok := r.BasicAuth(); !ok || user != "inventory" || pw != "s3cret-pw" || r.Header.Get("X-Consul-Token") != "s3cret-h" || r.URL.Query().Get("token") != "s3cret-q" {
		t.Fatalf("the request lacked its credentials: %v %v", r.Header, r.URL)
	}
	var errs []string
	for _, a := range []configAnswer{{Status: 500}, {Mode: "reset"}, {Mode: "hang"}, {Status: 302, Headers: map[string]string{"Location": source}}, {Mode: "down"}} {
		s.set(a)
		if a.Mode == "down" {
			s.down()
		}
		got := p.pull(t, s, a.Mode == "hang")
		errs = append(errs, got.err.Error())
	}
	text := p.logs.String() + strings.Join(errs, "\n")
	if strings.Contains(text, "s3cret") || len(p.failureLines()) != 5 {
		t.Fatalf("a secret reached a log or an error, or a failure was not logged:\n%s", text)
	}
	_, err = loadRemote(t, source, authz.WithPolicyTLS(clientTLS(s, client)))
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the start's error: %v", err)
	}
}

// Close during a fetch that hangs returns at once and logs nothing.
func TestClosingARemotePolicyAbandonsItsFetch(t *testing.T) {
	s, p := serveAndLoad(t)
	<-s.received
	s.set(configAnswer{Mode: "hang"})
	p.clock.Advance(33 * time.Second)
	<-s.received
	_ = p.Close()
	select {
	case got := <-p.pulls:
		if got.err == nil || len(p.failureLines()) != 0 || p.counters.PolicyReloadFailures() != 0 {
			t.Fatalf("after Close: %v, lines %v", got.err, p.failureLines())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close left the fetch hanging")
	}
	p.clock.Advance(time.Hour)
	if p.clock.Pending() != 0 {
		t.Fatal("a pull is still scheduled after Close")
	}
}

func ptr[T any](v T) *T { return &v }

// A hook that panics stops nothing: the pull runs in a goroutine of its own, where a panic used to end
// the process; the rules change and the next pull comes all the same.
func TestAPolicyHookThatPanicsStopsNothing(t *testing.T) {
	pulls := make(chan error, 8)
	s, p := serveAndLoad(t,
		authz.WithReloadHook(func(error) { panic("a reload hook's bug") }),
		authz.WithPullHook(func(err error, _ time.Duration) {
			pulls <- err
			panic("a pull hook's bug")
		}))
	s.set(configAnswer{Status: 200, Body: "b"})
	for i := 0; i < 2; i++ {
		p.clock.Advance(33 * time.Second)
		if err := <-pulls; err != nil || rules(p.CalleePolicy) != "b" {
			t.Fatalf("pull %d: %v, rules %s", i+1, err, rules(p.CalleePolicy))
		}
	}
}
