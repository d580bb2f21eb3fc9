// Package ginauth guards Gin routes with authz tokens: authz.Guard's pipeline, with the policy rule of
// a request chosen by its route pattern (Gin's FullPath(), e.g. "GET /stock/:sku").
package ginauth

import (
	authz "authz.internal/clients/go"
	"github.com/gin-gonic/gin"
)

// ContextKey is the gin.Context key under which the verified *authz.Caller is also stored.
const ContextKey = "authz.caller"

// Middleware refuses a request without a verified TLS client certificate, reads X-Service-Token,
// verifies it (binding to that certificate included), applies the policy's rule for
// "METHOD FullPath()" (p nil: any valid token; a route no rule names, or no route at all, is refused),
// and stores the caller in the request context (authz.CallerFromContext) and under ContextKey. A
// refusal aborts with a bare 401 or 403 and an empty body, logged once with its reason, never the
// token. Options: authz.Exempt("GET /healthz") (keys are "METHOD FullPath()"), authz.OnDecision.
func Middleware(v *authz.Verifier, p *authz.CalleePolicy, opts ...authz.GuardOption) gin.HandlerFunc {
	g := authz.NewGuard(v, opts...)
	return func(c *gin.Context) {
		r := c.Request
		if g.Exempted(r.Method + " " + c.FullPath()) {
			c.Next()
			return
		}
		caller, denial := g.Check(r.Context(), authz.Request{
			Peer: authz.VerifiedPeer(r.TLS), Tokens: r.Header.Values(authz.ServiceTokenHeader), Method: r.Method, Path: r.URL.Path,
			Decide: func(caller *authz.Caller) authz.Decision { return p.DecideRoute(r.Method, c.FullPath(), caller) },
		})
		if denial != nil {
			authz.WriteDenial(c.Writer, denial.Status)
			c.Abort()
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
