package echoauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/echoauth"
	"authz.internal/clients/go/internal/conformance"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/labstack/echo/v4"
)

// The decision tables of conformance/callee-policies.json through Echo: one Echo app per policy,
// serving the routes its requests name, with echoauth.Middleware in front; Echo's router decides which
// route (if any) serves each request, the adapter asks the policy by that route's pattern.
func TestConformanceDecisionsThroughEcho(t *testing.T) {
	keys := conformance.NewKeys()
	clock := testissuer.NewFakeClock()
	issuer, decisions, err := conformance.Decisions(keys, clock.Now().Truncate(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := authz.NewVerifier(ctx, authz.VerifierConfig{Issuer: issuer, Audience: "inventory-service", Keys: keys.JWKS(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	var last authz.CallOutcome
	var served struct{ route, caller string }
	apps := map[*authz.CalleePolicy]*echo.Echo{}
	count := 0
	for _, d := range decisions {
		if d.HTTP == nil {
			continue
		}
		e, ok := apps[d.Policy]
		if !ok {
			e = quietEcho()
			e.Use(echoauth.Middleware(v, d.Policy, authz.OnDecision(func(o authz.CallOutcome) { last = o })))
			for _, r := range conformance.Routes(decisions, d.Policy) {
				e.Add(r[0], r[1], func(c echo.Context) error {
					caller, _ := echoauth.Caller(c)
					served.route, served.caller = c.Path(), caller.Service
					return c.NoContent(http.StatusOK)
				})
			}
			apps[d.Policy] = e
		}
		t.Run(d.Name, func(t *testing.T) {
			served.route, served.caller = "", ""
			req := httptest.NewRequest(d.HTTP.Method, d.HTTP.Path, nil)
			req.TLS = &tls.ConnectionState{}
			if d.Peer != nil {
				req.TLS.VerifiedChains = [][]*x509.Certificate{{d.Peer}}
			}
			for _, tok := range d.Tokens {
				req.Header.Add(authz.ServiceTokenHeader, tok)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			allowed := rec.Code == http.StatusOK
			if err := d.Check(allowed, served.caller, &last); err != nil {
				t.Fatal(err)
			}
			if allowed {
				if d.HTTP.Route == nil || served.route != *d.HTTP.Route {
					t.Fatalf("served by route %q, the vector's %v", served.route, d.HTTP.Route)
				}
				return
			}
			if rec.Code != d.Expect.Status || rec.Body.Len() != 0 {
				t.Fatalf("answered %d %q, want a bare %d", rec.Code, rec.Body.String(), d.Expect.Status)
			}
		})
		count++
	}
	if count < 30 {
		t.Fatalf("%d HTTP decisions", count)
	}
}
