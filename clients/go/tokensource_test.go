package authz_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

func TestTokenSourceFetchesATokenBoundToItsCertificate(t *testing.T) {
	ts := tokenSource(t, fake, "order-service", nil)
	token, err := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	v := jwksVerifier(t, fake, nil)
	caller, err := v.Verify(ctxT(t), token, leaf(fake.ClientCert("order-service")))
	if err != nil {
		t.Fatal(err)
	}
	if caller.Service != "order-service" || caller.Audience != "inventory-service" || len(caller.Scopes) != 1 || caller.Scopes[0] != "stock:read" || caller.TokenID == "" {
		t.Fatalf("caller %+v", caller)
	}
	// Over another certificate the same token is refused: it is bound to order-service's.
	_, err = v.Verify(ctxT(t), token, leaf(fake.ClientCert("payment-service")))
	wantCode(t, err, authz.ErrCodeBindingMismatch)
}

func TestTokenSourceCachesOneTokenPerAudienceAndScopes(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	ts := tokenSource(t, f, "order-service", nil)
	a, err := ts.Token(ctxT(t), "inventory-service", "stock:read", "stock:deduct")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ts.Token(ctxT(t), "inventory-service", "stock:deduct stock:read") // same set, other spelling
	c, _ := ts.Token(ctxT(t), "inventory-service", "stock:read")
	d, _ := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if a != b || c != d || a == c {
		t.Fatal("want one cached token per (audience, scope set)")
	}
	if n := f.TokensIssued("inventory-service"); n != 2 {
		t.Fatalf("authz issued %d tokens, want 2", n)
	}
}

func TestTokenSourceHundredConcurrentCallersCauseOneRequest(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	ts := tokenSource(t, f, "payment-service", nil)
	start := make(chan struct{})
	var wg sync.WaitGroup
	tokens := make([]string, 100)
	errs := make([]error, 100)
	for i := range tokens {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			tokens[i], errs[i] = ts.Token(ctxT(t), "order-service", "order:read")
		}(i)
	}
	close(start)
	wg.Wait()
	for i := range tokens {
		if errs[i] != nil || tokens[i] != tokens[0] {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
	}
	if n := f.Requests(); n != 1 {
		t.Fatalf("100 callers caused %d token requests, want 1", n)
	}
}

// events collects OnRefresh events in a channel.
func events(cfg *authz.TokenSourceConfig) chan authz.RefreshEvent {
	ch := make(chan authz.RefreshEvent, 64)
	cfg.OnRefresh = func(ev authz.RefreshEvent) { ch <- ev }
	return ch
}

func next(t *testing.T, ch chan authz.RefreshEvent) authz.RefreshEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no refresh event")
		return authz.RefreshEvent{}
	}
}

func TestTokenSourceRefreshesInTheBackgroundAtAboutHalfLife(t *testing.T) {
	clock := testissuer.NewFakeClock()
	var evs chan authz.RefreshEvent
	ts := tokenSource(t, fake, "order-service", func(c *authz.TokenSourceConfig) {
		c.Clock = clock
		c.Rand = func() float64 { return 1 } // the latest the jitter allows: 0.5 × 1.1 of the lifetime
		evs = events(c)
	})
	start := clock.Now()
	first, err := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, evs)
	if ev.Background || ev.Err != nil || ev.ExpiresAt.Sub(start) != 600*time.Second || ev.RefreshAt.Sub(start) != 330*time.Second {
		t.Fatalf("first fetch %+v: want expiry at +600s, refresh at +330s", ev)
	}
	clock.Advance(329 * time.Second) // not due yet: the timer stays armed, the cached token is served
	if clock.Pending() != 1 {
		t.Fatalf("%d timers armed, want the refresh timer", clock.Pending())
	}
	if again, _ := ts.Token(ctxT(t), "inventory-service", "stock:read"); again != first {
		t.Fatal("the cached token should be served before the refresh instant")
	}
	clock.Advance(time.Second)
	ev = next(t, evs)
	if !ev.Background || ev.Err != nil {
		t.Fatalf("want a background refresh, got %+v", ev)
	}
	second, _ := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if second == first {
		t.Fatal("the background refresh should have replaced the token")
	}
}

