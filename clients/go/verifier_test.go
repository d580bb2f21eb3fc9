package authz_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/golang-jwt/jwt/v5"
)

// staticSet is a verifier over a static JWKS of one RSA key (kid rsa-1, RS256) and one P-256 key
// (kid ec-1, ES256), both made here, so tests can sign any token they need.
type staticSet struct {
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	cert  *x509.Certificate // the peer certificate tokens are bound to
	other *x509.Certificate
	clock *testissuer.FakeClock
}

func newStaticSet() *staticSet {
	pki := testissuer.NewPKI("callers")
	return &staticSet{
		rsa:   testissuer.RSAKey(),
		ec:    testissuer.ECKey(),
		cert:  pki.Issue("order-service", false).Leaf,
		other: pki.Issue("payment-service", false).Leaf,
		clock: testissuer.NewFakeClock(),
	}
}

func (s *staticSet) jwks() []byte {
	return testissuer.JWKS(testissuer.JWK(&s.rsa.PublicKey, "rsa-1", "RS256"), testissuer.JWK(&s.ec.PublicKey, "ec-1", "ES256"))
}

func (s *staticSet) verifier(t *testing.T, mod func(*authz.VerifierConfig)) *authz.Verifier {
	t.Helper()
	return newVerifier(t, authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", Keys: s.jwks(), Clock: s.clock}, mod)
}

func (s *staticSet) claims() jwt.MapClaims {
	return testissuer.Claims("order-service", "inventory-service", s.cert, "stock:read", s.clock.Now())
}

func (s *staticSet) rs(claims jwt.MapClaims, header map[string]any) string {
	return testissuer.Sign(jwt.SigningMethodRS256, s.rsa, "rsa-1", claims, header)
}

func (s *staticSet) es(claims jwt.MapClaims, header map[string]any) string {
	return testissuer.Sign(jwt.SigningMethodES256, s.ec, "ec-1", claims, header)
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

func pemOf(pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerifierAcceptsGoodTokensOfEachAllowedAlgorithm(t *testing.T) {
	s := newStaticSet()
	v := s.verifier(t, func(c *authz.VerifierConfig) { c.Algorithms = []string{"RS256", "ES256"} })
	for name, token := range map[string]string{"RS256": s.rs(s.claims(), nil), "ES256": s.es(s.claims(), nil)} {
		t.Run(name, func(t *testing.T) {
			caller, err := v.Verify(ctxT(t), token, s.cert)
			if err != nil {
				t.Fatal(err)
			}
			if caller.Service != "order-service" || !caller.HasScope("stock:read") {
				t.Fatalf("caller %+v", caller)
			}
		})
	}
}

func TestVerifierTakesTheAlgorithmFromTheKeyNeverFromTheHeader(t *testing.T) {
	s := newStaticSet()
	both := s.verifier(t, func(c *authz.VerifierConfig) { c.Algorithms = []string{"RS256", "ES256"} })
	// An ES256 signature (by the EC key) under the RSA key's kid, and an RS256 signature under the EC
	// key's kid: each is refused by the alg check itself (ERR_TOKEN_ALG), before any signature math.
	esOnRSAKid := testissuer.Sign(jwt.SigningMethodES256, s.ec, "rsa-1", s.claims(), nil)
	rsOnECKid := testissuer.Sign(jwt.SigningMethodRS256, s.rsa, "ec-1", s.claims(), nil)
	_, err := both.Verify(ctxT(t), esOnRSAKid, s.cert)
	wantCode(t, err, authz.ErrCodeTokenAlg)
	_, err = both.Verify(ctxT(t), rsOnECKid, s.cert)
	wantCode(t, err, authz.ErrCodeTokenAlg)

	// The default allows RS256 only: a genuine ES256 token is refused.
	rsOnly := s.verifier(t, nil)
	_, err = rsOnly.Verify(ctxT(t), s.es(s.claims(), nil), s.cert)
	wantCode(t, err, authz.ErrCodeTokenAlg)
	if _, err := rsOnly.Verify(ctxT(t), s.rs(s.claims(), nil), s.cert); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierRefusesForgeriesAndBadClaims(t *testing.T) {
	s := newStaticSet()
	v := s.verifier(t, nil)
	now := s.clock.Now()
	foreign := testissuer.RSAKey()
	hsKey := pemOf(&s.rsa.PublicKey) // the classic confusion: the public key as an HMAC secret
	good := s.rs(s.claims(), nil)
	h, p := testissuer.Segments(good)
	h["alg"] = "none"
	none := testissuer.Encode(h, p, nil)
	sig := strings.Split(good, ".")[2]

	cases := []struct {
		name  string
		token string
		code  authz.VerifyCode
	}{
		{"alg none", none, authz.ErrCodeTokenAlg},
		{"alg none, signature kept", strings.TrimSuffix(none, ".") + "." + sig, authz.ErrCodeTokenAlg},
		{"HS256 keyed with the public key", testissuer.Sign(jwt.SigningMethodHS256, hsKey, "rsa-1", s.claims(), nil), authz.ErrCodeTokenAlg},
		{"RS512", testissuer.Sign(jwt.SigningMethodRS512, s.rsa, "rsa-1", s.claims(), nil), authz.ErrCodeTokenAlg},
		{"PS256", testissuer.Sign(jwt.SigningMethodPS256, s.rsa, "rsa-1", s.claims(), nil), authz.ErrCodeTokenAlg},
		{"a foreign key with a stolen kid", testissuer.Sign(jwt.SigningMethodRS256, foreign, "rsa-1", s.claims(), nil), authz.ErrCodeTokenSignature},
		{"an unknown kid", testissuer.Sign(jwt.SigningMethodRS256, foreign, "nope", s.claims(), nil), authz.ErrCodeTokenUnknownKID},
		{"no kid", s.rs(s.claims(), map[string]any{"kid": nil}), authz.ErrCodeTokenUnknownKID},
		{"typ JWT", s.rs(s.claims(), map[string]any{"typ": "JWT"}), authz.ErrCodeTokenTyp},
		{"no typ", s.rs(s.claims(), map[string]any{"typ": nil}), authz.ErrCodeTokenTyp},
		{"crit", s.rs(s.claims(), map[string]any{"crit": []string{"exp"}}), authz.ErrCodeTokenMalformed},
		{"wrong iss", s.rs(with(s.claims(), "iss", "https://evil.example"), nil), authz.ErrCodeTokenIssuer},
		{"no iss", s.rs(with(s.claims(), "iss", nil), nil), authz.ErrCodeTokenClaims},
		{"wrong aud", s.rs(with(s.claims(), "aud", "payment-service"), nil), authz.ErrCodeTokenAudience},
		{"aud array with this service", s.rs(with(s.claims(), "aud", []string{"inventory-service"}), nil), authz.ErrCodeTokenAudience},
		{"aud array of two", s.rs(with(s.claims(), "aud", []string{"inventory-service", "payment-service"}), nil), authz.ErrCodeTokenAudience},
		{"expired 31 s ago", s.rs(with(s.claims(), "iat", now.Add(-10*time.Minute).Unix(), "exp", now.Add(-31*time.Second).Unix()), nil), authz.ErrCodeTokenExpired},
		{"no exp", s.rs(with(s.claims(), "exp", nil), nil), authz.ErrCodeTokenClaims},
		{"nbf 31 s ahead", s.rs(with(s.claims(), "nbf", now.Add(31*time.Second).Unix()), nil), authz.ErrCodeTokenNotYetValid},
		{"iat 31 s ahead", s.rs(with(s.claims(), "iat", now.Add(31*time.Second).Unix()), nil), authz.ErrCodeTokenIssuedInFuture},
		{"no iat", s.rs(with(s.claims(), "iat", nil), nil), authz.ErrCodeTokenClaims},
		{"lifetime 16 min", s.rs(with(s.claims(), "exp", now.Add(16*time.Minute).Unix()), nil), authz.ErrCodeTokenLifetime},
		{"exp before iat", s.rs(with(s.claims(), "iat", now.Unix(), "exp", now.Unix()), nil), authz.ErrCodeTokenLifetime},
		{"no sub", s.rs(with(s.claims(), "sub", nil), nil), authz.ErrCodeTokenClaims},
		{"empty sub", s.rs(with(s.claims(), "sub", ""), nil), authz.ErrCodeTokenClaims},
		{"sub a number", s.rs(with(s.claims(), "sub", 7), nil), authz.ErrCodeTokenClaims}, // before: ERR_TOKEN_MALFORMED, TypeScript said ERR_TOKEN_CLAIMS
		{"no jti", s.rs(with(s.claims(), "jti", nil), nil), authz.ErrCodeTokenClaims},
		{"no cnf", s.rs(with(s.claims(), "cnf", nil), nil), authz.ErrCodeBindingRequired},
		{"bound to another certificate", s.rs(with(s.claims(), "cnf", map[string]any{"x5t#S256": authz.CertificateThumbprint(s.other)}), nil), authz.ErrCodeBindingMismatch},
		{"two segments", strings.Join(strings.Split(good, ".")[:2], "."), authz.ErrCodeTokenMalformed},
		{"padded base64", strings.Replace(good, ".", "=.", 1), authz.ErrCodeTokenMalformed},
		{"9 KiB", good + strings.Repeat("A", 9<<10), authz.ErrCodeTokenMalformed},
		{"empty", "", authz.ErrCodeTokenMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Verify(ctxT(t), c.token, s.cert)
			wantCode(t, err, c.code)
		})
	}
}

func TestVerifierAllowsAReplica30sOffWithTheDefaults(t *testing.T) {
	s := newStaticSet()
	v := s.verifier(t, nil)
	now := s.clock.Now()
	ok := map[string]jwt.MapClaims{
		"iat and nbf 29 s ahead":  with(s.claims(), "iat", now.Add(29*time.Second).Unix(), "nbf", now.Add(29*time.Second).Unix(), "exp", now.Add(10*time.Minute).Unix()),
		"expired 29 s ago":        with(s.claims(), "iat", now.Add(-10*time.Minute).Unix(), "exp", now.Add(-29*time.Second).Unix()),
		"a lifetime of 15 min 30": with(s.claims(), "exp", now.Add(15*time.Minute+30*time.Second).Unix()), // the lifetime bound is 15 min + leeway
	}
	for name, c := range ok {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(ctxT(t), s.rs(c, nil), s.cert); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestVerifierBindingNeedsAPeerUnlessConfiguredOtherwise(t *testing.T) {
	s := newStaticSet()
	token := s.rs(s.claims(), nil)
	_, err := s.verifier(t, nil).Verify(ctxT(t), token, nil)
	wantCode(t, err, authz.ErrCodeBindingRequired)
	if ve := err.(*authz.VerifyError); ve.Subject != "order-service" || ve.Audience != "inventory-service" {
		t.Fatalf("the refusal of an authentic token says whose it was: %+v", ve)
	}
	// Checked after the token: an expired token is refused as expired, peer or not (before: as
	// ERR_BINDING_REQUIRED, where the TypeScript SDK said ERR_TOKEN_EXPIRED).
	expired := s.rs(with(s.claims(), "iat", s.clock.Now().Add(-20*time.Minute).Unix(), "exp", s.clock.Now().Add(-10*time.Minute).Unix()), nil)
	_, err = s.verifier(t, nil).Verify(ctxT(t), expired, nil)
	wantCode(t, err, authz.ErrCodeTokenExpired)
	if _, err := s.verifier(t, func(c *authz.VerifierConfig) { c.AllowNoPeer = true }).Verify(ctxT(t), token, nil); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierRefusesHugeAndDeeplyNestedTokensCheaply(t *testing.T) {
	s := newStaticSet()
	v := s.verifier(t, nil)
	deep := strings.Repeat("[", 2500) + strings.Repeat("]", 2500)
	e := base64.RawURLEncoding.EncodeToString
	nested := e([]byte(`{"alg":"RS256","typ":"at+jwt","kid":"rsa-1"}`)) + "." + e([]byte(`{"x":`+deep+`}`)) + "." + e(make([]byte, 256))
	if len(nested) > authz.MaxTokenBytes {
		t.Fatalf("nested token is %d bytes, want it under the size limit to exercise the parser", len(nested))
	}
	start := time.Now()
	_, err := v.Verify(ctxT(t), nested, s.cert)
	wantCode(t, err, authz.ErrCodeTokenSignature)
	huge := strings.Repeat("a", 1<<20) + "." + strings.Repeat("b", 1<<20) + ".c"
	_, err = v.Verify(ctxT(t), huge, s.cert)
	wantCode(t, err, authz.ErrCodeTokenMalformed)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusing two hostile tokens took %v", d)
	}
}

func TestVerifierConfigurationMistakesAreErrors(t *testing.T) {
	s := newStaticSet()
	type config struct {
		cfg         authz.VerifierConfig
		keysInvalid bool // a static set that cannot be used: ERR_JWKS_INVALID, as the TypeScript SDK
	}
	bad := map[string]config{
		"a leeway over 30 s":       {cfg: authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: s.jwks(), Leeway: 31 * time.Second}},
		"HS256":                    {cfg: authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: s.jwks(), Algorithms: []string{"HS256"}}},
		"none":                     {cfg: authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: s.jwks(), Algorithms: []string{"none"}}},
		"no key source":            {cfg: authz.VerifierConfig{Issuer: "x", Audience: "y"}},
		"two key sources":          {cfg: authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: s.jwks(), JWKSURL: "http://127.0.0.1:1/jwks"}},
		"a file: URL":              {cfg: authz.VerifierConfig{Issuer: "x", Audience: "y", JWKSURL: "file:///etc/passwd"}},
		"no issuer":                {cfg: authz.VerifierConfig{Audience: "y", Keys: s.jwks()}},
		"a symmetric key":          {authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`)}, true},
		"one kid, two keys":        {authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: testissuer.JWKS(testissuer.JWK(&s.rsa.PublicKey, "a", "RS256"), testissuer.JWK(&s.ec.PublicKey, "a", "ES256"))}, true},
		"only keys of another alg": {authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: testissuer.JWKS(testissuer.JWK(&s.ec.PublicKey, "e", "ES256"))}, true},
		"a private JWK":            {authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: []byte(`{"keys":[` + string(privateJWK(s)) + `]}`)}, true},
		"a PEM private key":        {authz.VerifierConfig{Issuer: "x", Audience: "y", Keys: append(pemOf(&s.rsa.PublicKey), privatePEM(s)...)}, true},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			v, err := authz.NewVerifier(ctxT(t), c.cfg)
			if err == nil {
				_ = v.Close()
				t.Fatal("accepted")
			}
			var ve *authz.VerifyError
			if c.keysInvalid && (!errors.As(err, &ve) || ve.Code != authz.ErrCodeJWKSInvalid) {
				t.Fatalf("want ERR_JWKS_INVALID, got %v", err)
			}
		})
	}
}

func TestVerifierStaticKeysFromPEMFileAndEnvironment(t *testing.T) {
	s := newStaticSet()
	pemKeys := append(pemOf(&s.rsa.PublicKey), pemOf(&s.ec.PublicKey)...)
	file := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(file, pemKeys, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUTHZ_TEST_JWKS", string(s.jwks()))
	rsaKid, ecKid := authz.Thumbprint(&s.rsa.PublicKey), authz.Thumbprint(&s.ec.PublicKey)
	for name, mod := range map[string]func(*authz.VerifierConfig){
		"PEM bytes": func(c *authz.VerifierConfig) { c.Keys = pemKeys },
		"PEM file":  func(c *authz.VerifierConfig) { c.Keys, c.KeysFile = nil, file },
		"JWKS env":  func(c *authz.VerifierConfig) { c.Keys, c.KeysEnv = nil, "AUTHZ_TEST_JWKS" },
	} {
		t.Run(name, func(t *testing.T) {
			v := s.verifier(t, func(c *authz.VerifierConfig) { mod(c); c.Algorithms = []string{"RS256", "ES256"} })
			kr, ke := rsaKid, ecKid
			if name == "JWKS env" {
				kr, ke = "rsa-1", "ec-1"
			}
			for _, token := range []string{
				testissuer.Sign(jwt.SigningMethodRS256, s.rsa, kr, s.claims(), nil),
				testissuer.Sign(jwt.SigningMethodES256, s.ec, ke, s.claims(), nil),
			} {
				if _, err := v.Verify(ctxT(t), token, s.cert); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// privateJWK is s.rsa as a JWK with its private exponent.
func privateJWK(s *staticSet) []byte {
	k := testissuer.JWK(&s.rsa.PublicKey, "rsa-private", "RS256")
	k["d"] = base64.RawURLEncoding.EncodeToString(s.rsa.D.Bytes())
	out, _ := json.Marshal(k)
	return out
}

// privatePEM is s.rsa as a PKCS#8 PEM private key.
func privatePEM(s *staticSet) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.rsa)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
