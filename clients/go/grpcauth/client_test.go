package grpcauth_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/grpcauth"
	"authz.internal/clients/go/internal/testissuer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// upload is a client-streaming method: its requests cannot be sent again.
var uploads = grpc.ServiceDesc{
	ServiceName: "demo.Uploads",
	HandlerType: (*interface{})(nil),
	Streams: []grpc.StreamDesc{{StreamName: "Upload", ClientStreams: true, Handler: func(_ interface{}, ss grpc.ServerStream) error {
		n := 0
		for {
			if err := ss.RecvMsg(new(stock)); err == io.EOF {
				return ss.SendMsg(&stock{SKU: "received", Caller: callerOf(ss.Context())})
			} else if err != nil {
				return err
			}
			n++
		}
	}}},
}

// revocable is inventory-service over gRPC behind the grpcauth interceptors (the fake's tokens), which
// also refuses every token issued before revoke(): what its verifier does once a revoked key left the
// JWKS. always makes it refuse every call.
type revocable struct {
	addr     string
	pki      *testissuer.PKI
	mu       sync.Mutex
	seen     map[string]bool
	revoked  map[string]bool
	always   atomic.Bool
	calls    atomic.Int64
	peers    sync.Map // thumbprint of the connection's certificate → calls let through
	mismatch atomic.Int64
	served   chan struct{}
}

func (r *revocable) check(ctx context.Context) error {
	r.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	tokens := md.Get(grpcauth.MetadataKey)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, tok := range tokens {
		if r.revoked[tok] || r.always.Load() {
			return status.Error(codes.Unauthenticated, "")
		}
		r.seen[tok] = true
	}
	return nil
}

func (r *revocable) passed(ctx context.Context, err error) {
	if status.Code(err) == codes.Unauthenticated {
		r.mismatch.Add(1)
		return
	}
	if p, ok := peer.FromContext(ctx); ok && err == nil {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			n, _ := r.peers.LoadOrStore(authz.CertificateThumbprint(info.State.PeerCertificates[0]), new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			select {
			case r.served <- struct{}{}:
			default:
			}
		}
	}
}

func (r *revocable) revoke() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for tok := range r.seen {
		r.revoked[tok] = true
	}
}

