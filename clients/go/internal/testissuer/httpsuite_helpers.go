package testissuer

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
)

// CallerBody is what the suite's handlers answer.
func CallerBody(w http.ResponseWriter, r *http.Request) {
	c, ok := authz.CallerFromContext(r.Context())
	if !ok {
		http.Error(w, "no caller in the context", http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(w, c.Service+" "+r.URL.Path)
}

// SyncBuffer is a log destination a test reads while handlers write.
type SyncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // closed (and replaced) at each write
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.written != nil {
		close(b.written)
		b.written = nil
	}
	return b.buf.Write(p)
}

// Wait returns at the next write, or after timeout.
func (b *SyncBuffer) Wait(timeout time.Duration) {
	b.mu.Lock()
	if b.written == nil {
		b.written = make(chan struct{})
	}
	ch := b.written
	b.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(timeout):
	}
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type result struct {
	status int
	body   string
	header http.Header
}

func do(t *testing.T, client *http.Client, base, method, path string, tokens []string) result {
	t.Helper()
	r, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		r.Header.Add(authz.ServiceTokenHeader, tok)
	}
	res, err := client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return result{res.StatusCode, string(body), res.Header}
}

// issuerPublicKeyPEM is authz's public key of kid as PEM: the HMAC secret of the classic forgery.
func issuerPublicKeyPEM(t *testing.T, is Authority, kid string) []byte {
	_, jwksURL := is.Endpoints()
	res, err := http.Get(jwksURL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range doc.Keys {
		if k.Kid == kid {
			n, _ := base64.RawURLEncoding.DecodeString(k.N)
			e, _ := base64.RawURLEncoding.DecodeString(k.E)
			der, _ := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())})
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		}
	}
	t.Fatalf("kid %s not in authz's JWKS", kid)
	return nil
}
