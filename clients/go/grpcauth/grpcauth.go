// Package grpcauth carries authz tokens over gRPC: per-RPC credentials for callers (metadata
// "x-service-token", TLS required) and unary and stream server interceptors for receivers, with
// authz.Guard's pipeline and the policy rule chosen by the full method name.
package grpcauth

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
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
// requires transport security, and refuses to attach the token to a connection that is not TLS. When
// no token can be had, the call fails on the client as grpc-go's own token credentials fail:
// UNAVAILABLE when it may pass by itself (authz unreachable, slow_down, a 5xx: authz.Retryable),
// UNAUTHENTICATED when authz refused (the message names the OAuth error).
func PerRPCCredentials(ts authz.TokenProvider, audience string, scopes ...string) credentials.PerRPCCredentials {
	return &perRPC{ts: ts, audience: audience, scopes: append([]string(nil), scopes...)}
}

type perRPC struct {
	ts       authz.TokenProvider
	audience string
	scopes   []string
}

func (c *perRPC) RequireTransportSecurity() bool { return true }

func (c *perRPC) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if err := requireTLS(ctx); err != nil {
		return nil, err
	}
	token, err := c.ts.Token(ctx, c.audience, c.scopes...)
	return metadataOf(ctx, token, err)
}

// requireTLS refuses to attach a token to a connection that is not TLS.
func requireTLS(ctx context.Context) error {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, authz.ErrInsecureTransport.Error())
	}
	if _, isTLS := ri.AuthInfo.(credentials.TLSInfo); !isTLS {
		return status.Error(codes.Unauthenticated, authz.ErrInsecureTransport.Error())
	}
	return nil
}

// metadataOf is the metadata of a token, or the status a call fails with when no token could be had.
func metadataOf(ctx context.Context, token string, err error) (map[string]string, error) {
	switch {
	case err == nil:
		return map[string]string{MetadataKey: token}, nil
	case ctx.Err() != nil: // the call's own deadline or cancellation
		return nil, status.FromContextError(ctx.Err()).Err()
	case authz.Retryable(err):
		return nil, status.Error(codes.Unavailable, err.Error())
	default:
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
}

// Option configures the server interceptors: an authz.GuardOption (Exempt, authz.OnDecision).
type Option = authz.GuardOption

// Exempt lets calls of these full method names through without a token (for example
// "/grpc.health.v1.Health/Check" for a load balancer's probe). Nothing is exempt unless named here.
func Exempt(fullMethods ...string) Option { return authz.Exempt(fullMethods...) }

// authorize is what both interceptors do before the handler runs: authz.Guard's pipeline.
func authorize(ctx context.Context, g *authz.Guard, p *authz.CalleePolicy, fullMethod string) (context.Context, error) {
	var leaf *x509.Certificate
	if pr, ok := peer.FromContext(ctx); ok {
		if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
			leaf = authz.VerifiedPeer(&info.State)
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	caller, denial := g.Check(ctx, authz.Request{
		Peer: leaf, Tokens: md.Get(MetadataKey), Path: fullMethod,
		Decide: func(c *authz.Caller) authz.Decision { return p.DecideMethod(fullMethod, c) },
	})
	if denial != nil {
		if denial.Status == http.StatusForbidden {
			return nil, status.Error(codes.PermissionDenied, "")
		}
		return nil, status.Error(codes.Unauthenticated, "")
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
	g := authz.NewGuard(v, opts...)
	return func(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp interface{}, err error) {
		if !g.Exempted(info.FullMethod) {
			if ctx, err = authorize(ctx, g, p, info.FullMethod); err != nil {
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
	g := authz.NewGuard(v, opts...)
	return func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		if !g.Exempted(info.FullMethod) {
			ctx, err := authorize(ss.Context(), g, p, info.FullMethod)
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
