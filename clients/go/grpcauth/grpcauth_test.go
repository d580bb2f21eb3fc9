package grpcauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"authz.internal/clients/go/internal/testissuer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// iss is the authz of the tests: a Go fake (no node), or the real issuer with -tags live (live_test.go).
var iss testissuer.Authority

// fake is the fake, for the tests that make it misbehave.
var fake *testissuer.Fake

func TestMain(m *testing.M) {
	encoding.RegisterCodec(jsonCodec{})
	fake = testissuer.StartFake()
	iss = fake
	stop, err := startLive()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot start authz:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	fake.Close()
	os.Exit(code)
}

// jsonCodec keeps the test service free of generated protobuf code (the health service is protobuf).
type jsonCodec struct{}

func (jsonCodec) Marshal(v interface{}) ([]byte, error)   { return json.Marshal(v) }
func (jsonCodec) Unmarshal(b []byte, v interface{}) error { return json.Unmarshal(b, v) }
func (jsonCodec) Name() string                            { return "json" }

type stock struct {
	SKU    string `json:"sku"`
	Caller string `json:"caller,omitempty"`
}

func callerOf(ctx context.Context) string {
	c, ok := authz.CallerFromContext(ctx)
	if !ok {
		return "(none)"
	}
	return c.Service
}

func unary(name string, f func(context.Context, *stock) (*stock, error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, ic grpc.UnaryServerInterceptor) (interface{}, error) {
		in := new(stock)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req interface{}) (interface{}, error) { return f(ctx, req.(*stock)) }
		if ic == nil {
			return h(ctx, in)
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/demo.Inventory/" + name}, h)
	}}
}

var inventory = grpc.ServiceDesc{
	ServiceName: "demo.Inventory",
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		unary("GetStock", func(ctx context.Context, in *stock) (*stock, error) {
			return &stock{SKU: in.SKU, Caller: callerOf(ctx)}, nil
		}),
		unary("Deduct", func(ctx context.Context, in *stock) (*stock, error) {
			return &stock{SKU: in.SKU, Caller: callerOf(ctx)}, nil
		}),
		unary("Panic", func(context.Context, *stock) (*stock, error) { panic("handler bug") }),
	},
	Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ interface{}, ss grpc.ServerStream) error {
		in := new(stock)
		if err := ss.RecvMsg(in); err != nil {
			return err
		}
		for i := 0; i < 3; i++ {
			if err := ss.SendMsg(&stock{SKU: fmt.Sprintf("%s#%d", in.SKU, i), Caller: callerOf(ss.Context())}); err != nil {
				return err
			}
		}
		return nil
	}}},
}

const policy = `{"routes": {
  "/demo.Inventory/GetStock": {"scopes": ["stock:read"]},
  "/demo.Inventory/Deduct":   {"scopes": ["stock:deduct"], "callers": ["order-service"]},
  "/demo.Inventory/Watch":    {"scopes": ["stock:read"]},
  "/demo.Inventory/Panic":    {"scopes": []}
}}`

