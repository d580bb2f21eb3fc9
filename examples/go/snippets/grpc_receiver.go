package snippets

import (
	"crypto/tls"
	"net"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func serveGRPC(verifier *authz.Verifier, policy *authz.CalleePolicy, tlsConfig *tls.Config) error {
	tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
	exempt := grpcauth.Exempt("/grpc.health.v1.Health/Check") // nothing is open unless named
	s := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(verifier, policy, exempt)),
		grpc.ChainStreamInterceptor(grpcauth.StreamServerInterceptor(verifier, policy, exempt)),
	)
	healthpb.RegisterHealthServer(s, health.NewServer())
	// inventorypb.RegisterInventoryServer(s, impl): rules "/demo.Inventory/GetStock", …; in a handler,
	// caller, _ := authz.CallerFromContext(ctx) is the verified caller.
	l, err := net.Listen("tcp", ":50051")
	if err != nil {
		return err
	}
	return s.Serve(l)
}
