package conformance

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

// Decision is one request of callee-policies.json's decision tables, made concrete for an adapter: the
// policy, the peer certificate and the token values to send, and what the receiving pipeline must decide.
type Decision struct {
	Name   string
	Policy *authz.CalleePolicy
	// HTTP is nil for a gRPC call.
	HTTP *HTTPCall
	// GRPC is the full method name of a gRPC call.
	GRPC string
	// Peer is the verified client certificate (nil: none).
	Peer *x509.Certificate
	// Tokens are the X-Service-Token values (x-service-token metadata) sent.
	Tokens []string
	Caller string
	Expect Outcome
}

// HTTPCall is an HTTP request of a decision table.
type HTTPCall struct {
	Method, Path string
	// Route is the pattern of the router's route that serves the request; nil when none does.
	Route *string
}

// Outcome is what a decision must be: allowed, or denied with a status, a reason, and sub and aud
// exactly when the denial must report them.
type Outcome struct {
	Allow            bool
	Status           int
	Reason, Sub, Aud string
}

// Routes are the (method, route pattern) pairs of a document's HTTP decisions: the routes a router
// under test must serve.
func Routes(ds []Decision, policy *authz.CalleePolicy) [][2]string {
	seen := map[[2]string]bool{}
	var out [][2]string
	for _, d := range ds {
		if d.Policy != policy || d.HTTP == nil || d.HTTP.Route == nil {
			continue
		}
		r := [2]string{d.HTTP.Method, *d.HTTP.Route}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// Decisions reads the decision tables of callee-policies.json and mints their tokens with keys, at now,
// for a verifier of issuer and audience "inventory-service" trusting keys.JWKS(). Every document with
// decisions gets one *CalleePolicy, shared by its decisions.
func Decisions(keys *Keys, now time.Time) (issuer string, out []Decision, err error) {
	var vectors struct {
		Documents []struct {
			Name      string          `json:"name"`
			Document  json.RawMessage `json:"document"`
			Decisions []struct {
				HTTP   *HTTPCall       `json:"http"`
				GRPC   string          `json:"grpc"`
				Caller string          `json:"caller"`
				Scopes []string        `json:"scopes"`
				Peer   string          `json:"peer"`
				Token  string          `json:"token"`
				Expect json.RawMessage `json:"expect"`
			} `json:"decisions"`
		} `json:"documents"`
	}
	if err := Read("callee-policies.json", &vectors); err != nil {
		return "", nil, err
	}
	var tokens TokenVectors
	if err := Read("tokens.json", &tokens); err != nil {
		return "", nil, err
	}
	pki := testissuer.NewPKI("conformance callers")
	caller, other := pki.Issue("caller", false).Leaf, pki.Issue("other", false).Leaf
	thumbprints := map[string]string{"caller": authz.CertificateThumbprint(caller), "other": authz.CertificateThumbprint(other)}
	mint := func(who string, scopes []string, mutation TokenCase) (string, error) {
		jti := make([]byte, 8)
		_, _ = rand.Read(jti)
		claims := map[string]any{"sub": who, "client_id": who, "jti": base64.RawURLEncoding.EncodeToString(jti), "scope": strings.Join(scopes, " ")}
		for k, v := range mutation.Claims {
			claims[k] = v
		}
		mutation.Claims = claims
		return Mint(&tokens, &mutation, keys, now.Unix(), thumbprints)
	}
	for _, doc := range vectors.Documents {
		if doc.Decisions == nil {
			continue
		}
		policy, err := authz.ParseCalleePolicy(doc.Document)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", doc.Name, err)
		}
		for _, d := range doc.Decisions {
			var want Outcome
			if string(d.Expect) == `"allow"` {
				want.Allow = true
			} else if err := json.Unmarshal(d.Expect, &want); err != nil {
				return "", nil, err
			}
			mutations := map[string]TokenCase{
				"expired": {Claims: map[string]any{"iat": map[string]any{"now": -700.0}, "exp": map[string]any{"now": -100.0}}},
				"forged":  {Sign: "rs256-foreign-key"},
			}
			token, err := mint(d.Caller, d.Scopes, mutations[d.Token])
			if err != nil {
				return "", nil, err
			}
			sent := map[string][]string{"": {token}, "missing": nil, "empty": {""}, "twice": {token, token}, "other-certificate": {token}, "expired": {token}, "forged": {token}}[d.Token]
			peer := caller
			if d.Peer == "none" {
				peer = nil
			} else if d.Token == "other-certificate" {
				peer = other
			}
			where := d.GRPC
			if d.HTTP != nil {
				where = d.HTTP.Method + " " + d.HTTP.Path
			}
			out = append(out, Decision{
				Name:   fmt.Sprintf("%s/%s as %s [%s] token %q peer %q", doc.Name, where, d.Caller, strings.Join(d.Scopes, " "), d.Token, d.Peer),
				Policy: policy, HTTP: d.HTTP, GRPC: d.GRPC, Peer: peer, Tokens: sent, Caller: d.Caller, Expect: want,
			})
		}
	}
	return tokens.Verifier.Issuer, out, nil
}

// Check compares what an adapter decided with what the decision must be: denial is nil when the call
// was allowed (then caller is who the handler saw).
func (d *Decision) Check(allowed bool, caller string, denial *authz.CallOutcome) error {
	if d.Expect.Allow {
		if !allowed || caller != d.Caller {
			return fmt.Errorf("want allow for %s, got allowed %v caller %q denial %+v", d.Caller, allowed, caller, denial)
		}
		return nil
	}
	if allowed || denial == nil {
		return fmt.Errorf("allowed, want %d %s", d.Expect.Status, d.Expect.Reason)
	}
	if denial.Status != d.Expect.Status || denial.Reason != d.Expect.Reason || denial.Subject != d.Expect.Sub || denial.Audience != d.Expect.Aud {
		return fmt.Errorf("denial %d %s sub %q aud %q, want %d %s sub %q aud %q", denial.Status, denial.Reason, denial.Subject, denial.Audience, d.Expect.Status, d.Expect.Reason, d.Expect.Sub, d.Expect.Aud)
	}
	return nil
}