type fixture struct {
	addr     string
	pool     *testissuer.PKI
	logs     *strings.Builder
	logsMu   *sync.Mutex
	counters *authz.CalleeCounters
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func serve(t *testing.T, opts ...grpcauth.Option) *fixture {
	t.Helper()
	f := &fixture{pool: testissuer.NewPKI("inventory CA"), logs: &strings.Builder{}, logsMu: &sync.Mutex{}, counters: &authz.CalleeCounters{}}
	_, jwksURL := iss.Endpoints()
	v, err := authz.NewVerifier(context.Background(), authz.VerifierConfig{
		Issuer: testissuer.IssuerName, Audience: "inventory-service", JWKSURL: jwksURL,
		Logger: slog.New(slog.NewJSONHandler(lockedWriter{f.logsMu, f.logs}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	opts = append([]grpcauth.Option{authz.OnDecision(f.counters.Observe)}, opts...) // a test's own hook wins
	p, err := authz.ParseCalleePolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(f.pool.ServerTLS(iss.CAPool()))),
		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(v, p, opts...)),
		grpc.ChainStreamInterceptor(grpcauth.StreamServerInterceptor(v, p, opts...)),
	)
	s.RegisterService(&inventory, struct{}{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	f.addr = l.Addr().String()
	return f
}

func (f *fixture) log() string {
	f.logsMu.Lock()
	defer f.logsMu.Unlock()
	return f.logs.String()
}

func (f *fixture) dial(t *testing.T, caller string, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cfg := iss.ClientTLS(caller)
	cfg.RootCAs = f.pool.Pool
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, extra...)
	conn, err := grpc.Dial(f.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func tokens(t *testing.T, caller string) *authz.TokenSource { return tokensFrom(t, iss, caller) }

func tokensFrom(t *testing.T, is testissuer.Authority, caller string) *authz.TokenSource {
	tokenURL, _ := is.Endpoints()
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: tokenURL, TLS: is.ClientTLS(caller)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func call(t *testing.T, conn *grpc.ClientConn, method string, c context.Context) (*stock, error) {
	out := new(stock)
	err := conn.Invoke(c, "/demo.Inventory/"+method, &stock{SKU: "sku-1"}, out, grpc.CallContentSubtype("json"))
	return out, err
}

func wantStatus(t *testing.T, err error, code codes.Code) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("want %v, got %v", code, err)
	}
	if code == codes.Unauthenticated || code == codes.PermissionDenied || code == codes.Internal {
		if st.Message() != "" || len(st.Details()) != 0 {
			t.Fatalf("a server denial carries no detail, got %q", st.Message())
		}
	}
}

func TestInterceptorsGuardUnaryAndStreamCallsOverMTLS(t *testing.T) {
	f := serve(t)
	order := tokens(t, "order-service")
	read := f.dial(t, "order-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(order, "inventory-service", "stock:read")))
	deduct := f.dial(t, "order-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(order, "inventory-service", "stock:deduct")))
	bare := f.dial(t, "order-service")

	out, err := call(t, read, "GetStock", ctx(t))
	if err != nil || out.Caller != "order-service" {
		t.Fatalf("GetStock with stock:read: %+v %v", out, err)
	}
	if out, err = call(t, deduct, "Deduct", ctx(t)); err != nil || out.Caller != "order-service" {
		t.Fatalf("Deduct with stock:deduct: %+v %v", out, err)
	}
	_, err = call(t, read, "Deduct", ctx(t))
	wantStatus(t, err, codes.PermissionDenied)
	_, err = call(t, bare, "GetStock", ctx(t))
	wantStatus(t, err, codes.Unauthenticated)

	// Server streaming: the token is checked when the stream opens; the handler sees the caller.
	stream := func(conn *grpc.ClientConn) ([]stock, error) {
		s, err := conn.NewStream(ctx(t), &inventory.Streams[0], "/demo.Inventory/Watch", grpc.CallContentSubtype("json"))
		if err != nil {
			return nil, err
		}
		if err := s.SendMsg(&stock{SKU: "sku-1"}); err != nil {
			return nil, err
		}
		_ = s.CloseSend()
		var got []stock
		for {
			var m stock
			if err := s.RecvMsg(&m); err != nil {
				if err.Error() == "EOF" {
					return got, nil
				}
				return got, err
			}
			got = append(got, m)
		}
	}
	got, err := stream(read)
	if err != nil || len(got) != 3 || got[0].Caller != "order-service" {
		t.Fatalf("Watch with stock:read: %+v %v", got, err)
	}
	_, err = stream(bare)
	wantStatus(t, err, codes.Unauthenticated)
	_, err = stream(deduct)
	wantStatus(t, err, codes.PermissionDenied)

	if log := f.log(); !strings.Contains(log, `"path":"/demo.Inventory/Deduct"`) || !strings.Contains(log, `"sub":"order-service"`) {
		t.Fatalf("denials should be logged with sub and the method:\n%s", log)
	}
}

func TestInterceptorsRefuseATokenReplayedOverAnotherCertificate(t *testing.T) {
	f := serve(t)
	token, err := iss.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	c := metadata.AppendToOutgoingContext(ctx(t), grpcauth.MetadataKey, token)
	if _, err := call(t, f.dial(t, "order-service"), "GetStock", c); err != nil {
		t.Fatalf("over its own certificate: %v", err)
	}
	_, err = call(t, f.dial(t, "payment-service"), "GetStock", c)
	wantStatus(t, err, codes.Unauthenticated)
	two := metadata.AppendToOutgoingContext(c, grpcauth.MetadataKey, token)
	_, err = call(t, f.dial(t, "order-service"), "GetStock", two)
	wantStatus(t, err, codes.Unauthenticated)
	if strings.Contains(f.log(), token) {
		t.Fatal("a token reached the log")
	}
	// One line per denial, with the shared reason; the replay says whose token it was (before:
	// reason ERR_BINDING_MISMATCH without sub or aud).
	var reasons []string
	for _, line := range strings.Split(strings.TrimSpace(f.log()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["event"] != "service_call_denied" {
			continue
		}
		reasons = append(reasons, fmt.Sprint(m["reason"]))
		if m["reason"] == "ERR_BINDING_MISMATCH" && (m["sub"] != "order-service" || m["aud"] != "inventory-service") {
			t.Fatalf("a replay is logged with sub and aud: %v", m)
		}
	}
	if strings.Join(reasons, " ") != "ERR_BINDING_MISMATCH ERR_TOKEN_MISSING" {
		t.Fatalf("denial reasons %v, want the replay's and the two tokens'", reasons)
	}
	if d := f.counters.Denied(); f.counters.Verified() != 1 || d["ERR_BINDING_MISMATCH"] != 1 || d["ERR_TOKEN_MISSING"] != 1 {
		t.Fatalf("counters: %d verified, denied %v", f.counters.Verified(), d)
	}
}

func TestInterceptorsGuardTheHealthServiceUnlessExempted(t *testing.T) {
	check := func(conn *grpc.ClientConn) error {
		_, err := healthpb.NewHealthClient(conn).Check(ctx(t), &healthpb.HealthCheckRequest{})
		return err
	}
	guarded := serve(t)
	wantStatus(t, check(guarded.dial(t, "order-service")), codes.Unauthenticated)
	order := tokens(t, "order-service")
	withToken := guarded.dial(t, "order-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(order, "inventory-service")))
	wantStatus(t, check(withToken), codes.PermissionDenied) // no rule names it

	exempt := serve(t, grpcauth.Exempt("/grpc.health.v1.Health/Check"))
	if err := check(exempt.dial(t, "order-service")); err != nil {
		t.Fatalf("an exempted health check: %v", err)
	}
	_, err := call(t, exempt.dial(t, "order-service"), "GetStock", ctx(t))
	wantStatus(t, err, codes.Unauthenticated) // only what is named is exempt
}

func TestAHandlerPanicIsInternalAndTheServerKeepsServing(t *testing.T) {
	f := serve(t)
	conn := f.dial(t, "order-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(tokens(t, "order-service"), "inventory-service", "stock:read")))
	_, err := call(t, conn, "Panic", ctx(t))
	wantStatus(t, err, codes.Internal)
	if _, err := call(t, conn, "GetStock", ctx(t)); err != nil {
		t.Fatalf("after a handler panic: %v", err)
	}
}

func TestPerRPCCredentialsNeedTLSAndReportRefusals(t *testing.T) {
	f := serve(t)
	order := tokens(t, "order-service")
	creds := grpcauth.PerRPCCredentials(order, "inventory-service", "stock:read")
	if !creds.RequireTransportSecurity() {
		t.Fatal("the credentials must require transport security")
	}
	if conn, err := grpc.Dial(f.addr, grpc.WithInsecure(), grpc.WithPerRPCCredentials(creds)); err == nil || !strings.Contains(err.Error(), "transport level security") {
		if conn != nil {
			conn.Close()
		}
		t.Fatalf("a token must never be sent without TLS: dialing without it should fail, got %v", err)
	}
	// A token authz refuses (payment-service holds no stock:deduct): the call fails on the client.
	refused := f.dial(t, "payment-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(tokens(t, "payment-service"), "inventory-service", "stock:deduct")))
	_, err := call(t, refused, "GetStock", ctx(t))
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "invalid_scope") {
		t.Fatalf("want UNAUTHENTICATED naming invalid_scope, got %v", err)
	}
}

// authz answering 429 slow_down or 503 is "cannot get a token now": UNAVAILABLE, as grpc-go's own
// token credentials answer (before: UNAUTHENTICATED, as for a refusal). So is authz unreachable.
func TestPerRPCCredentialsReportAnOverloadedOrUnreachableAuthzAsUnavailable(t *testing.T) {
	f := serve(t)
	busy := testissuer.StartFake()
	defer busy.Close()
	for _, mode := range []string{"slow_down", "unavailable", "reset"} {
		t.Run(mode, func(t *testing.T) {
			busy.Mode.Store(mode)
			conn := f.dial(t, "order-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(tokensFrom(t, busy, "order-service"), "inventory-service", "stock:read")))
			_, err := call(t, conn, "GetStock", ctx(t))
			if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
				t.Fatalf("want UNAVAILABLE, got %v", err)
			}
		})
	}
}

// The API as issues 13 and 23 name it (the server interceptors also take options, e.g. Exempt).
var (
	_ func(authz.TokenProvider, string, ...string) credentials.PerRPCCredentials = grpcauth.PerRPCCredentials
	_ grpc.UnaryServerInterceptor                                                = grpcauth.UnaryServerInterceptor(nil, nil)
	_ grpc.StreamServerInterceptor                                               = grpcauth.StreamServerInterceptor(nil, nil)
)

// A counter hook that panics changes no answer and takes no server down (grpc-go does not recover an
// interceptor's panic; the TypeScript SDK ignores a throwing onDecision too).
func TestAPanickingOnDecisionHookChangesNothing(t *testing.T) {
	f := serve(t, authz.OnDecision(func(authz.CallOutcome) { panic("a counter's bug") }))
	conn := f.dial(t, "order-service", grpc.WithPerRPCCredentials(grpcauth.PerRPCCredentials(tokens(t, "order-service"), "inventory-service", "stock:read")))
	if _, err := call(t, conn, "GetStock", ctx(t)); err != nil {
		t.Fatalf("an allowed call: %v", err)
	}
	_, err := call(t, conn, "Deduct", ctx(t))
	wantStatus(t, err, codes.PermissionDenied)
	_, err = call(t, f.dial(t, "order-service"), "GetStock", ctx(t))
	wantStatus(t, err, codes.Unauthenticated)
}
