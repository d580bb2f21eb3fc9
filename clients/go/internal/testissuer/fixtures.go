package testissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	authz "authz.internal/clients/go"
	"github.com/golang-jwt/jwt/v5"
)

// ---- a fake clock --------------------------------------------------------------------------------

// FakeClock is an authz.Clock that moves only when told to. Timers fire (each in its own goroutine)
// when Advance passes their instant; Armed tells tests when a timer was set.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	// Armed receives the delay of every AfterFunc (buffered; tests drain it or ignore it).
	Armed chan time.Duration
}

type fakeTimer struct {
	c       *FakeClock
	at      time.Time
	f       func()
	stopped bool
	fired   bool
}

// NewFakeClock starts at now (real time, so tokens from the real issuer are valid at first).
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Now(), Armed: make(chan time.Duration, 1024)}
}

func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *FakeClock) AfterFunc(d time.Duration, f func()) authz.Timer {
	c.mu.Lock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	select {
	case c.Armed <- d:
	default:
	}
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// Advance moves the clock and fires the timers that are due.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped || t.fired:
		case !t.at.After(c.now):
			t.fired = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

// Pending is the number of armed timers.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// ---- test PKIs -----------------------------------------------------------------------------------

// PKI is a CA made at test time with crypto/x509 (P-256), for the test services' own certificates.
type PKI struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	Pool *x509.CertPool
}

var serial atomic.Int64

// NewPKI makes a CA.
func NewPKI(name string) *PKI {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &PKI{Cert: cert, Key: key, Pool: pool}
}

// Issue makes a leaf: a server certificate for 127.0.0.1 and localhost when server, else a client
// certificate with Subject CN = name.
func (p *PKI) Issue(name string, server bool) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Cert, &key.PublicKey, p.Key)
	if err != nil {
		panic(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ServerTLS is a receiving service's TLS: its certificate from p, client certificates required and
// verified against clientCAs.
func (p *PKI) ServerTLS(clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Issue("localhost", true)},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// ---- a JWKS proxy --------------------------------------------------------------------------------

// JWKSProxy serves the upstream JWKS (authz's), plus extra keys, and counts the requests. Mode
// switches it to failing: "down" (503), "garbage" (200, not JSON), "empty" (200, no keys).
type JWKSProxy struct {
	*httptest.Server
	Upstream     string
	CacheControl atomic.Value // string; "" = upstream's
	Mode         atomic.Value // string
	Requests     atomic.Int64
	mu           sync.Mutex
	extra        []map[string]any
	// Served receives one value per answered request (buffered).
	Served chan int
}

// NewJWKSProxy starts a proxy for upstream ("" = serve only the extra keys).
func NewJWKSProxy(upstream string) *JWKSProxy {
	p := &JWKSProxy{Upstream: upstream, Served: make(chan int, 1024)}
	p.CacheControl.Store("")
	p.Mode.Store("")
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	return p
}

// AddKey publishes a public key (RSA or P-256) with this kid and alg ("" = leave alg out).
func (p *JWKSProxy) AddKey(pub crypto.PublicKey, kid, alg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = append(p.extra, JWK(pub, kid, alg))
}

// URL of the JWKS.
func (p *JWKSProxy) URL() string { return p.Server.URL + "/.well-known/jwks.json" }

func (p *JWKSProxy) serve(w http.ResponseWriter, r *http.Request) {
	n := int(p.Requests.Add(1))
	defer func() {
		select {
		case p.Served <- n:
		default:
		}
	}()
	switch p.Mode.Load().(string) {
	case "down":
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case "garbage":
		_, _ = w.Write([]byte("<html>not a key set"))
		return
	case "empty":
		_, _ = w.Write([]byte(`{"keys":[]}`))
		return
	}
	doc := map[string]any{"keys": []any{}}
	cacheControl := "public, max-age=600"
	if p.Upstream != "" {
		res, err := http.Get(p.Upstream)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if err := json.Unmarshal(body, &doc); err != nil {
			http.Error(w, "bad upstream", http.StatusBadGateway)
			return
		}
		cacheControl = res.Header.Get("Cache-Control")
	}
	p.mu.Lock()
	keys, _ := doc["keys"].([]any)
	for _, k := range p.extra {
		keys = append(keys, k)
	}
	p.mu.Unlock()
	doc["keys"] = keys
	if cc := p.CacheControl.Load().(string); cc != "" {
		cacheControl = cc
	}
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

// JWK is the public JWK of an RSA or P-256 key.
func JWK(pub crypto.PublicKey, kid, alg string) map[string]any {
	b := base64.RawURLEncoding.EncodeToString
	k := map[string]any{"kid": kid, "use": "sig"}
	if alg != "" {
		k["alg"] = alg
	}
	switch key := pub.(type) {
	case *rsa.PublicKey:
		k["kty"], k["n"], k["e"] = "RSA", b(key.N.Bytes()), b(big.NewInt(int64(key.E)).Bytes())
	case *ecdsa.PublicKey:
		k["kty"], k["crv"] = "EC", "P-256"
		k["x"], k["y"] = b(key.X.FillBytes(make([]byte, 32))), b(key.Y.FillBytes(make([]byte, 32)))
	}
	return k
}

// JWKS is a key set document of these JWKs.
func JWKS(keys ...map[string]any) []byte {
	list := make([]any, len(keys))
	for i, k := range keys {
		list[i] = k
	}
	out, _ := json.Marshal(map[string]any{"keys": list})
	return out
}

// ---- tokens --------------------------------------------------------------------------------------

// Claims are the claims of a good token for audience from caller over cert; tests change them.
func Claims(caller, audience string, cert *x509.Certificate, scope string, now time.Time) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss":       IssuerName,
		"sub":       caller,
		"client_id": caller,
		"aud":       audience,
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(10 * time.Minute).Unix(),
		"jti":       "jti-" + big.NewInt(serial.Add(1)).String(),
		"cnf":       map[string]any{"x5t#S256": authz.CertificateThumbprint(cert)},
	}
	if scope != "" {
		c["scope"] = scope
	}
	return c
}

// Sign makes a token with this method, key and header (typ at+jwt and kid unless header overrides).
func Sign(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims, header map[string]any) string {
	t := jwt.NewWithClaims(method, claims)
	t.Header["typ"] = "at+jwt"
	t.Header["kid"] = kid
	for k, v := range header {
		if v == nil {
			delete(t.Header, k)
		} else {
			t.Header[k] = v
		}
	}
	s, err := t.SignedString(key)
	if err != nil {
		panic(err)
	}
	return s
}

// RSAKey and ECKey make signing keys at test time.
func RSAKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func ECKey() *ecdsa.PrivateKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k
}

// Segments decodes a token's header and payload (for forging from a real one).
func Segments(token string) (header, payload map[string]any) {
	parts := splitDots(token)
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(hb, &header)
	_ = json.Unmarshal(pb, &payload)
	return header, payload
}

// Encode builds header.payload.signature from parts.
func Encode(header, payload map[string]any, sig []byte) string {
	hb, _ := json.Marshal(header)
	pb, _ := json.Marshal(payload)
	e := base64.RawURLEncoding.EncodeToString
	return e(hb) + "." + e(pb) + "." + e(sig)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// SortedKeys is a helper for stable output.
func SortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
