//go:build before

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
	"google.golang.org/grpc/credentials"
)

// callers as the kit's README wrote them before its retrying helpers: NewTransport over a base
// transport with the certificate, and grpc.Dial with PerRPCCredentials. It builds against older kits.
func callers(ts *authz.TokenSource, tlsCfg *tls.Config, url, addr string) (get func() (int, error), call func() error) {
	client := &http.Client{Transport: authz.NewTransport(&http.Transport{TLSClientConfig: tlsCfg}, ts, "inventory-service", "stock:read"), Timeout: 10 * time.Second}
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(ts, "inventory-service")),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype("json")))
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
