package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

func parsePEMKeys(data []byte) (*keySet, error) {
	set := &keySet{byKID: map[string]*verificationKey{}}
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var pub crypto.PublicKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return nil, errors.New("the key set holds private key material: give the public keys only")
			}
			continue // nothing else either
		}
		if err != nil {
			return nil, fmt.Errorf("PEM %s: %w", block.Type, err)
		}
		vk, err := keyFromPublic(pub)
		if err != nil {
			return nil, fmt.Errorf("PEM %s: %w", block.Type, err)
		}
		set.byKID[vk.kid] = vk
	}
	if len(set.byKID) == 0 {
		return nil, errors.New("no JWKS and no PEM public key found")
	}
	return set, nil
}

func keyFromPublic(pub crypto.PublicKey) (*verificationKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if err := checkRSA(k); err != nil {
			return nil, err
		}
		return &verificationKey{kid: Thumbprint(k), alg: RS256, key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("only P-256 EC keys are supported")
		}
		return &verificationKey{kid: Thumbprint(k), alg: ES256, key: k}, nil
	default:
		return nil, fmt.Errorf("unsupported public key type %T", pub)
	}
}

// Thumbprint is the RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA or P-256 public key: the
// kid authz gives its keys. It is "" for any other key type.
func Thumbprint(pub crypto.PublicKey) string {
	var canonical string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		canonical = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, b64.EncodeToString(e), b64.EncodeToString(k.N.Bytes()))
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return ""
		}
		canonical = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`, b64.EncodeToString(k.X.FillBytes(make([]byte, 32))), b64.EncodeToString(k.Y.FillBytes(make([]byte, 32))))
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:])
}

// CertificateThumbprint is what cnf.x5t#S256 holds: base64url SHA-256 of the certificate's DER.
func CertificateThumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return b64.EncodeToString(sum[:])
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
