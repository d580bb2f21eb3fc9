package authz

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenClaims is an access token's payload as golang-jwt decodes it: kept raw, so that the claims
// are judged after the signature verified, in one order (below), exactly as the TypeScript SDK judges
// them — never by encoding/json's rules (which would also match "AUD" or "Sub").
type tokenClaims struct {
	raw       map[string]json.RawMessage
	notObject bool
}

// UnmarshalJSON keeps the members; a payload that is JSON but not an object is refused later, after
// the signature (golang-jwt refuses one that is not JSON at all before).
func (c *tokenClaims) UnmarshalJSON(data []byte) error {
	if json.Unmarshal(data, &c.raw) != nil || c.raw == nil {
		c.notObject = true
	}
	return nil
}

// golang-jwt's Claims interface: the kit checks the claims itself (checkClaims), so these say nothing.
func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return "", nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return "", nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

func (c *tokenClaims) has(name string) bool {
	_, ok := c.raw[name]
	return ok
}

// str is a member that is a JSON string.
func (c *tokenClaims) str(name string) (string, bool) {
	var s string
	if raw, ok := c.raw[name]; ok && json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	return "", false
}

// num is a member that is a JSON number.
func (c *tokenClaims) num(name string) (float64, bool) {
	var f float64
	if raw, ok := c.raw[name]; ok && json.Unmarshal(raw, &f) == nil {
		return f, true
	}
	return 0, false
}

// claimRules are what a token's claims are checked against.
type claimRules struct {
	issuer, audience string
	leeway           float64 // seconds
	maxLifetime      float64 // seconds, exp - iat
}

// checked is what the kit takes from claims that passed.
type checked struct {
	sub, aud, jti, scope, cnfX5t string
	hasCnf                       bool
	exp                          time.Time
}

// whose is the refusal of an authenticated token: it says whose token it was (sub and aud, when they
// are strings).
func (c *tokenClaims) whose(code VerifyCode, format string, args ...any) *VerifyError {
	ve := verifyErr(code, format, args...)
	if sub, ok := c.str("sub"); ok {
		ve.Subject = sub
	}
	ve.Audience, _ = c.str("aud")
	return ve
}

// checkClaims judges the claims of a token whose signature verified, in the order both kits share
// (conformance/README.md): the required claims are there (iss, aud, jti, iat, exp, sub), iss, aud,
// iat and nbf are numbers, nbf, exp; then aud is one string, sub and jti non-empty strings, scope a
// string, cnf an object with a string x5t#S256, iat not in the future, the lifetime bounded. The
// first that fails is the refusal. now is taken in whole seconds, as jose takes it.
func (c *tokenClaims) checkClaims(r claimRules, now time.Time) (*checked, error) {
	if c.notObject {
		return nil, &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("the payload is not a JSON object")}
	}
	for _, name := range []string{"iss", "aud", "jti", "iat", "exp", "sub"} {
		if !c.has(name) {
			return nil, c.whose(ErrCodeTokenClaims, "%s missing", name)
		}
	}
	if iss, _ := c.str("iss"); iss != r.issuer {
		return nil, c.whose(ErrCodeTokenIssuer, "iss is not %q", r.issuer)
	}
	if !c.audienceHolds(r.audience) {
		return nil, c.whose(ErrCodeTokenAudience, "aud is not %q", r.audience)
	}
	nowSec := float64(now.Unix())
	iat, ok := c.num("iat")
	if !ok {
		return nil, c.whose(ErrCodeTokenClaims, "iat must be a number")
	}
	if c.has("nbf") {
		nbf, ok := c.num("nbf")
		if !ok {
			return nil, c.whose(ErrCodeTokenClaims, "nbf must be a number")
		}
		if nbf > nowSec+r.leeway {
			return nil, c.whose(ErrCodeTokenNotYetValid, "nbf is after now + leeway")
		}
	}
	exp, ok := c.num("exp")
	if !ok {
		return nil, c.whose(ErrCodeTokenClaims, "exp must be a number")
	}
	if exp <= nowSec-r.leeway {
		return nil, c.whose(ErrCodeTokenExpired, "exp + leeway is not after now")
	}
	out := &checked{exp: time.Unix(0, int64(exp*float64(time.Second)))}
	if out.aud, ok = c.str("aud"); !ok {
		return nil, c.whose(ErrCodeTokenAudience, "aud must be one string")
	}
	if out.sub, ok = c.str("sub"); !ok || out.sub == "" {
		return nil, c.whose(ErrCodeTokenClaims, "sub must be a non-empty string")
	}
	if out.jti, ok = c.str("jti"); !ok || out.jti == "" {
		return nil, c.whose(ErrCodeTokenClaims, "jti must be a non-empty string")
	}
	if out.scope, ok = c.str("scope"); c.has("scope") && !ok {
		return nil, c.whose(ErrCodeTokenClaims, "scope must be a string")
	}
	if err := c.cnf(out); err != nil {
		return nil, err
	}
	if iat > float64(now.UnixNano())/1e9+r.leeway {
		return nil, c.whose(ErrCodeTokenIssuedInFuture, "iat is in the future")
	}
	if life := exp - iat; !(life > 0 && life <= r.maxLifetime) {
		return nil, c.whose(ErrCodeTokenLifetime, "lifetime %v s is not within (0, %v]", life, r.maxLifetime)
	}
	return out, nil
}

// audienceHolds is jose's audience check: aud is this service, or an array holding it (the one-string
// rule comes after).
func (c *tokenClaims) audienceHolds(audience string) bool {
	if aud, ok := c.str("aud"); ok {
		return aud == audience
	}
	var list []json.RawMessage
	if json.Unmarshal(c.raw["aud"], &list) != nil {
		return false
	}
	for _, item := range list {
		var s string
		if json.Unmarshal(item, &s) == nil && s == audience {
			return true
		}
	}
	return false
}

// cnf reads the certificate binding: absent, or an object whose x5t#S256, if present, is a string.
func (c *tokenClaims) cnf(out *checked) error {
	raw, ok := c.raw["cnf"]
	if !ok {
		return nil
	}
	var cnf map[string]json.RawMessage
	if json.Unmarshal(raw, &cnf) != nil || cnf == nil {
		return c.whose(ErrCodeTokenClaims, "cnf must be an object")
	}
	if x5t, ok := cnf["x5t#S256"]; ok {
		if json.Unmarshal(x5t, &out.cnfX5t) != nil {
			return c.whose(ErrCodeTokenClaims, "cnf x5t#S256 must be a string")
		}
		out.hasCnf = true
	}
	return nil
}

// scopes are the granted scopes: scope split on spaces, as the issuer writes it (RFC 6749 §3.3); a
// tab is part of a scope, not a separator.
func (c *checked) scopes() []string {
	out := []string{}
	for _, s := range strings.Split(c.scope, " ") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// seconds is a duration as claims count it.
func seconds(d time.Duration) float64 { return math.Max(0, d.Seconds()) }
