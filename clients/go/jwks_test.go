package authz_test

import (
	"context"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/golang-jwt/jwt/v5"
)

type fetchEvent struct {
	kids []string
	err  error
}

// proxied is a verifier that reads the JWKS through a counting proxy, on a fake clock, and reports
// every fetch on a channel.
func proxied(t *testing.T, proxy *testissuer.JWKSProxy, clock *testissuer.FakeClock, mod func(*authz.VerifierConfig)) (*authz.Verifier, chan fetchEvent, error) {
	t.Helper()
	fetches := make(chan fetchEvent, 256)
	cfg := authz.VerifierConfig{
		Issuer: testissuer.IssuerName, Audience: "inventory-service", JWKSURL: proxy.URL(), Clock: clock,
		OnJWKSFetch: func(kids []string, err error) { fetches <- fetchEvent{kids, err} },
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := authz.NewVerifier(ctxT(t), cfg)
	if err == nil {
		t.Cleanup(func() { _ = v.Close() })
	}
	return v, fetches, err
}

// loaded is proxied for a verifier that must start: it fails the test otherwise, and returns once the
// first load is reported.
func loaded(t *testing.T, proxy *testissuer.JWKSProxy, clock *testissuer.FakeClock) (*authz.Verifier, chan fetchEvent) {
	t.Helper()
	v, fetches, err := proxied(t, proxy, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	nextFetch(t, fetches)
	return v, fetches
}

func nextFetch(t *testing.T, ch chan fetchEvent) fetchEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no JWKS fetch")
		return fetchEvent{}
	}
}

func drainArmed(c *testissuer.FakeClock) time.Duration {
	var last time.Duration
	for {
		select {
		case d := <-c.Armed:
			last = d
		default:
			return last
		}
	}
}

func TestUnknownKIDFloodCausesAtMostOneFetchPerCooldown(t *testing.T) {
	proxy := testissuer.NewJWKSProxy(fake.JWKSURL)
	defer proxy.Close()
	clock := testissuer.NewFakeClock()
	v, _ := loaded(t, proxy, clock)
	s := newStaticSet()
	forged := func(i int) string {
		return testissuer.Sign(jwt.SigningMethodRS256, s.rsa, "forged-"+string(rune('a'+i%26)), s.claims(), nil)
	}
	// Within the cooldown of the first load: no fetch at all.
	for i := 0; i < 50; i++ {
		_, err := v.Verify(ctxT(t), forged(i), s.cert)
		wantCode(t, err, authz.ErrCodeTokenUnknownKID)
	}
	if got := proxy.Requests.Load(); got != 1 {
		t.Fatalf("%d JWKS requests within the cooldown, want 1 (the first load)", got)
	}
	// After it: 100 concurrent forgeries share one refetch.
	clock.Advance(authz.DefaultUnknownKIDCooldown)
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _ = v.Verify(context.Background(), forged(i), s.cert)
		}(i)
	}
	wg.Wait()
	if got := proxy.Requests.Load(); got != 2 {
		t.Fatalf("%d JWKS requests, want 2", got)
	}
}

func TestJWKSDownBeforeTheFirstLoad(t *testing.T) {
	proxy := testissuer.NewJWKSProxy(fake.JWKSURL)
	defer proxy.Close()
	proxy.Mode.Store("down")
	clock := testissuer.NewFakeClock()
	if _, _, err := proxied(t, proxy, clock, nil); err == nil {
		t.Fatal("NewVerifier must fail when the first load fails")
	} else {
		var ve *authz.VerifyError
		if !errors.As(err, &ve) || ve.Code != authz.ErrCodeJWKSUnavailable {
			t.Fatalf("want ERR_JWKS_UNAVAILABLE, got %v", err)
		}
	}

	proxy.Requests.Store(0)
	v, fetches, err := proxied(t, proxy, clock, func(c *authz.VerifierConfig) { c.StartWithoutKeys = true })
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextFetch(t, fetches); ev.err == nil {
		t.Fatal("the first load should have failed")
	}
	if retry := drainArmed(clock); retry != time.Second {
		t.Fatalf("first retry in %v, want 1s", retry)
	}
	token, _ := fake.RawToken("order-service", "inventory-service", "stock:read")
	peer := leaf(fake.ClientCert("order-service"))
	for i := 0; i < 100; i++ { // the cooldown holds before the first load too
		_, err := v.Verify(ctxT(t), token, peer)
		wantCode(t, err, authz.ErrCodeJWKSUnavailable)
	}
	if got := proxy.Requests.Load(); got != 1 {
		t.Fatalf("%d JWKS requests, want 1: tokens must not cause fetches within the cooldown", got)
	}
	clock.Advance(time.Second) // the background retry, still down: backs off to 2 s
	nextFetch(t, fetches)
	if retry := drainArmed(clock); retry != 2*time.Second {
		t.Fatalf("second retry in %v, want 2s", retry)
	}
	proxy.Mode.Store("")
	clock.Advance(2 * time.Second)
	if ev := nextFetch(t, fetches); ev.err != nil || len(ev.kids) == 0 {
		t.Fatalf("the retry after the JWKS came back should load it: %+v", ev)
	}
	if _, err := v.Verify(ctxT(t), token, peer); err != nil {
		t.Fatal(err)
	}
}

