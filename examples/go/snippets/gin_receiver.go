package snippets

import (
	"context"
	"crypto/tls"
	"net/http"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/ginauth"
	"github.com/gin-gonic/gin"
)

func serveGin(ctx context.Context, tlsConfig *tls.Config) error {
	// authz's public keys, fetched now and kept fresh (max-age, unknown kid); tokens are checked offline.
	verifier, err := authz.NewVerifier(ctx, authz.VerifierConfig{
		Issuer:   "https://authz.internal",
		Audience: "inventory-service", // this service's own name
		JWKSURL:  "http://authz-ops.internal:9464/.well-known/jwks.json",
	})
	if err != nil {
		return err
	}
	defer verifier.Close()
	// This service's own rules, route → scopes (and callers); reloaded when the file changes.
	policy, err := authz.LoadCalleePolicy("inventory-policy.json")
	if err != nil {
		return err
	}
	defer policy.Close()

	r := gin.New()
	r.GET("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) }) // registered before the guard: open
	r.Use(ginauth.Middleware(verifier, policy))                         // every route below: mTLS + token + rule
	r.GET("/stock/:sku", func(c *gin.Context) {                         // rule "GET /stock/:sku"
		caller, _ := ginauth.Caller(c)
		c.JSON(http.StatusOK, gin.H{"sku": c.Param("sku"), "caller": caller.Service})
	})

	// Client certificates are required and verified: the guard binds each token to the caller's.
	tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
	srv := &http.Server{Addr: ":8443", Handler: r, TLSConfig: tlsConfig}
	return srv.ListenAndServeTLS("", "")
}
