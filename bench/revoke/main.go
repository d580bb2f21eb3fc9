// Command revoke is the Go half of bench/revoke.mjs: inventory-service guarded by the Go kit (net/http
// and gRPC), and Go callers calling it over HTTP and gRPC at a steady rate until stdin closes; then it
// prints what the callers saw, one JSON object. The orchestrator revokes authz's signing key meanwhile.
// callers_after.go builds the callers with the kit's helpers (NewTransport, grpcauth.Dial);
// callers_before.go (-tags before) with what the kit offered before them (a base transport,
// PerRPCCredentials), so that the same program measures an older kit.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

type jsonCodec struct{}

func (jsonCodec) Marshal(v interface{}) ([]byte, error)   { return json.Marshal(v) }
func (jsonCodec) Unmarshal(b []byte, v interface{}) error { return json.Unmarshal(b, v) }
func (jsonCodec) Name() string                            { return "json" }

type stock struct {
	SKU string `json:"sku"`
}

var inventory = grpc.ServiceDesc{
	ServiceName: "demo.Inventory",
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{{MethodName: "GetStock", Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, ic grpc.UnaryServerInterceptor) (interface{}, error) {
		in := new(stock)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req interface{}) (interface{}, error) { return req, nil }
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/demo.Inventory/GetStock"}, h)
	}}},
}

// lane counts what the callers of one protocol saw.
type lane struct {
	Requests, OK, Unauthenticated, OtherErrors, TokenRequests atomic.Int64
	first, last                                               atomic.Int64 // unix ms of the first and last caller-visible 401
	mu                                                        sync.Mutex
	errors                                                    map[string]int
}

func (l *lane) refused() {
	now := time.Now().UnixMilli()
	l.Unauthenticated.Add(1)
	l.first.CompareAndSwap(0, now)
	l.last.Store(now)
}

func (l *lane) failed(err string) {
	l.OtherErrors.Add(1)
	l.mu.Lock()
	l.errors[err]++
	l.mu.Unlock()
}

func (l *lane) report(callee *authz.CalleeCounters) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return map[string]any{
		"requests": l.Requests.Load(), "ok": l.OK.Load(), "unauthenticated": l.Unauthenticated.Load(), "other_errors": l.OtherErrors.Load(),
		"errors": l.errors, "first_401_ms": l.first.Load(), "last_401_ms": l.last.Load(), "token_requests": l.TokenRequests.Load(),
		"callee_refused": callee.Denied()["ERR_TOKEN_UNKNOWN_KID"] + callee.Denied()["ERR_TOKEN_SIGNATURE"],
	}
}

type config struct {
	tokenURL, jwksURL, ca string
	certs, keys           []string
	rate                  float64
}

func main() {
	var cfg config
	var certs, keys string
	flag.StringVar(&cfg.tokenURL, "token-url", "", "authz's /token")
	flag.StringVar(&cfg.jwksURL, "jwks-url", "", "authz's JWKS")
	flag.StringVar(&cfg.ca, "ca", "", "the dev CA (authz's and the callee's server certificates, the callers')")
	flag.StringVar(&certs, "certs", "", "the callers' certificates, comma-separated")
	flag.StringVar(&keys, "keys", "", "their keys, comma-separated")
	serverCert := flag.String("server-cert", "", "the callee's certificate")
	serverKey := flag.String("server-key", "", "its key")
	flag.Float64Var(&cfg.rate, "rate", 5, "requests per second per caller and protocol")
	flag.Parse()
	cfg.certs, cfg.keys = strings.Split(certs, ","), strings.Split(keys, ",")
	encoding.RegisterCodec(jsonCodec{})

	caPEM, err := os.ReadFile(cfg.ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serverPair, err := tls.LoadX509KeyPair(*serverCert, *serverKey)
	if err != nil {
		log.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}

	// The callee: one verifier, the net/http and gRPC guards, counters of what they refused.
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	v, err := authz.NewVerifier(context.Background(), authz.VerifierConfig{Issuer: "https://authz.internal", Audience: "inventory-service", JWKSURL: cfg.jwksURL, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	httpCounters, grpcCounters := &authz.CalleeCounters{}, &authz.CalleeCounters{}
	httpL, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/stock/", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	go func() {
		_ = (&http.Server{Handler: authz.Middleware(v, nil, authz.OnDecision(httpCounters.Observe))(mux), ErrorLog: log.New(io.Discard, "", 0)}).Serve(httpL)
	}()
	grpcL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(v, nil, authz.OnDecision(grpcCounters.Observe))))
	s.RegisterService(&inventory, struct{}{})
	go func() { _ = s.Serve(grpcL) }()

	lanes := map[string]*lane{"http": {errors: map[string]int{}}, "grpc": {errors: map[string]int{}}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	httpURL := "https://" + httpL.Addr().String() + "/stock/sku-1"
	for i := range cfg.certs {
		pair, err := tls.LoadX509KeyPair(cfg.certs[i], cfg.keys[i])
		if err != nil {
			log.Fatal(err)
		}
		tlsCfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
		ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: cfg.tokenURL, TLS: tlsCfg, OnRefresh: func(ev authz.RefreshEvent) {
			lanes[laneOf(ev)].TokenRequests.Add(1)
		}})
		if err != nil {
			log.Fatal(err)
		}
		get, call := callers(ts, tlsCfg, httpURL, grpcL.Addr().String())
		wg.Add(2)
		go loop(&wg, stop, cfg.rate, func() {
			l := lanes["http"]
			l.Requests.Add(1)
			switch code, err := get(); {
			case err != nil:
				l.failed(err.Error())
			case code == 200:
				l.OK.Add(1)
			case code == 401:
				l.refused()
			default:
				l.failed(fmt.Sprint(code))
			}
		})
		go loop(&wg, stop, cfg.rate, func() {
			l := lanes["grpc"]
			l.Requests.Add(1)
			switch err := call(); status.Code(err) {
			case codes.OK:
				l.OK.Add(1)
			case codes.Unauthenticated:
				l.refused()
			default:
				l.failed(status.Code(err).String())
			}
		})
	}
	fmt.Fprintln(os.Stderr, "revoke-go: running")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the orchestrator closes stdin
	close(stop)
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"http": lanes["http"].report(httpCounters), "grpc": lanes["grpc"].report(grpcCounters)})
}

// laneOf is the lane of a token request: the HTTP callers ask for stock:read, the gRPC callers for
// every granted scope (no scope), so that each protocol has tokens of its own, counted apart.
func laneOf(ev authz.RefreshEvent) string {
	if len(ev.Scopes) == 0 {
		return "grpc"
	}
	return "http"
}

// loop calls f rate times per second (each caller steady, started at a random phase) until stop.
func loop(wg *sync.WaitGroup, stop chan struct{}, rate float64, f func()) {
	defer wg.Done()
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}
