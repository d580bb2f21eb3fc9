package authz

import "net/http"

// Middleware guards an http.Handler with the Guard: it refuses a request without a verified TLS
// client certificate, reads X-Service-Token, verifies it (binding to that certificate included),
// applies the policy's rule for the request's method and path (p nil: any valid token; a route no rule
// names is refused, 403), and puts the caller in the request context (CallerFromContext). A refusal is
// a bare 401 or 403 with an empty body, logged once with its reason, never the token. Exempt keys are
// "METHOD /path".
func Middleware(v *Verifier, p *CalleePolicy, opts ...GuardOption) func(http.Handler) http.Handler {
	g := NewGuard(v, opts...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if g.Exempted(r.Method + " " + r.URL.Path) {
				next.ServeHTTP(w, r)
				return
			}
			caller, denial := g.Check(r.Context(), Request{
				Peer: VerifiedPeer(r.TLS), Tokens: r.Header.Values(ServiceTokenHeader), Method: r.Method, Path: r.URL.Path,
				Decide: func(c *Caller) Decision { return p.DecideHTTP(r.Method, r.URL.EscapedPath(), c) },
			})
			if denial != nil {
				WriteDenial(w, denial.Status)
				return
			}
			next.ServeHTTP(w, r.WithContext(ContextWithCaller(r.Context(), caller)))
		})
	}
}
