package testissuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"sort"
	"time"

	authz "authz.internal/clients/go"
	"github.com/golang-jwt/jwt/v5"
)

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
