// Package snippets holds the Go code of the README's "Go services" section, compiled and vetted by
// npm run test:go (which also checks that the README shows it verbatim).
package snippets

import (
	"context"
	"net/http"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
)

func callInventory(ctx context.Context) error {
	// This service's certificate (its Subject CN, order-service, or its SPIFFE ID is who it is, at authz and
	// beyond), its key, and the CA(s) of authz's and the callees' server certificates — as files, followed
	// when they are renewed on disk (cert-manager, spiffe-helper, a Secret volume).
	files, err := authz.LoadTLSFiles("tls.crt", "tls.key", "ca.crt")
	if err != nil {
		return err
	}
	defer files.Close()

	// One per process: one mTLS client to authz, one cached token per (audience, scopes), refreshed
	// in the background before it expires.
	tokens, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: "https://authz.internal:8443/token", Files: files})
	if err != nil {
		return err
	}
	defer tokens.Close()

	// HTTP: X-Service-Token on every request, over mTLS with the certificate the token is bound to; a 401
	// (a revoked signing key) is retried once with a fresh token.
	client := &http.Client{Transport: authz.NewTransport(nil, tokens, "inventory-service", "stock:read")}
	res, err := client.Get("https://inventory.internal:8443/stock/sku-1") // 200, or a bare 401/403
	if err != nil {
		return err
	}
	res.Body.Close()

	// gRPC: the token in the x-service-token metadata of every call, on a TLS connection with the same
	// certificate; UNAUTHENTICATED is retried once with a fresh token.
	conn, err := grpcauth.Dial(ctx, "inventory.internal:50051", tokens, "inventory-service", []string{"stock:read"})
	if err != nil {
		return err
	}
	defer conn.Close()
	return nil // inventorypb.NewInventoryClient(conn).GetStock(ctx, …) as usual
}
