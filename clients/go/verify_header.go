package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// compactJWS: three base64url segments without padding or whitespace (the signature may be empty).
// Go's base64 decoder skips newlines; a token must not carry any.
func compactJWS(token string) bool {
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			if dots++; dots > 2 || i == 0 || token[i-1] == '.' {
				return false
			}
		case c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		default:
			return false
		}
	}
	return dots == 2
}

// keyFor is the jwt.Keyfunc: the header checks in jose's order — crit, the algorithm, typ, the kid —
// then the key of the kid, whose entry alone decides the algorithm.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	if err := headerFault(t.Header, v.algorithms); err != nil {
		return nil, err
	}
	if !accessTokenTyp(t.Header["typ"]) {
		return nil, &VerifyError{Code: ErrCodeTokenTyp, Err: errors.New("typ is not at+jwt")}
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, &VerifyError{Code: ErrCodeTokenUnknownKID, Err: errors.New("no kid")}
	}
	alg := t.Header["alg"].(string)
	key, err := v.keys.lookup(ctx, kid)
	if err != nil {
		return nil, err
	}
	if key.alg != alg {
		return nil, &VerifyError{Code: ErrCodeTokenAlg, Err: fmt.Errorf("header alg %q, but kid %q is an %s key", alg, kid, key.alg)}
	}
	return key.key, nil
}

// headerFault is the first of: a crit header (MALFORMED), no alg (MALFORMED), an alg not allowed (ALG).
func headerFault(header map[string]any, allowed []string) *VerifyError {
	if _, ok := header["crit"]; ok {
		return &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("crit header parameters are not supported")}
	}
	alg, ok := header["alg"].(string)
	if !ok || alg == "" {
		return &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("no alg")}
	}
	if !contains(allowed, alg) {
		return &VerifyError{Code: ErrCodeTokenAlg, Err: fmt.Errorf("alg %q is not allowed", alg)}
	}
	return nil
}

// accessTokenTyp: at+jwt or application/at+jwt, in any case (as jose compares it).
func accessTokenTyp(typ any) bool {
	s, _ := typ.(string)
	return strings.EqualFold(s, "at+jwt") || strings.EqualFold(s, "application/at+jwt")
}

// classify turns a golang-jwt error into a VerifyError with a stable code.
func classify(tok *jwt.Token, err error) error {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return &VerifyError{Code: ErrCodeTokenMalformed, Err: err}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return &VerifyError{Code: ErrCodeTokenSignature, Err: err}
	case tok != nil && tok.Header != nil:
		// golang-jwt knows no signing method by that name: judged as keyFor would have.
		if fault := headerFault(tok.Header, nil); fault != nil {
			fault.Err = err
			return fault
		}
	}
	return &VerifyError{Code: ErrCodeTokenMalformed, Err: err}
}
