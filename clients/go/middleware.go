package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
)

// ServiceTokenHeader is the HTTP header that carries the token (gRPC: metadata "x-service-token").
const ServiceTokenHeader = "X-Service-Token"

type callerKey struct{}

// ContextWithCaller returns ctx carrying the verified caller (what the middlewares do).
func ContextWithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFromContext returns the verified caller of the request behind ctx: in handlers behind
// Middleware, ginauth.Middleware and the grpcauth interceptors.
func CallerFromContext(ctx context.Context) (*Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*Caller)
	return c, ok && c != nil
}

// VerifiedPeer is the client certificate of a connection whose chain the TLS stack verified
// (VerifiedChains non-empty: the server requires and verifies client certificates), or nil.
func VerifiedPeer(state *tls.ConnectionState) *x509.Certificate {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return nil
	}
	return state.VerifiedChains[0][0]
}

// TokenFromHeader returns the one X-Service-Token value; several values, or an empty one, are none.
func TokenFromHeader(h http.Header) (string, bool) {
	values := h.Values(ServiceTokenHeader)
	if len(values) != 1 || values[0] == "" {
		return "", false
	}
	return values[0], true
}

// Denial describes a refused call for the log: never the token.
type Denial struct {
	Status int    // 401 or 403 (gRPC: UNAUTHENTICATED or PERMISSION_DENIED)
	Reason string // a VerifyCode, or what the policy said
	Caller *Caller
	Method string // HTTP method, or "" for gRPC
	Path   string // request path, or the gRPC full method name
}

// LogDenial writes one warning line for a denial: sub, aud, method, path, status and reason.
func LogDenial(l *slog.Logger, d Denial) {
	attrs := []any{"event", "service_call_denied", "status", d.Status, "reason", d.Reason}
	if d.Method != "" {
		attrs = append(attrs, "method", d.Method)
	}
	attrs = append(attrs, "path", d.Path)
	if d.Caller != nil {
		attrs = append(attrs, "sub", d.Caller.Service, "aud", d.Caller.Audience)
	}
	l.Warn("service call denied", attrs...)
}

// ReasonOf is the reason a Verify error is logged with: its VerifyCode.
func ReasonOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return string(ve.Code)
	}
	return "ERR_TOKEN_INVALID"
}

// Middleware guards an http.Handler: it refuses a request without a verified TLS client certificate,
// reads X-Service-Token, verifies it (binding to that certificate included), applies the policy's rule
// for the request's method and path (p nil: any valid token), and puts the caller in the request
// context (CallerFromContext). A refusal is a bare 401 or 403 with an empty body, logged with sub, aud,
// method and path, never the token. Under a policy, a route no rule names is refused (403).
func Middleware(v *Verifier, p *CalleePolicy) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			deny := func(status int, reason string, c *Caller) {
				LogDenial(v.Logger(), Denial{Status: status, Reason: reason, Caller: c, Method: r.Method, Path: r.URL.Path})
				WriteDenial(w, status)
			}
			peer := VerifiedPeer(r.TLS)
			if peer == nil {
				deny(http.StatusUnauthorized, "no verified client certificate", nil)
				return
			}
			token, ok := TokenFromHeader(r.Header)
			if !ok {
				deny(http.StatusUnauthorized, string(ErrCodeTokenMissing), nil)
				return
			}
			caller, err := v.Verify(r.Context(), token, peer)
			if err != nil {
				deny(http.StatusUnauthorized, ReasonOf(err), nil)
				return
			}
			if d := p.DecideHTTP(r.Method, r.URL.EscapedPath(), caller); d != Allow {
				deny(http.StatusForbidden, d.String(), caller)
				return
			}
			next.ServeHTTP(w, r.WithContext(ContextWithCaller(r.Context(), caller)))
		})
	}
}

// WriteDenial answers a bare status with an empty body, never cached. Headers other middleware set
// (a request id, say) stay; nothing describes a body.
func WriteDenial(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Del("Content-Type")
	h.Del("Content-Encoding")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
}
