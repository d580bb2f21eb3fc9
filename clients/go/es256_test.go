//go:build live

package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/golang-jwt/jwt/v5"
)

// ---- RS256 → ES256 under load --------------------------------------------------------------------

// tally counts the tokens the load fetched and verified, by algorithm and by kid, and keeps the first
// failures. waitFor wakes on every change.
type tally struct {
	mu       sync.Mutex
	byAlg    map[string]int
	algOfKid map[string]map[string]bool
	failures []string
	changed  chan struct{}
}

func newTally() *tally {
	return &tally{byAlg: map[string]int{}, algOfKid: map[string]map[string]bool{}, changed: make(chan struct{})}
}

func (ta *tally) notify() {
	close(ta.changed)
	ta.changed = make(chan struct{})
}

func (ta *tally) add(alg, kid string) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.byAlg[alg]++
	if ta.algOfKid[kid] == nil {
		ta.algOfKid[kid] = map[string]bool{}
	}
	ta.algOfKid[kid][alg] = true
	ta.notify()
}

func (ta *tally) fail(format string, args ...any) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if len(ta.failures) < 20 {
		ta.failures = append(ta.failures, fmt.Sprintf(format, args...))
	}
	ta.notify()
}

func (ta *tally) count(alg string) int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.byAlg[alg]
}

// waitFor waits until the counts satisfy pred; a failure of the load, or the deadline, ends the test.
func (ta *tally) waitFor(t *testing.T, what string, timeout time.Duration, pred func(byAlg map[string]int) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ta.mu.Lock()
		done, failures, counts, changed := pred(ta.byAlg), ta.failures, fmt.Sprint(ta.byAlg), ta.changed
		ta.mu.Unlock()
		if len(failures) > 0 {
			t.Fatalf("waiting for %s, the load failed:\n%s", what, strings.Join(failures, "\n"))
		}
		if done {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s within %v (tokens so far: %s)", what, timeout, counts)
		}
	}
}

// rotationLoad fetches fresh tokens from authz's /token over its own keep-alive mTLS client (no
// TokenSource, no cache) until ctx ends, and verifies every one with both verifiers: the one allowing
// RS256 and ES256 must accept it; the default one (RS256 only) must accept an RS256 token and refuse an
// ES256 token with ERR_TOKEN_ALG. A worker stops at its first failure.
func rotationLoad(ctx context.Context, is *testissuer.Issuer, ta *tally, both, rsOnly *authz.Verifier, peer *x509.Certificate) {
	client := is.TokenClient("order-service")
	defer client.CloseIdleConnections()
	for ctx.Err() == nil {
		token, err := is.PostToken(client, "inventory-service", "stock:read")
		if err != nil {
			ta.fail("/token: %v", err)
			return
		}
		h, _ := testissuer.Segments(token)
		alg, _ := h["alg"].(string)
		kid, _ := h["kid"].(string)
		vctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, errBoth := both.Verify(vctx, token, peer)
		_, errRS := rsOnly.Verify(vctx, token, peer)
		cancel()
		if errBoth != nil {
			ta.fail("an %s token (kid %s) refused by the RS256+ES256 verifier: %v", alg, kid, errBoth)
			return
		}
		switch alg {
		case authz.RS256:
			if errRS != nil {
				ta.fail("an RS256 token (kid %s) refused by the default verifier: %v", kid, errRS)
				return
			}
		case authz.ES256:
			if ve, ok := errRS.(*authz.VerifyError); !ok || ve.Code != authz.ErrCodeTokenAlg {
				ta.fail("an ES256 token (kid %s) at the default (RS256-only) verifier: want ERR_TOKEN_ALG, got %v", kid, errRS)
				return
			}
		default:
			ta.fail("a token with alg %q (kid %s)", alg, kid)
			return
		}
		ta.add(alg, kid)
	}
}

