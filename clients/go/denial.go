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

// ContextWithCaller returns ctx carrying the verified caller (what the guards do).
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
	Reason string // one of DenialReasons()
	// Caller is the verified caller of a 403, nil for a 401.
	Caller *Caller
	Method string // HTTP method, or "" for gRPC
	Path   string // request path, or the gRPC full method name
	// Subject and Audience: sub and aud once the token's signature verified (a 403, and a 401 for an
	// expired or replayed token), "" before.
	Subject, Audience string
}

// LogDenial writes one warning line for a denial: status, reason, method, path, and sub and aud when
// known — never the token. The guards do not call it per denial: they bound their lines (a line at
// once per reason and caller, then a count per interval); an adapter that logs itself should too.
func LogDenial(l *slog.Logger, d Denial) {
	attrs := []any{"event", "service_call_denied", "status", d.Status, "reason", d.Reason}
	if d.Method != "" {
		attrs = append(attrs, "method", d.Method)
	}
	attrs = append(attrs, "path", d.Path)
	sub, aud := d.Subject, d.Audience
	if d.Caller != nil && sub == "" {
		sub, aud = d.Caller.Service, d.Caller.Audience
	}
	if sub != "" {
		attrs = append(attrs, "sub", sub)
	}
	if aud != "" {
		attrs = append(attrs, "aud", aud)
	}
	l.Warn("service call denied", attrs...)
}

// ReasonOf is the reason a Verify error is denied with: its VerifyCode (Verify fails with nothing
// else; anything else would be ERR_TOKEN_MALFORMED).
func ReasonOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return string(ve.Code)
	}
	return string(ErrCodeTokenMalformed)
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