func TestTokenSourceRefreshesNoLaterThan60sBeforeExpiry(t *testing.T) {
	for name, c := range map[string]struct {
		refreshBefore, want time.Duration
	}{
		"the default, the TypeScript SDK's too (before: 30 s)": {0, 60 * time.Second},
		"RefreshBefore 30 s": {30 * time.Second, 30 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			var evs chan authz.RefreshEvent
			ts := tokenSource(t, fake, "order-service", func(cfg *authz.TokenSourceConfig) {
				cfg.Clock = testissuer.NewFakeClock()
				cfg.RefreshRatio, cfg.RefreshBefore = 0.99, c.refreshBefore
				cfg.Rand = func() float64 { return 1 }
				evs = events(cfg)
			})
			if _, err := ts.Token(ctxT(t), "inventory-service", "stock:deduct"); err != nil {
				t.Fatal(err)
			}
			if got := next(t, evs); got.ExpiresAt.Sub(got.RefreshAt) != c.want {
				t.Fatalf("refresh %v before expiry, want %v", got.ExpiresAt.Sub(got.RefreshAt), c.want)
			}
		})
	}
}

func TestTokenSourceServesTheCachedTokenWhileAuthzIsDownAndRetriesWithBackoff(t *testing.T) {
	down := testissuer.StartFake()
	defer down.Close()
	clock := testissuer.NewFakeClock()
	var evs chan authz.RefreshEvent
	ts := tokenSource(t, down, "order-service", func(c *authz.TokenSourceConfig) {
		c.Clock = clock
		c.Rand = func() float64 { return 0.5 } // no jitter: refresh at 300 s, backoff exactly 3/4 of each step
		evs = events(c)
	})
	first, err := ts.Token(ctxT(t), "inventory-service")
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, evs)
	down.Mode.Store("reset")

	clock.Advance(ev.RefreshAt.Sub(clock.Now()))
	fail1 := next(t, evs)
	if !errors.Is(fail1.Err, authz.ErrIssuerUnreachable) || fail1.RetryAt.IsZero() {
		t.Fatalf("want a failed background refresh with a retry planned, got %+v", fail1)
	}
	if tok, err := ts.Token(ctxT(t), "inventory-service"); err != nil || tok != first {
		t.Fatalf("while authz is down the cached token must be served: %v", err)
	}
	clock.Advance(fail1.RetryAt.Sub(clock.Now()))
	fail2 := next(t, evs)
	if fail2.Err == nil || fail2.RetryAt.IsZero() {
		t.Fatalf("want a second failure, got %+v", fail2)
	}
	step1, step2 := fail1.RetryAt.Sub(ev.RefreshAt), fail2.RetryAt.Sub(fail1.RetryAt)
	if step1 != 750*time.Millisecond || step2 != 1500*time.Millisecond {
		t.Fatalf("backoff %v then %v, want 750ms then 1.5s (1 s doubling, jittered to 3/4)", step1, step2)
	}
	down.Mode.Store("")
	clock.Advance(fail2.RetryAt.Sub(clock.Now()))
	ok := next(t, evs)
	if ok.Err != nil {
		t.Fatalf("after authz is back the retry should succeed: %v", ok.Err)
	}
	if fresh, _ := ts.Token(ctxT(t), "inventory-service"); fresh == first {
		t.Fatal("want the refreshed token")
	}

	// Down again, until the cached token expires: then callers get the error.
	down.Mode.Store("reset")
	clock.Advance(ok.ExpiresAt.Sub(clock.Now()))
	for len(evs) > 0 {
		<-evs
	}
	if _, err := ts.Token(ctxT(t), "inventory-service"); !errors.Is(err, authz.ErrIssuerUnreachable) {
		t.Fatalf("after expiry with authz down, want ErrIssuerUnreachable, got %v", err)
	}
}

