// Package ginauth guards Gin routes with authz tokens: the same rules as authz.Middleware, with the
// policy rule of a request chosen by its route pattern (Gin's FullPath(), e.g. "GET /stock/:sku").
package ginauth

import (
	"net/http"

	authz "authz.internal/clients/go"
	"github.com/gin-gonic/gin"
)

// ContextKey is the gin.Context key under which the verified *authz.Caller is also stored.
const ContextKey = "authz.caller"

// Middleware refuses a request without a verified TLS client certificate, reads X-Service-Token,
// verifies it (binding to that certificate included), applies the policy's rule for
// "METHOD FullPath()" (p nil: any valid token; a route no rule names, or no route at all, is refused),
// and stores the caller in the request context (authz.CallerFromContext) and under ContextKey. A
// refusal aborts with a bare 401 or 403 and an empty body, logged without the token.
func Middleware(v *authz.Verifier, p *authz.CalleePolicy) gin.HandlerFunc {
	return func(c *gin.Context) {
		r := c.Request
		deny := func(status int, reason string, caller *authz.Caller) {
			authz.LogDenial(v.Logger(), authz.Denial{Status: status, Reason: reason, Caller: caller, Method: r.Method, Path: r.URL.Path})
			authz.WriteDenial(c.Writer, status)
			c.Abort()
		}
		peer := authz.VerifiedPeer(r.TLS)
		if peer == nil {
			deny(http.StatusUnauthorized, "no verified client certificate", nil)
			return
		}
		token, ok := authz.TokenFromHeader(r.Header)
		if !ok {
			deny(http.StatusUnauthorized, string(authz.ErrCodeTokenMissing), nil)
			return
		}
		caller, err := v.Verify(r.Context(), token, peer)
		if err != nil {
			deny(http.StatusUnauthorized, authz.ReasonOf(err), nil)
			return
		}
		if d := p.DecideRoute(r.Method, c.FullPath(), caller); d != authz.Allow {
			deny(http.StatusForbidden, d.String(), caller)
			return
		}
		c.Request = r.WithContext(authz.ContextWithCaller(r.Context(), caller))
		c.Set(ContextKey, caller)
		c.Next()
	}
}

// Caller returns the verified caller of a request behind Middleware.
func Caller(c *gin.Context) (*authz.Caller, bool) {
	return authz.CallerFromContext(c.Request.Context())
}