func serveRevocable(t *testing.T, f *testissuer.Fake) *revocable {
	r := &revocable{pki: testissuer.NewPKI("inventory CA"), seen: map[string]bool{}, revoked: map[string]bool{}, served: make(chan struct{}, 1)}
	_, jwksURL := f.Endpoints()
	v, err := authz.NewVerifier(context.Background(), authz.VerifierConfig{Issuer: testissuer.IssuerName, Audience: "inventory-service", JWKSURL: jwksURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	guardUnary, guardStream := grpcauth.UnaryServerInterceptor(v, nil), grpcauth.StreamServerInterceptor(v, nil)
	s := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(r.pki.ServerTLS(f.CAPool()))),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (interface{}, error) {
			if err := r.check(ctx); err != nil {
				return nil, err
			}
			res, err := guardUnary(ctx, req, info, h)
			r.passed(ctx, err)
			return res, err
		}),
		grpc.ChainStreamInterceptor(func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := r.check(ss.Context()); err != nil {
				return err
			}
			err := guardStream(srv, ss, info, h)
			r.passed(ss.Context(), err)
			return err
		}),
	)
	s.RegisterService(&inventory, struct{}{})
	s.RegisterService(&uploads, struct{}{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	r.addr = l.Addr().String()
	return r
}

// dialWith is grpcauth.Dial of srv with ts (whose CA bundle must trust srv).
func dialWith(t *testing.T, srv *revocable, ts *authz.TokenSource) *grpcauth.Conn {
	conn, err := grpcauth.Dial(ctx(t), srv.addr, ts, "inventory-service", []string{"stock:read"}, grpc.WithDefaultCallOptions(grpc.CallContentSubtype("json")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// staticSource is a TokenSource of the fake with a fixed TLS config trusting srv too.
func staticSource(t *testing.T, f *testissuer.Fake, srv *revocable, clock authz.Clock) *authz.TokenSource {
	cfg := f.ClientTLS("order-service")
	cfg.RootCAs.AppendCertsFromPEM(srv.pki.CAPEM())
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: f.TokenURL, TLS: cfg, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts
}

func getStock(c context.Context, conn grpc.ClientConnInterface) (*stock, error) {
	out := new(stock)
	return out, conn.Invoke(c, "/demo.Inventory/GetStock", &stock{SKU: "sku-1"}, out)
}

func watchAll(c context.Context, conn grpc.ClientConnInterface) (int, error) {
	s, err := conn.NewStream(c, &inventory.Streams[0], "/demo.Inventory/Watch")
	if err != nil {
		return 0, err
	}
	if err := s.SendMsg(&stock{SKU: "sku-1"}); err != nil {
		return 0, err
	}
	if err := s.CloseSend(); err != nil {
		return 0, err
	}
	n := 0
	for {
		if err := s.RecvMsg(new(stock)); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
		n++
	}
}

func upload(c context.Context, conn grpc.ClientConnInterface) error {
	s, err := conn.NewStream(c, &uploads.Streams[0], "/demo.Uploads/Upload")
	if err != nil {
		return err
	}
	for i := 0; i < 2; i++ {
		if err := s.SendMsg(&stock{SKU: "sku-1"}); err != nil {
			break
		}
	}
	_ = s.CloseSend()
	return s.RecvMsg(new(stock))
}

func TestDialRetriesUnauthenticatedOnceAfterARevoke(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	srv := serveRevocable(t, f)
	clock := testissuer.NewFakeClock()
	conn := dialWith(t, srv, staticSource(t, f, srv, clock))
	if out, err := getStock(ctx(t), conn); err != nil || out.Caller != "order-service" {
		t.Fatalf("before the revoke: %+v %v", out, err)
	}
	srv.revoke()
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = getStock(ctx(t), conn)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d after the revoke: %v", i, err)
		}
	}
	if n := f.TokensIssued("inventory-service"); n != 2 {
		t.Fatalf("%d tokens, want one fresh one for the 10 calls", n)
	}

	clock.Advance(authz.DefaultInvalidateCooldown)
	srv.revoke()
	if n, err := watchAll(ctx(t), conn); err != nil || n != 3 {
		t.Fatalf("server streaming after a revoke: %d messages, %v (want it retried, every message once)", n, err)
	}
	clock.Advance(authz.DefaultInvalidateCooldown)
	srv.revoke()
	if err := upload(ctx(t), conn); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("client streaming after a revoke: %v, want its UNAUTHENTICATED (its messages cannot be sent again)", err)
	}
	if err := upload(ctx(t), conn); err != nil {
		t.Fatalf("its token was dropped: the next call has a fresh one; got %v", err)
	}
	if n := f.TokensIssued("inventory-service"); n != 4 {
		t.Fatalf("%d tokens, want 4", n)
	}
}

func TestDialAgainstAServiceThatAlwaysRefusesIsBounded(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	srv := serveRevocable(t, f)
	srv.always.Store(true)
	conn := dialWith(t, srv, staticSource(t, f, srv, nil))
	for i := 0; i < 30; i++ {
		if _, err := getStock(ctx(t), conn); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%v", err)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = getStock(ctx(t), conn)
		}()
	}
	wg.Wait()
	if n := f.TokensIssued("inventory-service"); n != 2 {
		t.Fatalf("60 calls cost %d tokens, want 2", n)
	}
	if n := srv.calls.Load(); n != 61 {
		t.Fatalf("the service saw %d calls, want 61: one retry in all", n)
	}
	if _, err := conn.NewStream(ctx(t), &inventory.Streams[0], "/demo.Inventory/Watch"); err != nil {
		t.Fatal(err)
	}
}

func TestDialFollowsACertificateRenewalUnderTrafficWithoutAFailure(t *testing.T) {
	f := testissuer.StartFake()
	defer f.Close()
	srv := serveRevocable(t, f)
	bundle := append(f.CAPEM(), srv.pki.CAPEM()...)
	certs := []tls.Certificate{f.Issue("order-service"), f.Issue("order-service"), f.Issue("order-service")}
	d := testissuer.NewTLSDir(t, certs[0], bundle)
	files, err := authz.LoadTLSFiles(d.CertFile, d.KeyFile, d.CAFile, authz.WithTLSPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	ts, err := authz.NewTokenSource(authz.TokenSourceConfig{TokenURL: f.TokenURL, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	conn := dialWith(t, srv, ts)
	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if w%2 == 0 {
					_, err = getStock(context.Background(), conn)
				} else {
					_, err = watchAll(context.Background(), conn)
				}
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}(w)
	}
	served := func(c tls.Certificate) int64 {
		if n, found := srv.peers.Load(authz.CertificateThumbprint(c.Leaf)); found {
			return n.(*atomic.Int64).Load()
		}
		return 0
	}
	deadline := time.After(60 * time.Second)
	waitFor := func(c tls.Certificate) {
		for served(c) < 40 {
			if failed.Load() > 20 {
				t.Fatalf("%d ok, %d failed: %v", ok.Load(), failed.Load(), firstFailure.Load())
			}
			select {
			case <-srv.served:
			case <-time.After(time.Second):
			case <-deadline:
				t.Fatalf("%d ok, %d failed: %v", ok.Load(), failed.Load(), firstFailure.Load())
			}
		}
	}
	waitFor(certs[0])
	for _, next := range certs[1:] {
		d.Write(next, bundle)
		if err := files.Reload(); err != nil {
			t.Fatal(err)
		}
		waitFor(next)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed: %v", n, n+ok.Load(), firstFailure.Load())
	}
	if n := srv.mismatch.Load(); n != 0 {
		t.Fatalf("%d tokens came over another certificate than theirs", n)
	}
	t.Logf("%d calls over three certificates, no failure", ok.Load())
}
