// GOPATH builds default to Go 1.20's GODEBUG; the test's ServeMux uses Go 1.22 patterns.
//go:debug httpmuxgo121=0

package authz_test

import (
	"net/http"
	"testing"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

func TestMiddlewareGuardsANetHTTPService(t *testing.T) {
	testissuer.RunHTTPGuardSuite(t, iss, func(v *authz.Verifier, p *authz.CalleePolicy) http.Handler {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stock/{sku}", testissuer.CallerBody) // GET patterns serve HEAD too
		mux.HandleFunc("POST /stock/{sku}/deduct", testissuer.CallerBody)
		mux.HandleFunc("GET /stock/{sku}/history", testissuer.CallerBody)
		mux.HandleFunc("GET /admin", testissuer.CallerBody)
		mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("handler bug") })
		return authz.Middleware(v, p)(mux)
	})
}