// wantDiscoveryAlgs checks access_token_signing_alg_values_supported of authz's discovery document.
func wantDiscoveryAlgs(t *testing.T, is *testissuer.Issuer, when string, want ...string) {
	t.Helper()
	doc, err := is.Discovery()
	if err != nil {
		t.Fatal(err)
	}
	list, _ := doc["access_token_signing_alg_values_supported"].([]any)
	var got []string
	for _, a := range list {
		s, _ := a.(string)
		got = append(got, s)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s: discovery advertises %v, want %v", when, list, want)
	}
}

func b64Field(t *testing.T, jwk map[string]any, name string) []byte {
	t.Helper()
	s, _ := jwk[name].(string)
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) == 0 {
		t.Fatalf("JWK %v: member %q is not base64url: %q", jwk["kid"], name, s)
	}
	return b
}

// ecJWK checks that a published JWK is exactly an ES256 P-256 public key and returns the key.
func ecJWK(t *testing.T, jwk map[string]any) *ecdsa.PublicKey {
	t.Helper()
	for _, member := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := jwk[member]; ok {
			t.Fatalf("the JWKS publishes the private member %q of %v", member, jwk["kid"])
		}
	}
	if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk["alg"] != "ES256" || jwk["use"] != "sig" {
		t.Fatalf("the ES256 key is published as %v, want kty EC, crv P-256, alg ES256, use sig", jwk)
	}
	x, y := b64Field(t, jwk, "x"), b64Field(t, jwk, "y")
	if len(x) != 32 || len(y) != 32 {
		t.Fatalf("P-256 coordinates of %d and %d bytes, want 32 each (RFC 7518 §6.2.1.2)", len(x), len(y))
	}
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	if !pub.Curve.IsOnCurve(pub.X, pub.Y) {
		t.Fatal("the published EC point is not on P-256")
	}
	return pub
}

// rsaJWK checks that a published JWK is an RS256 public key and returns the key.
func rsaJWK(t *testing.T, jwk map[string]any) *rsa.PublicKey {
	t.Helper()
	if jwk["kty"] != "RSA" || jwk["alg"] != "RS256" || jwk["use"] != "sig" {
		t.Fatalf("the RS256 key is published as %v, want kty RSA, alg RS256, use sig", jwk)
	}
	if _, ok := jwk["d"]; ok {
		t.Fatalf("the JWKS publishes the private exponent of %v", jwk["kid"])
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(b64Field(t, jwk, "n")), E: int(new(big.Int).SetBytes(b64Field(t, jwk, "e")).Int64())}
}

