// GOPATH builds default to Go 1.20's GODEBUG; the test's ServeMux uses Go 1.22 patterns.
//go:debug httpmuxgo121=0

package authz_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

// netHTTPGuard is the suite's inventory-service on a ServeMux behind authz.Middleware.
func netHTTPGuard(v *authz.Verifier, p *authz.CalleePolicy, opts ...authz.GuardOption) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stock/{sku}", testissuer.CallerBody) // GET patterns serve HEAD too
	mux.HandleFunc("POST /stock/{sku}/deduct", testissuer.CallerBody)
	mux.HandleFunc("GET /stock/{sku}/history", testissuer.CallerBody)
	mux.HandleFunc("GET /admin", testissuer.CallerBody)
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("handler bug") })
	return authz.Middleware(v, p, opts...)(mux)
}

func TestMiddlewareGuardsANetHTTPService(t *testing.T) {
	testissuer.RunHTTPGuardSuite(t, fake, netHTTPGuard)
}

func TestMiddlewareLetsExemptRoutesThroughWithoutAToken(t *testing.T) {
	v := jwksVerifier(t, fake, nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := authz.Middleware(v, nil, authz.Exempt("GET /healthz"))(ok)
	for _, c := range []struct {
		name, method, path string
		want               int
	}{
		{"the exempt route", "GET", "/healthz", http.StatusNoContent},
		{"another method on it", "POST", "/healthz", http.StatusUnauthorized},
		{"another route", "GET", "/stock/sku-1", http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
			if w.Code != c.want {
				t.Fatalf("%d, want %d", w.Code, c.want)
			}
		})
	}
}
