package testissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
)

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

// Replace publishes exactly these JWKs (as JWK makes them, possibly altered) instead of the extra
// keys so far.
func (p *JWKSProxy) Replace(keys ...map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = keys
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
