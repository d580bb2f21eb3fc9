package authz_test

// conformance/: the vectors both kits must pass (the TypeScript suite runs the same files in
// test/sdk/conformance.test.ts). One code list, the callee-policy schema and grammar, policy
// documents with their verdicts and decisions through the whole receiving pipeline, token mutations.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/conformance"
	"authz.internal/clients/go/internal/testissuer"
)

func readVectors(t *testing.T, name string, v any) {
	t.Helper()
	if err := conformance.Read(name, v); err != nil {
		t.Fatal(err)
	}
}

// strs is a list of string-like values as strings.
func strs[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

func TestConformanceOneCodeList(t *testing.T) {
	var codes struct {
		VerifyErrorCodes, CalleePolicyErrorCodes []struct{ Code string }
		DenialReasons                            []struct{ Reason string }
	}
	readVectors(t, "codes.json", &codes)
	var verifyCodes, reasons, policyCodes []string
	for _, c := range codes.VerifyErrorCodes {
		verifyCodes = append(verifyCodes, c.Code)
	}
	for _, r := range codes.DenialReasons {
		reasons = append(reasons, r.Reason)
	}
	for _, c := range codes.CalleePolicyErrorCodes {
		policyCodes = append(policyCodes, c.Code)
	}
	for name, c := range map[string]struct{ kit, file []string }{
		"VerifyCode":      {strs(authz.VerifyCodes()), verifyCodes},
		"denial reasons":  {authz.DenialReasons(), reasons},
		"PolicyErrorCode": {strs(authz.PolicyErrorCodes()), policyCodes},
	} {
		t.Run(name, func(t *testing.T) {
			if !reflect.DeepEqual(c.kit, c.file) {
				t.Fatalf("the kit's %v, conformance/codes.json's %v", c.kit, c.file)
			}
		})
	}
}

func TestConformanceTheGrammarIsTheSchemas(t *testing.T) {
	var schema struct {
		Defs map[string]struct {
			Pattern   string `json:"pattern"`
			MaxLength int    `json:"maxLength"`
		} `json:"$defs"`
	}
	readVectors(t, "callee-policy.schema.json", &schema)
	for def, pattern := range map[string]string{
		"scopeToken": authz.ScopeTokenPattern, "serviceName": authz.ServiceNamePattern, "spiffeId": authz.SpiffeIDPattern,
		"httpRouteKey": authz.HTTPRouteKeyPattern, "grpcRouteKey": authz.GRPCRouteKeyPattern,
	} {
		t.Run(def, func(t *testing.T) {
			if got := schema.Defs[def].Pattern; got != pattern {
				t.Fatalf("the schema's pattern %q, the kit's %q", got, pattern)
			}
		})
	}
	if schema.Defs["spiffeId"].MaxLength != authz.SpiffeIDMaxLength {
		t.Fatalf("SPIFFE ID max length: schema %d, kit %d", schema.Defs["spiffeId"].MaxLength, authz.SpiffeIDMaxLength)
	}
}

type policyVector struct {
	Name     string          `json:"name"`
	Document json.RawMessage `json:"document"`
	Text     *string         `json:"text"`
	Expect   struct {
		Valid bool   `json:"valid"`
		Code  string `json:"code"`
		Entry string `json:"entry"`
	} `json:"expect"`
}

func (p *policyVector) text() []byte {
	if p.Text != nil {
		return []byte(*p.Text)
	}
	return p.Document
}

// Both parsers are tested against the schema: the TypeScript suite checks every document's verdict with
// ajv and the schema; here, the Go parser gives every vector the same verdict and names the same entry.
func TestConformanceCalleePolicyDocuments(t *testing.T) {
	var vectors struct{ Documents []policyVector }
	readVectors(t, "callee-policies.json", &vectors)
	for _, v := range vectors.Documents {
		t.Run(v.Name, func(t *testing.T) {
			_, err := authz.ParseCalleePolicy(v.text())
			if v.Expect.Valid {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var pe *authz.PolicyError
			if !errors.As(err, &pe) || string(pe.Code) != v.Expect.Code || pe.Entry != v.Expect.Entry {
				t.Fatalf("want %s at %q, got %#v", v.Expect.Code, v.Expect.Entry, err)
			}
		})
	}
}

// thumbprinted is a certificate whose thumbprint the tokens of the decision tables are bound to.
func thumbprinted() *x509.Certificate {
	return testissuer.NewPKI("conformance callers").Issue("caller", false).Leaf
}

// Each request through the receiving pipeline — authz.Guard, as every adapter runs it — in each way a
// Go adapter asks the policy: by route pattern (Gin, Echo), by path (net/http), by full method (gRPC).
// echoauth's conformance test sends the HTTP ones through Echo's router and the Echo adapter.
func TestConformanceDecisions(t *testing.T) {
	keys := conformance.NewKeys()
	clock := testissuer.NewFakeClock()
	issuer, decisions, err := conformance.Decisions(keys, clock.Now().Truncate(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, authz.VerifierConfig{Issuer: issuer, Audience: "inventory-service", Keys: keys.JWKS(), Clock: clock}, nil)
	var last authz.CallOutcome
	g := authz.NewGuard(v, authz.OnDecision(func(o authz.CallOutcome) { last = o }))
	counted := 0
	for _, d := range decisions {
		p := d.Policy
		modes := map[string]func(*authz.Caller) authz.Decision{}
		method, path := "", d.GRPC
		if h := d.HTTP; h != nil {
			method, path = h.Method, h.Path
			route := ""
			if h.Route != nil {
				route = *h.Route
			}
			modes["route (Gin, Echo)"] = func(c *authz.Caller) authz.Decision { return p.DecideRoute(h.Method, route, c) }
			modes["path (net/http)"] = func(c *authz.Caller) authz.Decision { return p.DecideHTTP(h.Method, h.Path, c) }
		} else {
			modes["method (gRPC)"] = func(c *authz.Caller) authz.Decision { return p.DecideMethod(d.GRPC, c) }
		}
		for mode, decide := range modes {
			t.Run(d.Name+" by "+mode, func(t *testing.T) {
				got, denial := g.Check(context.Background(), authz.Request{Peer: d.Peer, Tokens: d.Tokens, Method: method, Path: path, Decide: decide})
				var service string
				if got != nil {
					service = got.Service
				}
				if err := d.Check(denial == nil, service, &last); err != nil {
					t.Fatal(err)
				}
				if denial != nil && (denial.Status != last.Status || denial.Reason != last.Reason || denial.Subject != last.Subject || denial.Audience != last.Audience) {
					t.Fatalf("Check denied %+v, OnDecision told %+v", denial, last)
				}
				if last.Allowed != (denial == nil) {
					t.Fatalf("OnDecision told %+v", last)
				}
			})
			counted++
		}
	}
	if counted < 40 {
		t.Fatalf("%d decisions", counted)
	}
}

func TestConformanceTokenVerification(t *testing.T) {
	var vectors conformance.TokenVectors
	readVectors(t, "tokens.json", &vectors)
	keys := conformance.NewKeys()
	clock := testissuer.NewFakeClock()
	clock.Advance(clock.Now().Truncate(time.Second).Sub(clock.Now())) // a whole second: boundaries are exact
	caller, other := thumbprinted(), thumbprinted()
	thumbprints := map[string]string{"caller": authz.CertificateThumbprint(caller), "other": authz.CertificateThumbprint(other)}
	for i := range vectors.Cases {
		c := &vectors.Cases[i]
		t.Run(c.Name, func(t *testing.T) {
			cfg := authz.VerifierConfig{
				Issuer: vectors.Verifier.Issuer, Audience: vectors.Verifier.Audience, Keys: keys.JWKS(), Clock: clock,
				Algorithms: vectors.Verifier.Algorithms, AllowNoPeer: vectors.Verifier.AllowNoPeer,
			}
			leeway := vectors.Verifier.Leeway
			if c.Verifier.Algorithms != nil {
				cfg.Algorithms = c.Verifier.Algorithms
			}
			if c.Verifier.Leeway != nil {
				leeway = *c.Verifier.Leeway
			}
			cfg.Leeway = time.Duration(leeway) * time.Second
			if leeway == 0 {
				cfg.Leeway = -1 // none (0 means the default)
			}
			if c.Verifier.MaxLifetime != nil {
				cfg.MaxLifetime = time.Duration(*c.Verifier.MaxLifetime) * time.Second
			}
			if c.Verifier.AllowNoPeer != nil {
				cfg.AllowNoPeer = *c.Verifier.AllowNoPeer
			}
			v := newVerifier(t, cfg, nil)
			token, err := conformance.Mint(&vectors, c, keys, clock.Now().Unix(), thumbprints)
			if err != nil {
				t.Fatal(err)
			}
			peer := map[string]*x509.Certificate{"": caller, "caller": caller, "other": other, "none": nil}[c.Peer]
			_, err = v.Verify(context.Background(), token, peer)
			if c.Expect.Accepted {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ve *authz.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("want %s, got %v", c.Expect.Code, err)
			}
			if string(ve.Code) != c.Expect.Code || ve.Subject != c.Expect.Sub || ve.Audience != c.Expect.Aud {
				t.Fatalf("refused %s sub %q aud %q (%v), want %s sub %q aud %q", ve.Code, ve.Subject, ve.Audience, ve.Err, c.Expect.Code, c.Expect.Sub, c.Expect.Aud)
			}
		})
	}
}

func TestConformanceStaticKeySets(t *testing.T) {
	var vectors struct {
		Cases []struct {
			Name       string           `json:"name"`
			Algorithms []string         `json:"algorithms"`
			Keys       []map[string]any `json:"keys"`
			Raw        *string          `json:"raw"`
			Expect     struct {
				Kids []string `json:"kids"`
				Code string   `json:"code"`
			} `json:"expect"`
		} `json:"cases"`
	}
	readVectors(t, "key-sets.json", &vectors)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b := base64.RawURLEncoding.EncodeToString
	material := map[string]map[string]any{
		"rsa":      testissuer.JWK(&testissuer.RSAKey().PublicKey, "", ""),
		"rsa-1024": {"kty": "RSA", "n": b(weak.N.Bytes()), "e": b(big.NewInt(int64(weak.E)).Bytes())},
		"ec":       testissuer.JWK(&testissuer.ECKey().PublicKey, "", ""),
		"ec-p384":  {"kty": "EC", "crv": "P-384", "x": b(p384.X.FillBytes(make([]byte, 48))), "y": b(p384.Y.FillBytes(make([]byte, 48)))},
	}
	for _, c := range vectors.Cases {
		t.Run(c.Name, func(t *testing.T) {
			var jwks []byte
			if c.Raw != nil {
				jwks = []byte(*c.Raw)
			} else {
				keys := []any{}
				for _, entry := range c.Keys {
					jwk := map[string]any{}
					if name, ok := entry["key"].(string); ok {
						for k, v := range material[name] {
							if k != "kid" && k != "alg" && k != "use" {
								jwk[k] = v
							}
						}
					}
					for k, v := range entry {
						if k != "key" && k != "drop" && k != "set" && v != nil {
							jwk[k] = v
						}
					}
					set, _ := entry["set"].(map[string]any)
					for k, v := range set {
						if copyOf, ok := v.(map[string]any); ok {
							v = jwk[copyOf["copy"].(string)]
						}
						jwk[k] = v
					}
					drop, _ := entry["drop"].([]any)
					for _, k := range drop {
						delete(jwk, k.(string))
					}
					keys = append(keys, jwk)
				}
				jwks, _ = json.Marshal(map[string]any{"keys": keys})
			}
			algorithms := c.Algorithms
			if algorithms == nil {
				algorithms = []string{"RS256"}
			}
			v, err := authz.NewVerifier(context.Background(), authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", Keys: jwks, Algorithms: algorithms})
			if c.Expect.Code != "" {
				var ve *authz.VerifyError
				if !errors.As(err, &ve) || string(ve.Code) != c.Expect.Code {
					t.Fatalf("want %s, got %v", c.Expect.Code, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if got := v.KIDs(); !reflect.DeepEqual(got, c.Expect.Kids) {
				t.Fatalf("kids %v, want %v", got, c.Expect.Kids)
			}
		})
	}
}

// One set of callee counters: after the same observations, the same Prometheus text as the TypeScript SDK.
func TestConformanceCalleeCounters(t *testing.T) {
	var vectors struct {
		Observations []struct {
			Allowed      bool   `json:"allowed"`
			Denied       string `json:"denied"`
			Status       int    `json:"status"`
			PolicyReload string `json:"policyReload"`
		} `json:"observations"`
		Exposition []string `json:"exposition"`
	}
	readVectors(t, "callee-counters.json", &vectors)
	c := &authz.CalleeCounters{}
	for _, o := range vectors.Observations {
		switch {
		case o.PolicyReload == "failed":
			c.ObservePolicyReload(errors.New("the source cannot be read"))
		case o.PolicyReload == "succeeded":
			c.ObservePolicyReload(nil)
		default:
			c.Observe(authz.CallOutcome{Allowed: o.Allowed, Reason: o.Denied, Status: o.Status})
		}
	}
	var text strings.Builder
	if err := c.WritePrometheus(&text); err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(vectors.Exposition, "\n") + "\n"; text.String() != want {
		t.Fatalf("the kit writes\n%s\nconformance/callee-counters.json says\n%s", text.String(), want)
	}
}