// With nothing valid cached, callers during an outage cost authz one request per backoff step, not
// one per call (before: every Token call started a request; the TypeScript SDK already held back).
func TestTokenSourceCallersWithinTheBackoffGetTheLastErrorWithoutARequest(t *testing.T) {
	for _, mode := range []string{"reset", "unavailable", "slow_down"} {
		t.Run(mode, func(t *testing.T) {
			f := testissuer.StartFake()
			defer f.Close()
			f.Mode.Store(mode)
			f.RetryAfter.Store(1)
			clock := testissuer.NewFakeClock()
			ts := tokenSource(t, f, "order-service", func(c *authz.TokenSourceConfig) {
				c.Clock = clock
				c.Rand = func() float64 { return 0.999 } // each step just under its full length
			})
			const callers, steps = 50, 5
			var wantErr error
			for step := 1; step <= steps; step++ {
				var wg sync.WaitGroup
				errs := make([]error, callers)
				for i := 0; i < callers; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						_, errs[i] = ts.Token(ctxT(t), "inventory-service", "stock:read")
					}(i)
				}
				wg.Wait()
				for _, err := range errs {
					if err == nil || !authz.Retryable(err) {
						t.Fatalf("step %d: want a retryable error, got %v", step, err)
					}
				}
				if n := f.Requests(); n != int64(step) {
					t.Fatalf("after %d backoff steps and %d callers each, authz got %d requests, want %d", step, callers, n, step)
				}
				if step == 1 {
					wantErr = errs[0]
				} else if errs[0] == wantErr {
					t.Fatalf("step %d: the error of step 1 again, want the new attempt's", step)
				}
				wantErr = errs[0]
				clock.Advance(time.Minute) // past any step of the backoff (RetryMax 30 s, Retry-After 1 s)
			}
		})
	}
}

func TestTokenSourceRefusalsAndOverloadAreTokenErrors(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	ts := tokenSource(t, f, "payment-service", nil)
	cases := []struct {
		name, mode, audience, scope, code string
		status                            int
		retryable                         bool
		retryAfter                        time.Duration
	}{
		{"a scope not granted", "", "inventory-service", "stock:deduct", "invalid_scope", 400, false, 0},
		{"an audience not granted", "", "billing-service", "", "invalid_target", 400, false, 0},
		{"authz rate-limits the caller", "slow_down", "order-service", "x:1", "slow_down", 429, true, 7 * time.Second},
		{"authz cannot sign", "unavailable", "order-service", "x:2", "temporarily_unavailable", 503, true, 7 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.Mode.Store(c.mode)
			_, err := ts.Token(ctxT(t), c.audience, c.scope)
			var te *authz.TokenError
			if !errors.As(err, &te) || te.Code != c.code || te.Status != c.status {
				t.Fatalf("want TokenError %d %s, got %v", c.status, c.code, err)
			}
			if te.Retryable() != c.retryable || authz.Retryable(err) != c.retryable || te.RetryAfter != c.retryAfter {
				t.Fatalf("retryable %v, Retry-After %v; want %v, %v", te.Retryable(), te.RetryAfter, c.retryable, c.retryAfter)
			}
		})
	}
}

// A failure to reach authz keeps its cause: errors.Is finds both ErrIssuerUnreachable and the
// connection refusal (before: "%w: %v" flattened the cause into text).
func TestTokenSourceUnreachableErrorWrapsTheNetworkCause(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: "https://" + addr + "/token", TLS: fake.ClientTLS("order-service")})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	_, err = ts.Token(ctxT(t), "inventory-service")
	var opErr *net.OpError
	if !errors.Is(err, authz.ErrIssuerUnreachable) || !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &opErr) {
		t.Fatalf("want ErrIssuerUnreachable wrapping the connection refusal, got %v", err)
	}
	if !authz.Retryable(err) {
		t.Fatal("an unreachable authz is retryable")
	}
}

func TestTokenSourceAfterCloseFailsWithErrClosed(t *testing.T) {
	ts := tokenSource(t, fake, "order-service", nil)
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(ctxT(t), "inventory-service"); !errors.Is(err, authz.ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	if authz.Retryable(authz.ErrClosed) {
		t.Fatal("a closed source is not retryable")
	}
	if err := ts.Close(); err != nil {
		t.Fatal("a second Close:", err)
	}
}

func TestNewTokenSourceRefusesPlainHTTPAndNoCertificate(t *testing.T) {
	if _, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: "http://127.0.0.1:1/token", TLS: fake.ClientTLS("order-service")}); err == nil {
		t.Fatal("an http token URL must be refused")
	}
	if _, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: fake.TokenURL}); err == nil {
		t.Fatal("a token source without a client certificate must be refused")
	}
}