// The operator's migration, against the live issuer: `keys rotate --alg ES256` with the default (safe)
// activation delay, 2 × AUTHZ_JWKS_MAX_AGE, while eight callers keep fetching fresh tokens. Every token
// verifies; the switch happens; the default verifier refuses the ES256 ones for their algorithm; the
// discovery document advertises both algorithms while both keys are published.
func TestLiveRotationFromRS256ToES256UnderLoad(t *testing.T) {
	t.Parallel()     // its own issuer; runs beside the forgery test once the sequential tests are done
	const maxAge = 2 // s: the activation delay is 4 s
	rot, err := testissuer.Start(testissuer.Options{Env: []string{fmt.Sprintf("AUTHZ_JWKS_MAX_AGE=%d", maxAge)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rot.Close)
	peer := leaf(rot.ClientCert("order-service"))

	// Both verifiers read the live JWKS on one fake clock: they refresh when the test moves it, which it
	// does once, after the ES256 key is published. Nothing else can make them fetch (the unknown-kid
	// cooldown is measured on that clock too), so a token of a kid they have not learnt fails. The
	// max-age is tiny to keep the test short; the kit refreshes at most every MinJWKSRefresh (30 s), so on
	// a real clock this rotation's 4 s would be too short for it (see the README's ES256 section). With
	// a production max-age (≥ 30 s) the refresh, every max-age, falls within the 2 × max-age delay: the
	// fake clock puts it there.
	clock := testissuer.NewFakeClock()
	fetches := make(chan fetchEvent, 64)
	verifier := func(algorithms []string) *authz.Verifier {
		return jwksVerifier(t, rot, func(c *authz.VerifierConfig) {
			c.Clock, c.Algorithms = clock, algorithms
			c.OnJWKSFetch = func(kids []string, err error) { fetches <- fetchEvent{kids, err} }
		})
	}
	both := verifier([]string{"RS256", "ES256"})
	rsOnly := verifier(nil)
	for i := 0; i < 2; i++ {
		if ev := nextFetch(t, fetches); ev.err != nil || len(ev.kids) != 1 {
			t.Fatalf("first load: %+v, want the one RSA key", ev)
		}
	}
	rsaKid := both.KIDs()[0]
	if refresh := drainArmed(clock); refresh != authz.MinJWKSRefresh {
		t.Fatalf("next JWKS refresh in %v, want %v (authz's max-age of %d s, raised to the kit's floor)", refresh, authz.MinJWKSRefresh, maxAge)
	}
	wantDiscoveryAlgs(t, rot, "before the rotation", "RS256")

	ta := newTally()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rotationLoad(ctx, rot, ta, both, rsOnly, peer)
		}()
	}
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { stop(); wg.Wait() }) }
	t.Cleanup(stopLoad)
	ta.waitFor(t, "100 RS256 tokens before the rotation", 30*time.Second, func(n map[string]int) bool { return n["RS256"] >= 100 })

	rotateStarted := time.Now()
	// A short activation delay, as the test's verifiers refresh on a fake clock: the issuer's own safe
	// default is at least 2 × 30 s (the SDKs' refresh floor), too long for a test.
	ecKid, err := rot.NewKey(ctxT(t), "rotate", "--alg", "ES256", "--activate-in", fmt.Sprintf("%ds", 2*maxAge), "--force")
	if err != nil {
		t.Fatal(err)
	}
	publishedAfter := time.Since(rotateStarted)

	// Published: the JWKS holds both keys, each with its own alg, and discovery lists both algorithms.
	keys, err := rot.PublishedKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[rsaKid] == nil || keys[ecKid] == nil {
		t.Fatalf("JWKS kids %v, want %s and %s", testissuer.SortedKeys(boolSet(keys)), rsaKid, ecKid)
	}
	rsaJWK(t, keys[rsaKid])
	if got := authz.Thumbprint(ecJWK(t, keys[ecKid])); got != ecKid {
		t.Fatalf("RFC 7638 thumbprint of the EC key %s, authz's kid %s", got, ecKid)
	}
	wantDiscoveryAlgs(t, rot, "ES256 key published", "RS256", "ES256")

	// The verifiers' periodic refresh (authz's max-age, raised to MinJWKSRefresh) falls within the
	// activation delay: they learn the new kid before it signs anything.
	// The default verifier (RS256 only) leaves the EC key out of its set.
	clock.Advance(authz.MinJWKSRefresh)
	held := map[int]bool{}
	for i := 0; i < 2; i++ {
		ev := nextFetch(t, fetches)
		if ev.err != nil {
			t.Fatalf("refresh after publication: %+v", ev)
		}
		held[len(ev.kids)] = true
	}
	if !held[1] || !held[2] || len(both.KIDs()) != 2 || len(rsOnly.KIDs()) != 1 {
		t.Fatalf("after the refresh the verifiers hold %v and %v, want %s and %s, and %s alone", both.KIDs(), rsOnly.KIDs(), rsaKid, ecKid, rsaKid)
	}
	if n := ta.count("ES256"); n > 0 {
		t.Fatalf("%d ES256 tokens before the verifiers refreshed, %v after the rotation began: the activation delay is %d s", n, time.Since(rotateStarted), 2*maxAge)
	}
	fetchesBefore := both.JWKSFetches() + rsOnly.JWKSFetches()

	if err := rot.WaitSigningKey(30*time.Second, ecKid); err != nil {
		t.Fatal(err)
	}
	switchedAfter := time.Since(rotateStarted)
	if switchedAfter < 2*maxAge*time.Second {
		t.Fatalf("the ES256 key signs %v after rotate began, want at least its activation delay %d s", switchedAfter, 2*maxAge)
	}
	ta.waitFor(t, "100 ES256 tokens after the switch", 30*time.Second, func(n map[string]int) bool { return n["ES256"] >= 100 })
	stopLoad()

	ta.mu.Lock()
	failures, counts, algOfKid := ta.failures, ta.byAlg, ta.algOfKid
	ta.mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("the load failed:\n%s", strings.Join(failures, "\n"))
	}
	if len(algOfKid) != 2 || len(algOfKid[rsaKid]) != 1 || !algOfKid[rsaKid]["RS256"] || len(algOfKid[ecKid]) != 1 || !algOfKid[ecKid]["ES256"] {
		t.Fatalf("algorithms by kid %v, want %s only RS256 and %s only ES256", algOfKid, rsaKid, ecKid)
	}
	if got := both.JWKSFetches() + rsOnly.JWKSFetches(); got != fetchesBefore {
		t.Fatalf("%d JWKS fetches during the switch, want none", got-fetchesBefore)
	}
	// The retired RSA key stays published while its tokens may live: both algorithms are still advertised.
	wantDiscoveryAlgs(t, rot, "after the switch", "RS256", "ES256")
	t.Logf("%d RS256 and %d ES256 tokens, each verified by both verifiers; published %v and switched %v after rotate began",
		counts["RS256"], counts["ES256"], publishedAfter.Round(time.Millisecond), switchedAfter.Round(time.Millisecond))

	// The keys CLI's PEM export of the set (kid = thumbprint) verifies the ES256 tokens too.
	pemKeys, err := rot.KeysCLI(ctxT(t), "export", "--public", "--format", "pem")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(file, pemKeys, 0o644); err != nil {
		t.Fatal(err)
	}
	static, err := authz.NewVerifier(ctxT(t), authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", KeysFile: file, Algorithms: []string{"RS256", "ES256"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = static.Close() })
	token, err := rot.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := testissuer.Segments(token); h["alg"] != "ES256" || h["kid"] != ecKid {
		t.Fatalf("a token after the switch has header %v, want ES256 and kid %s", h, ecKid)
	}
	if _, err := static.Verify(ctxT(t), token, peer); err != nil {
		t.Fatalf("the PEM export does not verify an ES256 token: %v", err)
	}
}

