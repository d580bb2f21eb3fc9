package ginauth_test

import (
	"io"
	"net/http"
	"os"
	"testing"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/ginauth"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/gin-gonic/gin"
)

// fake stands in for authz (no node); live_test.go runs the same suite against the real issuer.
var fake *testissuer.Fake

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	fake = testissuer.StartFake()
	code := m.Run()
	fake.Close()
	os.Exit(code)
}

// ginGuard is the suite's inventory-service on Gin behind ginauth.Middleware.
func ginGuard(v *authz.Verifier, p *authz.CalleePolicy, opts ...authz.GuardOption) http.Handler {
	r := gin.New()
	r.Use(gin.RecoveryWithWriter(io.Discard), ginauth.Middleware(v, p, opts...))
	handler := func(c *gin.Context) {
		caller, ok := ginauth.Caller(c)
		stored, _ := c.Get(ginauth.ContextKey)
		if !ok || stored != caller {
			c.Status(http.StatusInternalServerError)
			return
		}
		testissuer.CallerBody(c.Writer, c.Request)
	}
	r.GET("/stock/:sku", handler)
	r.HEAD("/stock/:sku", handler) // its rule is the GET rule
	r.POST("/stock/:sku/deduct", handler)
	r.GET("/stock/:sku/history", handler)
	r.GET("/admin", handler)
	r.GET("/panic", func(*gin.Context) { panic("handler bug") })
	return r
}

func TestMiddlewareGuardsAGinService(t *testing.T) {
	testissuer.RunHTTPGuardSuite(t, fake, ginGuard)
}

// The API as issue 13 names it, with the guard's options (issue 23).
var _ func(*authz.Verifier, *authz.CalleePolicy, ...authz.GuardOption) gin.HandlerFunc = ginauth.Middleware
