// Package conformance is the Go side of the repository's conformance/ directory: it reads the vectors
// both kits must pass, and mints the tokens they describe — mutations of a good token, signed with keys
// made at test time (the TypeScript suite's test/helpers/conformance.ts does the same). See
// conformance/README.md for the mutation language.
package conformance

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"authz.internal/clients/go/internal/testissuer"
	"github.com/golang-jwt/jwt/v5"
)

// Read decodes conformance/<name> into v.
func Read(name string, v any) error {
	root, err := testissuer.RepoRoot()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(root, "conformance", name))
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// Expected is a case's outcome: "accepted", or a refusal's code and, exactly when the refusal must
// report them, sub and aud.
type Expected struct {
	Accepted bool
	Code     string `json:"code"`
	Sub      string `json:"sub"`
	Aud      string `json:"aud"`
}

func (e *Expected) UnmarshalJSON(data []byte) error {
	var s string
	if json.Unmarshal(data, &s) == nil {
		if s != "accepted" {
			return fmt.Errorf("conformance: expect %q", s)
		}
		e.Accepted = true
		return nil
	}
	type plain Expected
	return json.Unmarshal(data, (*plain)(e))
}

// TokenCase is one case of tokens.json.
type TokenCase struct {
	Name       string         `json:"name"`
	Sign       string         `json:"sign"`
	Header     map[string]any `json:"header"`
	Claims     map[string]any `json:"claims"`
	RawHeader  *string        `json:"rawHeader"`
	RawPayload *string        `json:"rawPayload"`
	Tamper     string         `json:"tamper"`
	Peer       string         `json:"peer"`
	Verifier   struct {
		Algorithms  []string `json:"algorithms"`
		Leeway      *int     `json:"leeway"`
		MaxLifetime *int     `json:"maxLifetime"`
		AllowNoPeer *bool    `json:"allowNoPeer"`
	} `json:"verifier"`
	Expect Expected `json:"expect"`
}

// TokenVectors is tokens.json.
type TokenVectors struct {
	Verifier struct {
		Issuer      string   `json:"issuer"`
		Audience    string   `json:"audience"`
		Algorithms  []string `json:"algorithms"`
		Leeway      int      `json:"leeway"`
		AllowNoPeer bool     `json:"allowNoPeer"`
	} `json:"verifier"`
	Token struct {
		Header map[string]any `json:"header"`
		Claims map[string]any `json:"claims"`
	} `json:"token"`
	Cases []TokenCase `json:"cases"`
}

// Keys are a run's keys: the verifier trusts rsa-1 and ec-1; the foreign ones sign forgeries.
type Keys struct {
	RSA, ForeignRSA *rsa.PrivateKey
	EC, ForeignEC   *ecdsa.PrivateKey
}

// NewKeys makes a run's keys.
func NewKeys() *Keys {
	return &Keys{RSA: testissuer.RSAKey(), ForeignRSA: testissuer.RSAKey(), EC: testissuer.ECKey(), ForeignEC: testissuer.ECKey()}
}

// JWKS is the static key set a verifier is given: rsa-1 (RS256) and ec-1 (ES256).
func (k *Keys) JWKS() []byte {
	return testissuer.JWKS(testissuer.JWK(&k.RSA.PublicKey, "rsa-1", "RS256"), testissuer.JWK(&k.EC.PublicKey, "ec-1", "ES256"))
}

type signer struct {
	alg, kid string
	method   jwt.SigningMethod
	key      any
}

func (k *Keys) signer(kind string) (signer, error) {
	spki, _ := x509.MarshalPKIXPublicKey(&k.RSA.PublicKey)
	publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	table := map[string]signer{
		"rs256":               {"RS256", "rsa-1", jwt.SigningMethodRS256, k.RSA},
		"es256":               {"ES256", "ec-1", jwt.SigningMethodES256, k.EC},
		"rs256-unknown-kid":   {"RS256", "unknown-1", jwt.SigningMethodRS256, k.ForeignRSA},
		"rs256-foreign-key":   {"RS256", "rsa-1", jwt.SigningMethodRS256, k.ForeignRSA},
		"es256-foreign-key":   {"ES256", "ec-1", jwt.SigningMethodES256, k.ForeignEC},
		"es256-under-rsa-kid": {"ES256", "rsa-1", jwt.SigningMethodES256, k.EC},
		"rs256-under-ec-kid":  {"RS256", "ec-1", jwt.SigningMethodRS256, k.RSA},
		"none":                {"none", "rsa-1", jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType},
		"none-with-signature": {"none", "rsa-1", jwt.SigningMethodRS256, k.RSA},
		"hs256-public-key":    {"HS256", "rsa-1", jwt.SigningMethodHS256, publicPEM},
		"rs384":               {"RS384", "rsa-1", jwt.SigningMethodRS384, k.RSA},
		"rs512":               {"RS512", "rsa-1", jwt.SigningMethodRS512, k.RSA},
		"ps256":               {"PS256", "rsa-1", jwt.SigningMethodPS256, k.RSA},
	}
	if kind == "" {
		kind = "rs256"
	}
	s, ok := table[kind]
	if !ok {
		return signer{}, fmt.Errorf("conformance: unknown sign %q", kind)
	}
	return s, nil
}

