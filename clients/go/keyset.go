package authz

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
)

// Algorithms the kit can verify. Anything else (none, HS*, RS384/512, PS*, ...) is never accepted.
const (
	RS256 = "RS256"
	ES256 = "ES256"
)

const (
	minRSABits = 2048
	maxRSABits = 8192
)

// verificationKey is one usable key of a key set: its kid, the one algorithm it verifies, the key.
type verificationKey struct {
	kid string
	alg string
	key crypto.PublicKey
}

// keySet maps kid to key. A kid that appears more than once is ambiguous and maps to nothing.
type keySet struct {
	byKID map[string]*verificationKey
}

func (s *keySet) kids() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.byKID))
	for k := range s.byKID {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

var b64 = base64.RawURLEncoding

// privateMembers are the JWK members of private or symmetric key material: a key that carries one is
// never trusted (and a static set holding one is refused).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "k"}

func hasPrivateMember(raw json.RawMessage) bool {
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil {
		return false
	}
	for _, name := range privateMembers {
		if _, ok := members[name]; ok {
			return true
		}
	}
	return false
}

// parseKeys reads a static key set: a JWKS document, or PEM public keys / certificates (kid = RFC
// 7638 thumbprint). Private key material anywhere in it is refused. Keys that cannot verify an authz
// token are skipped.
func parseKeys(data []byte) (*keySet, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		var doc struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if json.Unmarshal(data, &doc) == nil {
			for _, raw := range doc.Keys {
				if hasPrivateMember(raw) {
					return nil, errors.New("the key set holds private key material: give the public keys only")
				}
			}
		}
		return parseJWKS(data)
	}
	return parsePEMKeys(data)
}

// parseJWKS reads a JWKS: the keys that may verify an authz token (with a kid, for signing, public
// members only, RS256 or ES256, RSA of 2048 to 8192 bits, P-256 points on the curve). A kid that
// appears more than once is ambiguous: neither key is trusted. No usable key at all is an error.
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS has no "keys" array`)
	}
	set := &keySet{byKID: map[string]*verificationKey{}}
	seen := map[string]int{}
	for _, raw := range doc.Keys {
		var k jwk
		if json.Unmarshal(raw, &k) != nil || k.Kid == "" {
			continue
		}
		seen[k.Kid]++
		if hasPrivateMember(raw) {
			continue
		}
		vk, err := k.verificationKey()
		if err != nil {
			continue
		}
		set.byKID[k.Kid] = vk
	}
	for kid, n := range seen {
		if n > 1 {
			delete(set.byKID, kid) // two keys under one kid: trust neither
		}
	}
	if len(set.byKID) == 0 {
		return nil, errors.New("JWKS has no usable signing key")
	}
	return set, nil
}

// allowing is the set restricted to the algorithms a verifier allows: keys of other algorithms are
// left out, never trusted (the set may end up empty).
func (s *keySet) allowing(algorithms []string) *keySet {
	out := &keySet{byKID: map[string]*verificationKey{}}
	for kid, k := range s.byKID {
		if contains(algorithms, k.alg) {
			out.byKID[kid] = k
		}
	}
	return out
}

func (k *jwk) verificationKey() (*verificationKey, error) {
	if k.Use != "" && k.Use != "sig" {
		return nil, errors.New("not a signing key")
	}
	if k.KeyOps != nil && !contains(k.KeyOps, "verify") {
		return nil, errors.New("not a verification key")
	}
	switch k.Kty {
	case "RSA":
		if k.Alg != "" && k.Alg != RS256 {
			return nil, fmt.Errorf("unsupported alg %q for RSA", k.Alg)
		}
		pub, err := rsaFromJWK(k.N, k.E)
		if err != nil {
			return nil, err
		}
		return &verificationKey{kid: k.Kid, alg: RS256, key: pub}, nil
	case "EC":
		if k.Alg != "" && k.Alg != ES256 {
			return nil, fmt.Errorf("unsupported alg %q for EC", k.Alg)
		}
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		pub, err := p256FromJWK(k.X, k.Y)
		if err != nil {
			return nil, err
		}
		return &verificationKey{kid: k.Kid, alg: ES256, key: pub}, nil
	default:
		return nil, fmt.Errorf("unsupported kty %q", k.Kty)
	}
}

func rsaFromJWK(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := b64.Strict().DecodeString(n64)
	if err != nil || len(nb) == 0 || nb[0] == 0 {
		return nil, errors.New("bad RSA modulus")
	}
	eb, err := b64.Strict().DecodeString(e64)
	if err != nil || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
		return nil, errors.New("bad RSA exponent")
	}
	e := 0
	for _, b := range eb {
		e = e<<8 | int(b)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: e}
	return pub, checkRSA(pub)
}

func checkRSA(pub *rsa.PublicKey) error {
	if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
		return fmt.Errorf("RSA key of %d bits (allowed %d-%d)", bits, minRSABits, maxRSABits)
	}
	if pub.E < 3 || pub.E%2 == 0 {
		return errors.New("bad RSA exponent")
	}
	return nil
}

func p256FromJWK(x64, y64 string) (*ecdsa.PublicKey, error) {
	x, errX := b64.Strict().DecodeString(x64)
	y, errY := b64.Strict().DecodeString(y64)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("bad P-256 coordinates")
	}
	point := append(append([]byte{4}, x...), y...)
	if _, err := ecdh.P256().NewPublicKey(point); err != nil { // rejects points off the curve
		return nil, errors.New("P-256 point not on the curve")
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
}