// providerFunc is a TokenProvider of the caller's own making (a wrapper, a test double).
type providerFunc func(ctx context.Context, audience string, scopes ...string) (string, error)

func (f providerFunc) Token(ctx context.Context, audience string, scopes ...string) (string, error) {
	return f(ctx, audience, scopes...)
}

func TestTransportSetsTheServiceTokenAndNeverSendsItInClear(t *testing.T) {
	ts := tokenSource(t, fake, "order-service", nil)
	got := make(chan string, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get(authz.ServiceTokenHeader)
	}))
	pki := testissuer.NewPKI("inventory CA")
	srv.TLS = pki.ServerTLS(fake.CAPool())
	srv.StartTLS()
	defer srv.Close()
	tlsCfg := fake.ClientTLS("order-service")
	tlsCfg.RootCAs = pki.Pool
	asked := 0
	wrapped := providerFunc(func(ctx context.Context, audience string, scopes ...string) (string, error) {
		asked++
		return ts.Token(ctx, audience, scopes...)
	})
	for name, provider := range map[string]authz.TokenProvider{"a *TokenSource": ts, "any TokenProvider": wrapped} {
		t.Run(name, func(t *testing.T) {
			client := &http.Client{Transport: authz.NewTransport(&http.Transport{TLSClientConfig: tlsCfg}, provider, "inventory-service", "stock:read")}
			res, err := client.Get(srv.URL + "/stock/sku-1")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			want, _ := ts.Token(ctxT(t), "inventory-service", "stock:read")
			if header := <-got; header != want {
				t.Fatal("X-Service-Token should carry the cached token")
			}
			plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get(authz.ServiceTokenHeader) }))
			defer plain.Close()
			if _, err := client.Get(plain.URL); !errors.Is(err, authz.ErrInsecureTransport) {
				t.Fatalf("want ErrInsecureTransport for an http URL, got %v", err)
			}
			select {
			case <-got:
				t.Fatal("the plain-http server must not have been called")
			default:
			}
		})
	}
	if asked != 1 {
		t.Fatalf("the wrapper was asked %d times, want 1 (the https request)", asked)
	}
}

// A caller that found nothing cached may start its flight just after another flight ended: it gets
// that flight's token, or its failure within the backoff, without a request of its own (found under
// load: the look at the cache and the flight were not one step, and one step of the backoff test saw
// two requests).
func TestTokenSourceACallerBetweenTheCacheAndTheFlightAsksNothing(t *testing.T) {
	for name, mode := range map[string]string{"after a failed flight": "unavailable", "after a good flight": ""} {
		t.Run(name, func(t *testing.T) {
			f := testissuer.StartFake()
			defer f.Close()
			f.Mode.Store(mode)
			ts := tokenSource(t, f, "order-service", func(c *authz.TokenSourceConfig) { c.Clock = testissuer.NewFakeClock() })
			atGate, flightDone := make(chan struct{}), make(chan struct{})
			var hooked atomic.Bool
			restore := authz.SetTestHookBeforeFlight(func() {
				if hooked.CompareAndSwap(false, true) {
					close(atGate) // B looked: nothing cached, no error yet
					<-flightDone  // A's flight ends meanwhile
				}
			})
			defer restore()
			type answer struct {
				token string
				err   error
			}
			late := make(chan answer, 1)
			go func() {
				token, err := ts.Token(ctxT(t), "inventory-service") // B
				late <- answer{token, err}
			}()
			<-atGate
			token, err := ts.Token(ctxT(t), "inventory-service") // A
			close(flightDone)
			if b := <-late; b.token != token || b.err != err || (mode == "") != (err == nil) {
				t.Fatalf("B and A got different answers (same token: %v; errors %v and %v)", b.token == token, b.err, err)
			}
			if n := f.Requests(); n != 1 {
				t.Fatalf("authz got %d requests, want 1", n)
			}
		})
	}
}