func boolSet[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// ---- cross-algorithm forgeries on the issuer's real keys -----------------------------------------

// An attacker knows the live JWKS (it is public) but none of authz's private keys: it signs with its
// own keys under the kid of one of authz's, naming whichever algorithm it likes. Against an issuer that
// publishes a real RSA key and a real P-256 key, every such token is refused — by the algorithm check
// when the header's alg is not the kid's key's, by the signature when it is — and none makes a verifier
// fetch the JWKS again.
func TestLiveCrossAlgorithmForgeriesOnTheIssuersKeysAreRefused(t *testing.T) {
	t.Parallel() // its own issuer
	is, err := testissuer.Start(testissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(is.Close)
	// A P-256 key published beside the active RSA key (it would sign in an hour, past the safe delay).
	ecKid, err := is.NewKey(ctxT(t), "rotate", "--alg", "ES256", "--activate-in", "1h")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := is.PublishedKeys()
	if err != nil {
		t.Fatal(err)
	}
	var rsaKid string
	for kid := range keys {
		if kid != ecKid {
			rsaKid = kid
		}
	}
	if len(keys) != 2 || keys[ecKid] == nil {
		t.Fatalf("JWKS kids %v, want the RSA key and %s", testissuer.SortedKeys(boolSet(keys)), ecKid)
	}
	rsaPub, ecPub := rsaJWK(t, keys[rsaKid]), ecJWK(t, keys[ecKid])
	wantDiscoveryAlgs(t, is, "an ES256 key next", "RS256", "ES256")

	peer := leaf(is.ClientCert("order-service"))
	// On a clock that stands still: the unknown-kid cooldown never passes, so a fetch count above the
	// first loads could only come from a known kid.
	clock := testissuer.NewFakeClock()
	both := jwksVerifier(t, is, func(c *authz.VerifierConfig) { c.Algorithms, c.Clock = []string{"RS256", "ES256"}, clock })
	rsOnly := jwksVerifier(t, is, func(c *authz.VerifierConfig) { c.Clock = clock })
	if len(both.KIDs()) != 2 || len(rsOnly.KIDs()) != 1 {
		t.Fatalf("verifiers hold %v and %v, want both keys, and the RSA key alone (keys of an algorithm not allowed are left out)", both.KIDs(), rsOnly.KIDs())
	}

	// The control: a genuine token (RS256, the RSA kid) verifies at both.
	genuine, err := is.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := testissuer.Segments(genuine); h["alg"] != "RS256" || h["kid"] != rsaKid {
		t.Fatalf("genuine token header %v, want RS256 and kid %s", h, rsaKid)
	}
	for name, v := range map[string]*authz.Verifier{"RS256+ES256": both, "default": rsOnly} {
		if _, err := v.Verify(ctxT(t), genuine, peer); err != nil {
			t.Fatalf("%s verifier: the genuine token: %v", name, err)
		}
	}

	// Forgeries: good claims, bound to the caller's real certificate; only the key and alg are the attacker's.
	claims := func() jwt.MapClaims {
		return testissuer.Claims("order-service", "inventory-service", peer, "stock:read", time.Now())
	}
	myRSA, myEC := testissuer.RSAKey(), testissuer.ECKey()
	h, p := testissuer.Segments(genuine)
	h["alg"] = "ES256"
	sig, _ := base64.RawURLEncoding.DecodeString(genuine[strings.LastIndex(genuine, ".")+1:])
	genuineRelabelled := testissuer.Encode(h, p, sig)
	const alg, signature = authz.ErrCodeTokenAlg, authz.ErrCodeTokenSignature
	cases := []struct {
		name         string
		token        string
		both, rsOnly authz.VerifyCode
	}{
		{"ES256 header on the RSA kid", testissuer.Sign(jwt.SigningMethodES256, myEC, rsaKid, claims(), nil), alg, alg},
		// The default verifier does not hold the EC key at all (as the TypeScript SDK's).
		{"RS256 header on the EC kid", testissuer.Sign(jwt.SigningMethodRS256, myRSA, ecKid, claims(), nil), alg, authz.ErrCodeTokenUnknownKID},
		{"the genuine token relabelled ES256", genuineRelabelled, alg, alg},
		{"HS256 keyed with the RSA key's PEM", testissuer.Sign(jwt.SigningMethodHS256, pemOf(rsaPub), rsaKid, claims(), nil), alg, alg},
		{"HS256 keyed with the EC key's PEM", testissuer.Sign(jwt.SigningMethodHS256, pemOf(ecPub), ecKid, claims(), nil), alg, alg},
		{"none on the RSA kid", testissuer.Sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, rsaKid, claims(), nil), alg, alg},
		{"none on the EC kid", testissuer.Sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ecKid, claims(), nil), alg, alg},
		// The kid's own algorithm, but the attacker's key: the signature fails (at the default verifier
		// the ES256 one fails earlier, for its algorithm).
		{"RS256 on the RSA kid, another key", testissuer.Sign(jwt.SigningMethodRS256, myRSA, rsaKid, claims(), nil), signature, signature},
		{"ES256 on the EC kid, another key", testissuer.Sign(jwt.SigningMethodES256, myEC, ecKid, claims(), nil), signature, alg},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := both.Verify(ctxT(t), c.token, peer)
			if ve, ok := err.(*authz.VerifyError); !ok || ve.Code != c.both {
				t.Errorf("RS256+ES256 verifier: want %s, got %v", c.both, err)
			}
			_, err = rsOnly.Verify(ctxT(t), c.token, peer)
			if ve, ok := err.(*authz.VerifyError); !ok || ve.Code != c.rsOnly {
				t.Errorf("default verifier: want %s, got %v", c.rsOnly, err)
			}
		})
	}
	if n := both.JWKSFetches() + rsOnly.JWKSFetches(); n != 2 {
		t.Fatalf("%d JWKS fetches, want 2 (each verifier's first load): a known kid never causes a refetch, an unknown one none within the cooldown", n)
	}
}
