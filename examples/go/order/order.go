// Package order is the calling demo service: it gets tokens from authz with its certificate
// (CN=order-service) and calls inventory-service over HTTPS and gRPC with the same certificate.
package order

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Client is order-service's view of inventory-service.
type Client struct {
	tls    *tls.Config
	tokens *authz.TokenSource
}

// New builds a client; tlsConfig holds order-service's certificate and the CAs of authz and of
// inventory-service.
func New(tokenURL string, tlsConfig *tls.Config) (*Client, error) {
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: tokenURL, TLS: tlsConfig})
	if err != nil {
		return nil, err
	}
	return &Client{tls: tlsConfig, tokens: ts}, nil
}

// Tokens is the client's token source.
func (c *Client) Tokens() *authz.TokenSource { return c.tokens }

// Close closes the token source.
func (c *Client) Close() { c.tokens.Close() }

// HTTP calls inventory-service with a token for scope (none when scope is "-"), and returns
// "<status> <body>".
func (c *Client) HTTP(ctx context.Context, method, url, scope string) (string, error) {
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: c.tls}
	if scope != "-" {
		rt = authz.NewTransport(rt, c.tokens, "inventory-service", scope)
	}
	return send(ctx, rt, method, url, "")
}

// HTTPWithToken sends a token it did not get itself (the replay in the demo).
func (c *Client) HTTPWithToken(ctx context.Context, method, url, token string) (string, error) {
	return send(ctx, &http.Transport{TLSClientConfig: c.tls}, method, url, token)
}

func send(ctx context.Context, rt http.RoundTripper, method, url, token string) (string, error) {
	client := &http.Client{Transport: rt}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set(authz.ServiceTokenHeader, token)
	}
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Sprintf("%d %q", res.StatusCode, body), nil // a denial's body: empty
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s", res.StatusCode, body)), nil
}

// GRPC calls /demo.Inventory/<method> with a token for scope (none when scope is "-") and returns
// "OK <reply>" or the status code's name.
func (c *Client) GRPC(ctx context.Context, address, method, scope string) (string, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(c.tls))}
	if scope != "-" {
		opts = append(opts, grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(c.tokens, "inventory-service", scope)))
	}
	conn, err := grpc.DialContext(ctx, address, opts...)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	var reply map[string]interface{}
	err = conn.Invoke(ctx, "/demo.Inventory/"+method, map[string]string{"sku": "sku-1"}, &reply, grpc.CallContentSubtype("json"))
	if err != nil {
		return status.Code(err).String(), nil
	}
	text, _ := json.Marshal(reply)
	return "OK " + string(text), nil
}
