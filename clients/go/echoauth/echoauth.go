// Package echoauth guards Echo routes with authz tokens: authz.Guard's pipeline, with the policy rule of
// a request chosen by its route pattern (Echo's c.Path(), e.g. "GET /stock/:sku").
package echoauth

import (
	"reflect"

	authz "authz.internal/clients/go"
	"github.com/labstack/echo/v4"
)

// ContextKey is the echo.Context key under which the verified *authz.Caller is also stored.
const ContextKey = "authz.caller"

// Middleware refuses a request without a verified TLS client certificate, reads X-Service-Token,
// verifies it (binding to that certificate included), applies the policy's rule for
// "METHOD c.Path()" (p nil: any valid token; a route no rule names, or no route at all, is refused),
// and stores the caller in the request context (authz.CallerFromContext) and under ContextKey. A
// refusal is a bare 401 or 403 with an empty body, written here and never handed to Echo's
// HTTPErrorHandler (which would add a JSON body), logged once with its reason, never the token.
//
// Install it with e.Use (or on a Group), never e.Pre: Echo routes a request between the two, and the
// rule is the route's. Options: authz.Exempt("GET /healthz") (keys are "METHOD c.Path()"),
// authz.OnDecision.
func Middleware(v *authz.Verifier, p *authz.CalleePolicy, opts ...authz.GuardOption) echo.MiddlewareFunc {
	g := authz.NewGuard(v, opts...)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			route := Route(c)
			if route != "" && g.Exempted(r.Method+" "+route) {
				return next(c)
			}
			caller, denial := g.Check(r.Context(), authz.Request{
				Peer: authz.VerifiedPeer(r.TLS), Tokens: r.Header.Values(authz.ServiceTokenHeader), Method: r.Method, Path: r.URL.Path,
				Decide: func(caller *authz.Caller) authz.Decision { return p.DecideRoute(r.Method, route, caller) },
			})
			if denial != nil {
				authz.WriteDenial(c.Response(), denial.Status)
				return nil
			}
			c.SetRequest(r.WithContext(authz.ContextWithCaller(r.Context(), caller)))
			c.Set(ContextKey, caller)
			return next(c)
		}
	}
}

// Caller returns the verified caller of a request behind Middleware.
func Caller(c echo.Context) (*authz.Caller, bool) {
	return authz.CallerFromContext(c.Request().Context())
}

// Route is the pattern of the route Echo matched for this request ("/stock/:sku"), or "" when none
// did. Echo 4 leaves c.Path() at the request's own path when no route matches, and at the route's
// pattern when the path matches but the method does not: read as a pattern, "/admin" or a HEAD on a
// GET-only route would find a rule. A request Echo answers with its not-found or method-not-allowed
// handler matched no route.
func Route(c echo.Context) string {
	h := reflect.ValueOf(c.Handler()).Pointer()
	if h == reflect.ValueOf(echo.NotFoundHandler).Pointer() || h == reflect.ValueOf(echo.MethodNotAllowedHandler).Pointer() {
		return ""
	}
	return c.Path()
}
