package ginauth_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/ginauth"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/gin-gonic/gin"
)

var iss *testissuer.Issuer

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	var err error
	if iss, err = testissuer.Start(testissuer.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "cannot start authz:", err)
		os.Exit(1)
	}
	code := m.Run()
	iss.Close()
	os.Exit(code)
}

func TestMiddlewareGuardsAGinService(t *testing.T) {
	testissuer.RunHTTPGuardSuite(t, iss, func(v *authz.Verifier, p *authz.CalleePolicy) http.Handler {
		r := gin.New()
		r.Use(gin.RecoveryWithWriter(io.Discard), ginauth.Middleware(v, p))
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
	})
}

// The API as issue 13 names it.
var _ func(*authz.Verifier, *authz.CalleePolicy) gin.HandlerFunc = ginauth.Middleware