// resolve turns the vectors' values into JSON values: {"now": n} is now + n seconds, {"thumbprint":
// who} a certificate thumbprint.
func resolve(v any, now int64, thumbprints map[string]string) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			out[i] = resolve(item, now, thumbprints)
		}
		return out
	case map[string]any:
		if n, ok := x["now"]; ok && len(x) == 1 {
			return now + int64(n.(float64))
		}
		if who, ok := x["thumbprint"]; ok && len(x) == 1 {
			return thumbprints[who.(string)]
		}
		out := map[string]any{}
		for key, item := range x {
			out[key] = resolve(item, now, thumbprints)
		}
		return out
	}
	return v
}

// mutate applies set/delete mutations (nil deletes) to a copy of base.
func mutate(base, changes map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

var b64 = base64.RawURLEncoding

// Mint is the token a case describes, at now (Unix seconds), bound by default to the "caller"
// thumbprint.
func Mint(vectors *TokenVectors, c *TokenCase, keys *Keys, now int64, thumbprints map[string]string) (string, error) {
	s, err := keys.signer(c.Sign)
	if err != nil {
		return "", err
	}
	base := mutate(vectors.Token.Header, map[string]any{"alg": s.alg, "kid": s.kid})
	header, _ := json.Marshal(resolve(mutate(base, c.Header), now, thumbprints))
	payload, _ := json.Marshal(resolve(mutate(vectors.Token.Claims, c.Claims), now, thumbprints))
	if c.RawHeader != nil {
		header = []byte(*c.RawHeader)
	}
	if c.RawPayload != nil {
		payload = []byte(*c.RawPayload)
	}
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	sig, err := s.method.Sign(input, s.key)
	if err != nil {
		return "", err
	}
	return tamper(input+"."+b64.EncodeToString(sig), c.Tamper)
}

func tamper(token, how string) (string, error) {
	parts := strings.Split(token, ".")
	h, p, s := parts[0], parts[1], parts[2]
	switch how {
	case "":
		return token, nil
	case "empty":
		return "", nil
	case "not-a-jwt":
		return "not.a.jwt", nil
	case "two-segments":
		return h + "." + p, nil
	case "four-segments":
		return token + ".x", nil
	case "padded-header":
		return h + "=." + p + "." + s, nil
	case "newline-in-signature":
		return h + "." + p + "." + s[:10] + "\n" + s[10:], nil
	case "trailing-space":
		return token + " ", nil
	case "plus-in-signature":
		return h + "." + p + "." + s[:len(s)-1] + "+", nil
	case "oversize":
		return token + strings.Repeat("A", 8193-len(token)), nil
	case "payload-sub":
		var claims map[string]any
		raw, _ := b64.DecodeString(p)
		_ = json.Unmarshal(raw, &claims)
		claims["sub"] = "payment-service"
		changed, _ := json.Marshal(claims)
		return h + "." + b64.EncodeToString(changed) + "." + s, nil
	case "signature-bit":
		sig, _ := b64.DecodeString(s)
		sig[0] ^= 1
		return h + "." + p + "." + b64.EncodeToString(sig), nil
	case "signature-empty":
		return h + "." + p + ".", nil
	case "noncanonical-signature":
		// The last character's lowest bit lies past the signature's last byte: same bytes, another spelling.
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		last := strings.IndexByte(alphabet, s[len(s)-1])
		return h + "." + p + "." + s[:len(s)-1] + string(alphabet[last^1]), nil
	}
	return "", fmt.Errorf("conformance: unknown tamper %q", how)
}
