package authz_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

func TestTokenSourceFetchesATokenBoundToItsCertificate(t *testing.T) {
	ts := tokenSource(t, iss, "order-service", nil)
	token, err := ts.Token(ctxT(t), "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	v := liveVerifier(t, iss, nil)
	caller, err := v.Verify(ctxT(t), token, leaf(iss.ClientCert("order-service")))
	if err != nil {
		t.Fatal(err)
	}
	if caller.Service != "order-service" || caller.Audience != "inventory-service" || len(caller.Scopes) != 1 || caller.Scopes[0] != "stock:read" || caller.TokenID == "" {
		t.Fatalf("caller %+v", caller)
	}
	if d := time.Until(caller.ExpiresAt); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("expires in %v, want about 10 min (AUTHZ_TOKEN_TTL 600)", d)
	}
	// Over another certificate the same token is refused: it is bound to order-service's.
	_, err = v.Verify(ctxT(t), token, leaf(iss.ClientCert("payment-service")))
	wantCode(t, err, authz.ErrCodeBindingMismatch)
}

func TestTokenSourceCachesOneTokenPerAudienceAndScopes(t *testing.T) {
	ts := tokenSource(t, iss, "order-service", nil)
	before, _ := iss.TokensIssued("inventory-service")
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
	after, _ := iss.TokensIssued("inventory-service")
	if after-before != 2 {
		t.Fatalf("authz issued %d tokens, want 2", after-before)
	}
}

func TestTokenSourceHundredConcurrentCallersCauseOneRequest(t *testing.T) {
	ts := tokenSource(t, iss, "payment-service", nil)
	before, _ := iss.TokensIssued("order-service")
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
	after, _ := iss.TokensIssued("order-service")
	if after-before != 1 {
		t.Fatalf("100 callers caused %d token requests, want 1", after-before)
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
	ts := tokenSource(t, iss, "order-service", func(c *authz.TokenSourceConfig) {
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

func TestTokenSourceRefreshesNoLaterThan30sBeforeExpiry(t *testing.T) {
	clock := testissuer.NewFakeClock()
	var evs chan authz.RefreshEvent
	ts := tokenSource(t, iss, "order-service", func(c *authz.TokenSourceConfig) {
		c.Clock = clock
		c.RefreshRatio = 0.99
		c.Rand = func() float64 { return 1 }
		evs = events(c)
	})
	if _, err := ts.Token(ctxT(t), "inventory-service", "stock:deduct"); err != nil {
		t.Fatal(err)
	}
	ev := next(t, evs)
	if got := ev.ExpiresAt.Sub(ev.RefreshAt); got != 30*time.Second {
		t.Fatalf("refresh %v before expiry, want 30s", got)
	}
}

func TestTokenSourceServesTheCachedTokenWhileAuthzIsDownAndRetriesWithBackoff(t *testing.T) {
	down, err := testissuer.Start(testissuer.Options{FixedPorts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
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
	down.Stop()

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

	if err := down.Restart(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(fail2.RetryAt.Sub(clock.Now()))
	ok := next(t, evs)
	if ok.Err != nil {
		t.Fatalf("after authz is back the retry should succeed: %v", ok.Err)
	}
	fresh, _ := ts.Token(ctxT(t), "inventory-service")
	if fresh == first {
		t.Fatal("want the refreshed token")
	}

	// Down again, until the cached token expires: then callers get the error.
	down.Stop()
	clock.Advance(ok.ExpiresAt.Sub(clock.Now()))
	for len(evs) > 0 {
		<-evs
	}
	if _, err := ts.Token(ctxT(t), "inventory-service"); !errors.Is(err, authz.ErrIssuerUnreachable) {
		t.Fatalf("after expiry with authz down, want ErrIssuerUnreachable, got %v", err)
	}
}

func TestTokenSourceRefusalIsATokenErrorWithTheOAuthCode(t *testing.T) {
	ts := tokenSource(t, iss, "payment-service", nil)
	cases := []struct {
		audience, scope, code string
	}{
		{"inventory-service", "stock:deduct", "invalid_scope"},
		{"billing-service", "", "invalid_target"},
	}
	for _, c := range cases {
		_, err := ts.Token(ctxT(t), c.audience, c.scope)
		var te *authz.TokenError
		if !errors.As(err, &te) || te.Code != c.code || te.Status != 400 {
			t.Fatalf("%s %s: want TokenError %s, got %v", c.audience, c.scope, c.code, err)
		}
	}
}

func TestTokenSourceAfterCloseFailsWithErrClosed(t *testing.T) {
	ts := tokenSource(t, iss, "order-service", nil)
	ts.Close()
	if _, err := ts.Token(ctxT(t), "inventory-service"); !errors.Is(err, authz.ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}

func TestNewTokenSourceRefusesPlainHTTPAndNoCertificate(t *testing.T) {
	if _, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: "http://127.0.0.1:1/token", TLS: iss.ClientTLS("order-service")}); err == nil {
		t.Fatal("an http token URL must be refused")
	}
	if _, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: iss.TokenURL}); err == nil {
		t.Fatal("a token source without a client certificate must be refused")
	}
}

func TestTransportSetsTheServiceTokenAndNeverSendsItInClear(t *testing.T) {
	ts := tokenSource(t, iss, "order-service", nil)
	got := make(chan string, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get(authz.ServiceTokenHeader)
	}))
	pki := testissuer.NewPKI("inventory CA")
	srv.TLS = pki.ServerTLS(iss.CAPool())
	srv.StartTLS()
	defer srv.Close()
	tlsCfg := iss.ClientTLS("order-service")
	tlsCfg.RootCAs = pki.Pool
	client := &http.Client{Transport: authz.NewTransport(&http.Transport{TLSClientConfig: tlsCfg}, ts, "inventory-service", "stock:read")}
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
}
