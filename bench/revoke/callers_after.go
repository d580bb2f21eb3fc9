//go:build !before

package main

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"google.golang.org/grpc"
)

// callers with the kit's helpers: NewTransport (the token source's certificate, one retry on a 401) and
// grpcauth.Dial (one retry on UNAUTHENTICATED). HTTP asks for stock:read, gRPC for every granted scope.
func callers(ts *authz.TokenSource, _ *tls.Config, url, addr string) (get func() (int, error), call func() error) {
	client := &http.Client{Transport: authz.NewTransport(nil, ts, "inventory-service", "stock:read"), Timeout: 10 * time.Second}
	conn, err := grpcauth.Dial(context.Background(), addr, ts, "inventory-service", nil, grpc.WithDefaultCallOptions(grpc.CallContentSubtype("json")))
	if err != nil {
		log.Fatal(err)
	}
	get = func() (int, error) {
		res, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	call = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return conn.Invoke(ctx, "/demo.Inventory/GetStock", &stock{SKU: "sku-1"}, new(stock))
	}
	return get, call
}
