// Package snippets holds the Go code of the README's "Go services" section, compiled and vetted by
// npm run test:go (which also checks that the README shows it verbatim).
package snippets

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func callInventory(ctx context.Context) error {
	// This service's certificate: its Subject CN (order-service) is who it is, at authz and beyond.
	cert, err := tls.LoadX509KeyPair("order-service.pem", "order-service-key.pem")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile("ca.pem") // the CA(s) of authz's and the callees' server certificates
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}

	// One per process: one mTLS client to authz, one cached token per (audience, scopes), refreshed
	// in the background before it expires.
	tokens, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: "https://authz.internal:8443/token", TLS: tlsConfig})
	if err != nil {
		return err
	}
	defer tokens.Close()

	// HTTP: X-Service-Token on every request, over mTLS with the same certificate (the token is bound to it).
	client := &http.Client{Transport: authz.NewTransport(&http.Transport{TLSClientConfig: tlsConfig}, tokens, "inventory-service", "stock:read")}
	res, err := client.Get("https://inventory.internal:8443/stock/sku-1") // 200, or a bare 401/403
	if err != nil {
		return err
	}
	res.Body.Close()

	// gRPC: the token in the x-service-token metadata of every call, on a TLS channel with the same certificate.
	conn, err := grpc.DialContext(ctx, "inventory.internal:50051",
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(tokens, "inventory-service", "stock:read")))
	if err != nil {
		return err
	}
	defer conn.Close()
	return nil // inventorypb.NewInventoryClient(conn).GetStock(ctx, …) as usual
}