func TestAFailingOrGarbageJWKSKeepsTheLastGoodSet(t *testing.T) {
	proxy := testissuer.NewJWKSProxy(fake.JWKSURL)
	defer proxy.Close()
	clock := testissuer.NewFakeClock()
	logger, logs := jsonLogger()
	v, fetches, err := proxied(t, proxy, clock, func(c *authz.VerifierConfig) { c.Logger = logger })
	if err != nil {
		t.Fatal(err)
	}
	nextFetch(t, fetches)
	kids := strings.Join(v.KIDs(), ",")
	token, _ := fake.RawToken("order-service", "inventory-service", "stock:read")
	peer := leaf(fake.ClientCert("order-service"))
	for _, mode := range []string{"garbage", "empty", "down"} {
		t.Run(mode, func(t *testing.T) {
			proxy.Mode.Store(mode)
			if err := v.Refresh(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if ev := nextFetch(t, fetches); ev.err == nil {
				t.Fatal("the fetch should have failed")
			}
			if got := strings.Join(v.KIDs(), ","); got != kids {
				t.Fatalf("kids %s, want the last good %s", got, kids)
			}
			if _, err := v.Verify(ctxT(t), token, peer); err != nil {
				t.Fatal(err)
			}
		})
	}
	if !strings.Contains(logs.String(), `"event":"jwks_fetch_failed"`) {
		t.Fatal("a failed fetch should be logged")
	}
}

func TestJWKSRefreshHonoursMaxAgeWithinBounds(t *testing.T) {
	cases := []struct {
		cacheControl string
		want         time.Duration
	}{
		{"public, max-age=120", 120 * time.Second},
		{"max-age=5", authz.MinJWKSRefresh},
		{"public, max-age=86400", authz.MaxJWKSRefresh},
		{"no-store", authz.MinJWKSRefresh},
		{"public", authz.DefaultJWKSRefresh},
	}
	for _, c := range cases {
		t.Run(c.cacheControl, func(t *testing.T) {
			proxy := testissuer.NewJWKSProxy(fake.JWKSURL)
			defer proxy.Close()
			proxy.CacheControl.Store(c.cacheControl)
			clock := testissuer.NewFakeClock()
			_, fetches := loaded(t, proxy, clock)
			if got := drainArmed(clock); got != c.want {
				t.Errorf("next refresh in %v, want %v", got, c.want)
			}
			if c.cacheControl == "public, max-age=120" { // and the timer really refetches
				clock.Advance(120 * time.Second)
				if ev := nextFetch(t, fetches); ev.err != nil {
					t.Errorf("periodic refresh: %v", ev.err)
				}
				if proxy.Requests.Load() != 2 {
					t.Errorf("%d requests, want 2", proxy.Requests.Load())
				}
			}
		})
	}
}

// Keys of an algorithm this verifier does not allow are left out: when authz has moved to ES256 and
// pruned its RSA key, an RS256-only verifier holds no key at all — it does not keep the pruned one.
func TestAnIssuerThatMovedToAnotherAlgorithmLeavesNoOldKeyTrusted(t *testing.T) {
	proxy := testissuer.NewJWKSProxy("")
	defer proxy.Close()
	rsaOld, ec := testissuer.RSAKey(), testissuer.ECKey()
	proxy.AddKey(&rsaOld.PublicKey, "rsa-1", "RS256")
	clock := testissuer.NewFakeClock()
	v, fetches := loaded(t, proxy, clock)
	s := newStaticSet()
	old := testissuer.Sign(jwt.SigningMethodRS256, rsaOld, "rsa-1", s.claims(), nil)
	if _, err := v.Verify(ctxT(t), old, s.cert); err != nil {
		t.Fatal(err)
	}
	// The JWKS now holds only the ES256 key (the RSA key pruned after the migration).
	proxy.Replace(testissuer.JWK(&ec.PublicKey, "ec-1", "ES256"))
	if err := v.Refresh(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if ev := nextFetch(t, fetches); ev.err != nil || len(ev.kids) != 0 {
		t.Fatalf("the refresh: %+v, want a success leaving no key (before: a failed fetch keeping the pruned RSA key for ever)", ev)
	}
	_, err := v.Verify(ctxT(t), old, s.cert)
	wantCode(t, err, authz.ErrCodeTokenUnknownKID)
}

// A JWKS entry that carries private members is never trusted; a kid that appears twice is
// ambiguous, and neither of its keys is (as the TypeScript SDK's key set).
func TestJWKSEntriesThatCannotBeTrustedAreLeftOut(t *testing.T) {
	proxy := testissuer.NewJWKSProxy("")
	defer proxy.Close()
	s := newStaticSet()
	good, private, twiceA, twiceB := testissuer.RSAKey(), testissuer.RSAKey(), testissuer.RSAKey(), testissuer.RSAKey()
	withD := testissuer.JWK(&private.PublicKey, "private-1", "RS256")
	withD["d"] = "AQAB"
	proxy.Replace(testissuer.JWK(&good.PublicKey, "good-1", "RS256"), withD,
		testissuer.JWK(&twiceA.PublicKey, "twice", "RS256"), testissuer.JWK(&twiceB.PublicKey, "twice", "RS256"))
	v, _ := loaded(t, proxy, testissuer.NewFakeClock())
	if got := strings.Join(v.KIDs(), ","); got != "good-1" {
		t.Fatalf("kids %s, want good-1 alone", got)
	}
	for name, c := range map[string]struct {
		key  *rsa.PrivateKey
		kid  string
		code authz.VerifyCode
	}{
		"a key published with its private exponent": {private, "private-1", authz.ErrCodeTokenUnknownKID},
		"the first key of a repeated kid":           {twiceA, "twice", authz.ErrCodeTokenUnknownKID},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(ctxT(t), testissuer.Sign(jwt.SigningMethodRS256, c.key, c.kid, s.claims(), nil), s.cert)
			wantCode(t, err, c.code)
		})
	}
}
