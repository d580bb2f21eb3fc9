// Package grpcauth carries authz tokens over gRPC: per-RPC credentials for callers (metadata
// "x-service-token", TLS required) and unary and stream server interceptors for receivers, with the
// same rules as authz.Middleware and the policy rule chosen by the full method name.
package grpcauth

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	authz "authz.internal/clients/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// MetadataKey is the gRPC metadata key that carries the token.
const MetadataKey = "x-service-token"

// PerRPCCredentials puts a token for audience (and scopes) from ts into every call's metadata. It
// requires transport security, and refuses to attach the token to a connection that is not TLS.
func PerRPCCredentials(ts *authz.TokenSource, audience string, scopes ...string) credentials.PerRPCCredentials {
	return &perRPC{ts: ts, audience: audience, scopes: append([]string(nil), scopes...)}
}

type perRPC struct {
	ts       *authz.TokenSource
	audience string
	scopes   []string
}

func (c *perRPC) RequireTransportSecurity() bool { return true }

func (c *perRPC) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, authz.ErrInsecureTransport.Error())
	}
	if _, isTLS := ri.AuthInfo.(credentials.TLSInfo); !isTLS {
		return nil, status.Error(codes.Unauthenticated, authz.ErrInsecureTransport.Error())
	}
	token, err := c.ts.Token(ctx, c.audience, c.scopes...)
	if err != nil {
		var te *authz.TokenError
		if errors.As(err, &te) {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return map[string]string{MetadataKey: token}, nil
}

// Option configures the server interceptors.
type Option func(*options)

type options struct {
	exempt map[string]bool
}

// Exempt lets calls of these full method names through without a token (for example
// "/grpc.health.v1.Health/Check" for a load balancer's probe). Nothing is exempt unless named here.
func Exempt(fullMethods ...string) Option {
	return func(o *options) {
		for _, m := range fullMethods {
			o.exempt[m] = true
		}
	}
}

func build(opts []Option) *options {
	o := &options{exempt: map[string]bool{}}
	for _, f := range opts {
		f(o)
	}
	return o
}

// authorize is what both interceptors do before the handler runs.
func authorize(ctx context.Context, v *authz.Verifier, p *authz.CalleePolicy, fullMethod string) (context.Context, error) {
	deny := func(code codes.Code, reason string, caller *authz.Caller) error {
		st := 401
		if code == codes.PermissionDenied {
			st = 403
		}
		authz.LogDenial(v.Logger(), authz.Denial{Status: st, Reason: reason, Caller: caller, Path: fullMethod})
		return status.Error(code, "")
	}
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, deny(codes.Unauthenticated, "no peer", nil)
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, deny(codes.Unauthenticated, "no verified client certificate", nil)
	}
	leaf := authz.VerifiedPeer(&info.State)
	if leaf == nil {
		return nil, deny(codes.Unauthenticated, "no verified client certificate", nil)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get(MetadataKey)
	if len(values) != 1 || values[0] == "" {
		return nil, deny(codes.Unauthenticated, string(authz.ErrCodeTokenMissing), nil)
	}
	caller, err := v.Verify(ctx, values[0], leaf)
	if err != nil {
		return nil, deny(codes.Unauthenticated, authz.ReasonOf(err), nil)
	}
	if d := p.DecideMethod(fullMethod, caller); d != authz.Allow {
		return nil, deny(codes.PermissionDenied, d.String(), caller)
	}
	return authz.ContextWithCaller(ctx, caller), nil
}

// recovered turns a handler's panic into INTERNAL with no detail: a handler's bug never takes the
// service down (grpc-go itself does not recover).
func recovered(v *authz.Verifier, fullMethod string, err *error) {
	if r := recover(); r != nil {
		v.Logger().Error("grpc handler panicked", "event", "handler_panic", "path", fullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "")
	}
}

// UnaryServerInterceptor guards every unary method (the health service included, unless exempted):
// a verified TLS client certificate, a valid token bound to it in "x-service-token", and the policy's
// rule for the full method name (p nil: any valid token). Refusals are UNAUTHENTICATED or
// PERMISSION_DENIED with no detail. The handler finds the caller with authz.CallerFromContext.
func UnaryServerInterceptor(v *authz.Verifier, p *authz.CalleePolicy, opts ...Option) grpc.UnaryServerInterceptor {
	o := build(opts)
	return func(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp interface{}, err error) {
		if !o.exempt[info.FullMethod] {
			if ctx, err = authorize(ctx, v, p, info.FullMethod); err != nil {
				return nil, err
			}
		}
		defer recovered(v, info.FullMethod, &err)
		return handler(ctx, req)
	}
}

// StreamServerInterceptor guards every streaming method like UnaryServerInterceptor; the token is
// checked once, when the stream opens.
func StreamServerInterceptor(v *authz.Verifier, p *authz.CalleePolicy, opts ...Option) grpc.StreamServerInterceptor {
	o := build(opts)
	return func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		if !o.exempt[info.FullMethod] {
			ctx, err := authorize(ss.Context(), v, p, info.FullMethod)
			if err != nil {
				return err
			}
			ss = &stream{ServerStream: ss, ctx: ctx}
		}
		defer recovered(v, info.FullMethod, &err)
		return handler(srv, ss)
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }
