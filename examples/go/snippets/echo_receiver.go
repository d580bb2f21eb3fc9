package snippets

import (
	"crypto/tls"
	"net/http"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/echoauth"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

func serveEcho(verifier *authz.Verifier, policy *authz.CalleePolicy, tlsConfig *tls.Config) error {
	e := echo.New()
	// Use, never Pre: Echo routes between the two, and the rule is the matched route's. Every route is
	// guarded, those registered before Use too: an open one is exempted by its pattern.
	e.Use(middleware.Recover(), echoauth.Middleware(verifier, policy, authz.Exempt("GET /healthz")))
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/stock/:sku", func(c echo.Context) error { // rule "GET /stock/:sku"
		caller, _ := echoauth.Caller(c)
		return c.JSON(http.StatusOK, map[string]string{"sku": c.Param("sku"), "caller": caller.Service})
	})

	tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
	srv := &http.Server{Addr: ":8443", Handler: e, TLSConfig: tlsConfig}
	return srv.ListenAndServeTLS("", "")
}
