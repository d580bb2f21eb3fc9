package authz

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenClaims is an authz access token's payload (RFC 9068 profile) as jwt.Claims. It is decoded from
// exact member names (encoding/json alone would also match "AUD" or "Sub"), and its Validate adds what
// golang-jwt does not check: one string aud, sub and jti present, iat present, a bounded lifetime.
type tokenClaims struct {
	iss, sub, jti, scope, clientID string
	aud                            string
	audIsString                    bool
	audList                        jwt.ClaimStrings
	exp, nbf, iat                  *jwt.NumericDate
	cnfX5t                         string
	hasCnf                         bool

	// Set by the verifier before parsing.
	maxLifetime time.Duration
	leeway      time.Duration
}

var errNotString = errors.New("claim is not a string")

func (c *tokenClaims) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	str := func(name string, dst *string) error {
		raw, ok := m[name]
		if !ok {
			return nil
		}
		if json.Unmarshal(raw, dst) != nil {
			return errNotString
		}
		return nil
	}
	date := func(name string, dst **jwt.NumericDate) error {
		raw, ok := m[name]
		if !ok {
			return nil
		}
		var d jwt.NumericDate
		if err := json.Unmarshal(raw, &d); err != nil {
			return err
		}
		*dst = &d
		return nil
	}
	for _, err := range []error{
		str("iss", &c.iss), str("sub", &c.sub), str("jti", &c.jti), str("scope", &c.scope), str("client_id", &c.clientID),
		date("exp", &c.exp), date("nbf", &c.nbf), date("iat", &c.iat),
	} {
		if err != nil {
			return err
		}
	}
	if raw, ok := m["aud"]; ok {
		if json.Unmarshal(raw, &c.aud) == nil {
			c.audIsString = true
			c.audList = jwt.ClaimStrings{c.aud}
		} else if err := json.Unmarshal(raw, &c.audList); err != nil {
			return err
		}
	}
	if raw, ok := m["cnf"]; ok {
		var cnf map[string]json.RawMessage
		if err := json.Unmarshal(raw, &cnf); err != nil {
			return err
		}
		if x5t, ok := cnf["x5t#S256"]; ok {
			if json.Unmarshal(x5t, &c.cnfX5t) != nil {
				return errNotString
			}
			c.hasCnf = true
		}
	}
	return nil
}

func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.exp, nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.iat, nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.nbf, nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return c.iss, nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return c.sub, nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.audList, nil }

// Validate runs after golang-jwt's own checks (exp, nbf, iat, iss, aud), as jwt.ClaimsValidator.
func (c *tokenClaims) Validate() error {
	if !c.audIsString {
		return &VerifyError{Code: ErrCodeTokenAudience, Err: errors.New("aud must be one string")}
	}
	if c.sub == "" {
		return &VerifyError{Code: ErrCodeTokenClaims, Err: errors.New("sub missing")}
	}
	if c.jti == "" {
		return &VerifyError{Code: ErrCodeTokenClaims, Err: errors.New("jti missing")}
	}
	if c.exp == nil {
		return &VerifyError{Code: ErrCodeTokenClaims, Err: errors.New("exp missing")}
	}
	if c.iat == nil {
		return &VerifyError{Code: ErrCodeTokenClaims, Err: errors.New("iat missing")}
	}
	if life := c.exp.Sub(c.iat.Time); life <= 0 || life > c.maxLifetime+c.leeway {
		return &VerifyError{Code: ErrCodeTokenLifetime, Err: errors.New("lifetime (exp - iat) out of bounds")}
	}
	return nil
}

func (c *tokenClaims) scopes() []string {
	// Space-separated, as the issuer writes it (RFC 6749 §3.3); a tab is part of a scope, not a separator.
	out := []string{}
	for _, s := range strings.Split(c.scope, " ") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
