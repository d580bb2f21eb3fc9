package authz

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
)

// CallOutcome is what the receiving edge decided about one call: what a counter may count and a log
// line may say (never the token).
type CallOutcome struct {
	// Allowed: the token verified, is bound to the caller's certificate, and the policy allows it.
	Allowed bool
	// Status is 401 or 403 for a denial (gRPC: UNAUTHENTICATED or PERMISSION_DENIED), 0 when allowed.
	Status int
	// Reason is one of DenialReasons() for a denial, "" when allowed.
	Reason string
	// Method is the HTTP method ("" for gRPC); Path the request path or the gRPC full method name.
	Method, Path string
	// Subject and Audience are the token's sub and aud once its signature verified (a replayed or
	// expired token says whose it was), "" before.
	Subject, Audience string
}

// GuardOption configures the receiving edge: Middleware, ginauth.Middleware, the grpcauth
// interceptors (grpcauth.Option is this type).
type GuardOption func(*guardOptions)

type guardOptions struct {
	exempt     map[string]bool
	onDecision func(CallOutcome)
}

// Exempt lets calls of these route keys through without a token: gRPC full method names (for
// example "/grpc.health.v1.Health/Check" for a load balancer's probe), or an HTTP adapter's key,
// "METHOD /path" (net/http: the request path; Gin: the route pattern). Nothing is exempt unless named.
func Exempt(keys ...string) GuardOption {
	return func(o *guardOptions) {
		for _, k := range keys {
			o.exempt[k] = true
		}
	}
}

// OnDecision is told about every call the edge decides, allowed or denied with its reason, for
// counters: pass a CalleeCounters' Observe, or increment your own Prometheus counters. It must not
// block. A panic in it is recovered and changes nothing about the answer (grpc-go does not recover
// an interceptor's panic: a counter's bug must not take a server down). Given twice, the last wins.
func OnDecision(f func(CallOutcome)) GuardOption {
	return func(o *guardOptions) { o.onDecision = f }
}

// Request is what an adapter knows of one incoming call.
type Request struct {
	// Peer is the client certificate the TLS stack verified (VerifiedPeer), or nil.
	Peer *x509.Certificate
	// Tokens are every value of X-Service-Token (gRPC: x-service-token): exactly one non-empty value
	// is a token.
	Tokens []string
	// Method is the HTTP method ("" for gRPC); Path the request path or the gRPC full method name.
	Method, Path string
	// Decide is the callee policy's decision for this call (p.DecideHTTP, p.DecideRoute,
	// p.DecideMethod: each safe on a nil policy). Without one, every call is unlisted (refused).
	Decide func(*Caller) Decision
}

// Guard is the receiving edge, written once for every framework: a verified TLS peer certificate,
// exactly one token, the token verified and bound to that certificate, then the policy's decision.
// Every denial is logged (the Verifier's Logger, bounded: a line at once per reason and caller, then
// a count per interval) and reported to OnDecision with a reason from one vocabulary (DenialReasons,
// the TypeScript SDK's too). An adapter is a few lines: build the
// Request, Check it, write the answer (WriteDenial for HTTP).
type Guard struct {
	v    *Verifier
	opts guardOptions
}

// NewGuard builds the edge of a verifier.
func NewGuard(v *Verifier, opts ...GuardOption) *Guard {
	g := &Guard{v: v, opts: guardOptions{exempt: map[string]bool{}}}
	for _, o := range opts {
		o(&g.opts)
	}
	return g
}

// Exempted reports whether calls with this route key pass without a token (Exempt).
func (g *Guard) Exempted(key string) bool { return g.opts.exempt[key] }

// Check decides one call: the verified caller, or the denial (already logged, bounded, and reported).
func (g *Guard) Check(ctx context.Context, r Request) (*Caller, *Denial) {
	deny := func(status int, reason string, caller *Caller, sub, aud string) (*Caller, *Denial) {
		d := &Denial{Status: status, Reason: reason, Caller: caller, Method: r.Method, Path: r.Path, Subject: sub, Audience: aud}
		g.v.denials.note(*d)
		g.report(CallOutcome{Status: status, Reason: reason, Method: r.Method, Path: r.Path, Subject: sub, Audience: aud})
		return nil, d
	}
	if r.Peer == nil {
		return deny(http.StatusUnauthorized, ReasonPeerUnverified, nil, "", "")
	}
	if len(r.Tokens) != 1 || r.Tokens[0] == "" {
		return deny(http.StatusUnauthorized, string(ErrCodeTokenMissing), nil, "", "")
	}
	caller, err := g.v.Verify(ctx, r.Tokens[0], r.Peer)
	if err != nil {
		var sub, aud string
		if ve := (*VerifyError)(nil); errors.As(err, &ve) {
			sub, aud = ve.Subject, ve.Audience
		}
		return deny(http.StatusUnauthorized, ReasonOf(err), nil, sub, aud)
	}
	decision := Unlisted
	if r.Decide != nil {
		decision = r.Decide(caller)
	}
	if decision != Allow {
		return deny(http.StatusForbidden, decision.Reason(), caller, caller.Service, caller.Audience)
	}
	g.report(CallOutcome{Allowed: true, Method: r.Method, Path: r.Path, Subject: caller.Service, Audience: caller.Audience})
	return caller, nil
}

func (g *Guard) report(o CallOutcome) {
	if g.opts.onDecision == nil {
		return
	}
	defer func() { _ = recover() }()
	g.opts.onDecision(o)
}
