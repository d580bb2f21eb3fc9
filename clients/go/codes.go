package authz

import "fmt"

// VerifyCode says why a token was refused. Callers only ever see a bare 401; the code is for logs,
// metrics and tests. The set is the TypeScript SDK's VerifyErrorCode, with the same meanings
// (conformance/codes.json; the tests compare both with it).
type VerifyCode string

// The reasons a Verifier refuses a token.
const (
	ErrCodeTokenMissing        VerifyCode = "ERR_TOKEN_MISSING"
	ErrCodeTokenMalformed      VerifyCode = "ERR_TOKEN_MALFORMED"
	ErrCodeTokenAlg            VerifyCode = "ERR_TOKEN_ALG"
	ErrCodeTokenTyp            VerifyCode = "ERR_TOKEN_TYP"
	ErrCodeTokenSignature      VerifyCode = "ERR_TOKEN_SIGNATURE"
	ErrCodeTokenUnknownKID     VerifyCode = "ERR_TOKEN_UNKNOWN_KID"
	ErrCodeTokenIssuer         VerifyCode = "ERR_TOKEN_ISSUER"
	ErrCodeTokenAudience       VerifyCode = "ERR_TOKEN_AUDIENCE"
	ErrCodeTokenExpired        VerifyCode = "ERR_TOKEN_EXPIRED"
	ErrCodeTokenNotYetValid    VerifyCode = "ERR_TOKEN_NOT_YET_VALID"
	ErrCodeTokenIssuedInFuture VerifyCode = "ERR_TOKEN_ISSUED_IN_FUTURE"
	ErrCodeTokenLifetime       VerifyCode = "ERR_TOKEN_LIFETIME"
	ErrCodeTokenClaims         VerifyCode = "ERR_TOKEN_CLAIMS"
	ErrCodeBindingMismatch     VerifyCode = "ERR_BINDING_MISMATCH"
	ErrCodeBindingRequired     VerifyCode = "ERR_BINDING_REQUIRED"
	ErrCodeJWKSUnavailable     VerifyCode = "ERR_JWKS_UNAVAILABLE"
	// ErrCodeJWKSInvalid: a static key set (Keys, KeysFile, KeysEnv) with no usable public key, or
	// with private key material. NewVerifier fails with it; it is never a per-request refusal.
	ErrCodeJWKSInvalid VerifyCode = "ERR_JWKS_INVALID"

	// Deprecated: the code is ERR_TOKEN_ISSUED_IN_FUTURE, as in the TypeScript SDK (it was
	// "ERR_TOKEN_ISSUED_AT"). Use ErrCodeTokenIssuedInFuture; this alias goes in the next release.
	ErrCodeTokenIssuedAt = ErrCodeTokenIssuedInFuture
)

// VerifyCodes lists every VerifyCode, in the order of conformance/codes.json.
func VerifyCodes() []VerifyCode {
	return []VerifyCode{
		ErrCodeTokenMissing, ErrCodeTokenMalformed, ErrCodeTokenAlg, ErrCodeTokenTyp, ErrCodeTokenSignature,
		ErrCodeTokenUnknownKID, ErrCodeTokenIssuer, ErrCodeTokenAudience, ErrCodeTokenExpired,
		ErrCodeTokenNotYetValid, ErrCodeTokenIssuedInFuture, ErrCodeTokenLifetime, ErrCodeTokenClaims,
		ErrCodeBindingMismatch, ErrCodeBindingRequired, ErrCodeJWKSUnavailable, ErrCodeJWKSInvalid,
	}
}

// VerifyError is a refused token. Branch on Code (errors.As), never on the message.
type VerifyError struct {
	Code VerifyCode
	// Err is the underlying cause, when there is one (never contains the token).
	Err error
	// Subject and Audience are the token's sub and aud when its signature verified (so they are
	// authz's words, not the caller's) and they are strings: the refusal of an expired or replayed
	// token says whose it was. Empty otherwise.
	Subject, Audience string
}

func (e *VerifyError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("authz: token refused (%s): %v", e.Code, e.Err)
	}
	return fmt.Sprintf("authz: token refused (%s)", e.Code)
}

func (e *VerifyError) Unwrap() error { return e.Err }

func verifyErr(code VerifyCode, format string, args ...any) *VerifyError {
	return &VerifyError{Code: code, Err: fmt.Errorf(format, args...)}
}

// Why the receiving edge refused a call, besides a VerifyCode (conformance/codes.json).
const (
	// ReasonPeerUnverified: the call did not come over TLS with a client certificate the server
	// verified (401).
	ReasonPeerUnverified = "ERR_PEER_UNVERIFIED"
	// ReasonRouteForbidden: a rule names the route and the caller lacks one of its scopes, or is not
	// one of its callers (403).
	ReasonRouteForbidden = "ERR_ROUTE_FORBIDDEN"
	// ReasonRouteUnlisted: no rule names the route, or no route matched (403).
	ReasonRouteUnlisted = "ERR_ROUTE_UNLISTED"
)

// DenialReasons lists every reason the guards log and count a denial with, in the order of
// conformance/codes.json: ERR_PEER_UNVERIFIED, the VerifyCodes a request can fail with (all but
// ERR_JWKS_INVALID), ERR_ROUTE_FORBIDDEN, ERR_ROUTE_UNLISTED. The TypeScript SDK's DENIAL_REASONS.
func DenialReasons() []string {
	out := []string{ReasonPeerUnverified}
	for _, c := range VerifyCodes() {
		if c != ErrCodeJWKSInvalid {
			out = append(out, string(c))
		}
	}
	return append(out, ReasonRouteForbidden, ReasonRouteUnlisted)
}

// PolicyErrorCode says why a callee policy cannot be used: the TypeScript SDK's CalleePolicyError
// codes.
type PolicyErrorCode string

// The reasons a callee policy is refused.
const (
	ErrCodePolicyRead     PolicyErrorCode = "ERR_POLICY_READ"
	ErrCodePolicyJSON     PolicyErrorCode = "ERR_POLICY_JSON"
	ErrCodePolicyRouteKey PolicyErrorCode = "ERR_POLICY_ROUTE_KEY"
	ErrCodePolicyInvalid  PolicyErrorCode = "ERR_POLICY_INVALID"
)

// PolicyErrorCodes lists every PolicyErrorCode, in the order of conformance/codes.json.
func PolicyErrorCodes() []PolicyErrorCode {
	return []PolicyErrorCode{ErrCodePolicyRead, ErrCodePolicyJSON, ErrCodePolicyRouteKey, ErrCodePolicyInvalid}
}

// PolicyError is a callee policy that cannot be used: Code says why, Entry names the bad part as a
// JSON pointer ("/routes/GET ~1stock~1:sku/scopes/0"), Source the file. Find it with errors.As.
type PolicyError struct {
	Code    PolicyErrorCode
	Source  string
	Entry   string
	Message string
}

func (e *PolicyError) Error() string { return fmt.Sprintf("%s: %s", e.Source, e.Message) }
