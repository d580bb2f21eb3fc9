package grpcauth

import (
	"context"
	"sync"

	authz "authz.internal/clients/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Conn is a gRPC client connection to one callee whose every call carries a token for one audience
// from a TokenSource, over TLS with the TokenSource's certificate — the one the token is bound to. It
// is a grpc.ClientConnInterface: generated clients take it (inventorypb.NewInventoryClient(conn)).
//
// Each set of TLS material has a grpc.ClientConn of its own: when the TokenSource's Files are renewed,
// new calls go over a new connection with the new certificate and tokens bound to it; the old
// connection finishes its calls and is closed. A unary or server-streaming call the callee refuses
// UNAUTHENTICATED before any answer is retried once with a fresh token (the refused token is dropped
// with InvalidateToken, at most once per key per cooldown; the call is sent again only if the new token
// differs): callers recover from a `keys revoke` by themselves. Client-streaming and bidi calls are not
// retried (their request stream cannot be sent again; their token is dropped all the same), and
// PERMISSION_DENIED never is. Without a token a call fails as PerRPCCredentials says. Safe for
// concurrent use; Close closes every connection.
type Conn struct {
	target   string
	ts       *authz.TokenSource
	audience string
	scopes   []string
	opts     []grpc.DialOption

	mu      sync.Mutex
	current *connGen
	retired []*connGen
	closed  bool
}

// connGen is the connection of one set of TLS material.
type connGen struct {
	material *authz.TLSMaterial
	cc       *grpc.ClientConn
	active   int // calls started and not ended
	retired  bool
}

// Dial connects to target as grpc.DialContext does (opts are its options; give no transport or
// per-RPC credentials: Dial sets them), with ts's certificate, and a token for audience and scopes on
// every call.
func Dial(ctx context.Context, target string, ts *authz.TokenSource, audience string, scopes []string, opts ...grpc.DialOption) (*Conn, error) {
	c := &Conn{target: target, ts: ts, audience: audience, scopes: append([]string(nil), scopes...), opts: opts}
	g, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	c.release(g)
	return c, nil
}

// Close closes every connection. Calls in flight end with CANCELED.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	for _, g := range append(c.retired, c.current) {
		if g != nil {
			_ = g.cc.Close()
		}
	}
	return nil
}

// acquire is the connection of the material in force, for one more call.
func (c *Conn) acquire(ctx context.Context) (*connGen, error) {
	m := c.ts.Material()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, status.Error(codes.Canceled, "grpcauth: connection closed")
	}
	if c.current == nil || c.current.material != m {
		creds := &materialCredentials{ts: c.ts, material: m, audience: c.audience, scopes: c.scopes}
		opts := append(append([]grpc.DialOption(nil), c.opts...), grpc.WithTransportCredentials(credentials.NewTLS(m.ClientConfig())), grpc.WithPerRPCCredentials(creds))
		cc, err := grpc.DialContext(ctx, c.target, opts...)
		if err != nil {
			return nil, err
		}
		if old := c.current; old != nil {
			old.retired = true
			if old.active == 0 {
				_ = old.cc.Close()
			} else {
				c.retired = append(c.retired, old)
			}
		}
		c.current = &connGen{material: m, cc: cc}
	}
	c.current.active++
	return c.current, nil
}

// release ends one call of g; a retired connection with no call left is closed.
func (c *Conn) release(g *connGen) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g.active--
	if g.retired && g.active == 0 && !c.closed {
		_ = g.cc.Close()
		for i, r := range c.retired {
			if r == g {
				c.retired = append(c.retired[:i], c.retired[i+1:]...)
				break
			}
		}
	}
}

// sentToken records the token a call's credentials attached (the per-RPC credentials see the call's
// context).
type sentToken struct {
	mu    sync.Mutex
	token string
}

type sentTokenKey struct{}

func (s *sentToken) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// materialCredentials are the per-RPC credentials of one connection: tokens bound to its certificate.
type materialCredentials struct {
	ts       *authz.TokenSource
	material *authz.TLSMaterial
	audience string
	scopes   []string
}

func (c *materialCredentials) RequireTransportSecurity() bool { return true }

func (c *materialCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if err := requireTLS(ctx); err != nil {
		return nil, err
	}
	token, err := c.ts.TokenFor(ctx, c.material, c.audience, c.scopes...)
	if err == nil {
		if sent, ok := ctx.Value(sentTokenKey{}).(*sentToken); ok {
			sent.mu.Lock()
			sent.token = token
			sent.mu.Unlock()
		}
	}
	return metadataOf(ctx, token, err)
}

// refused tells whether err is the callee refusing the token sent (UNAUTHENTICATED after a token was
// attached), and if so drops that token; it reports whether the call may be sent again with another.
func (c *Conn) refused(ctx context.Context, err error, sent string) bool {
	if status.Code(err) != codes.Unauthenticated || sent == "" {
		return false
	}
	if !c.ts.InvalidateToken(sent, c.audience, c.scopes...) {
		return false
	}
	fresh, ferr := c.ts.TokenFor(ctx, c.ts.Material(), c.audience, c.scopes...)
	return ferr == nil && fresh != sent
}

// Invoke performs a unary call, retried once with a fresh token when the callee refuses the token.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply interface{}, opts ...grpc.CallOption) error {
	for attempt := 0; ; attempt++ {
		g, err := c.acquire(ctx)
		if err != nil {
			return err
		}
		sent := &sentToken{}
		err = g.cc.Invoke(context.WithValue(ctx, sentTokenKey{}, sent), method, args, reply, opts...)
		c.release(g)
		if attempt == 1 || !c.refused(ctx, err, sent.get()) {
			return err
		}
	}
}

// NewStream begins a streaming call. A server-streaming call refused UNAUTHENTICATED before its first
// answer is opened again once with a fresh token, its one request sent again.
func (c *Conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s := &clientStream{conn: c, ctx: ctx, desc: desc, method: method, opts: opts, retryable: !desc.ClientStreams}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// clientStream is a stream that may be opened twice: what the caller sent is kept while the stream may
// still be retried (no answer received yet), and sent again on the new stream.
type clientStream struct {
	conn      *Conn
	ctx       context.Context
	desc      *grpc.StreamDesc
	method    string
	opts      []grpc.CallOption
	retryable bool

	mu       sync.Mutex
	cur      grpc.ClientStream
	gen      *connGen
	sent     *sentToken
	released chan struct{} // closed when the current attempt's call ended
	endOnce  *sync.Once
	request  interface{}
	hasReq   bool
	halfDone bool
	received int
}

// open starts an attempt on the connection of the material in force.
func (s *clientStream) open() error {
	g, err := s.conn.acquire(s.ctx)
	if err != nil {
		return err
	}
	sent := &sentToken{}
	cs, err := g.cc.NewStream(context.WithValue(s.ctx, sentTokenKey{}, sent), s.desc, s.method, s.opts...)
	if err != nil {
		s.conn.release(g)
		return err
	}
	once, released := &sync.Once{}, make(chan struct{})
	s.mu.Lock()
	s.cur, s.gen, s.sent, s.endOnce, s.released = cs, g, sent, once, released
	s.mu.Unlock()
	// The call ends when RecvMsg returns an error or the context is done, whichever is first.
	go func() {
		select {
		case <-s.ctx.Done():
			s.end(g, once, released)
		case <-released:
		}
	}()
	return nil
}

func (s *clientStream) end(g *connGen, once *sync.Once, released chan struct{}) {
	once.Do(func() {
		close(released)
		s.conn.release(g)
	})
}

func (s *clientStream) stream() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *clientStream) Header() (metadata.MD, error) { return s.stream().Header() }
func (s *clientStream) Trailer() metadata.MD         { return s.stream().Trailer() }
func (s *clientStream) Context() context.Context     { return s.stream().Context() }

func (s *clientStream) CloseSend() error {
	s.mu.Lock()
	s.halfDone = true
	s.mu.Unlock()
	return s.stream().CloseSend()
}

func (s *clientStream) SendMsg(m interface{}) error {
	s.mu.Lock()
	if s.retryable {
		s.request, s.hasReq = m, true
	}
	s.mu.Unlock()
	return s.stream().SendMsg(m)
}

func (s *clientStream) RecvMsg(m interface{}) error {
	s.mu.Lock()
	cur, g, sent, once, released := s.cur, s.gen, s.sent, s.endOnce, s.released
	s.mu.Unlock()
	err := cur.RecvMsg(m)
	if err == nil {
		s.mu.Lock()
		s.received++
		s.mu.Unlock()
		return nil
	}
	s.end(g, once, released)
	s.mu.Lock()
	mayRetry := s.retryable && s.received == 0
	s.retryable = false // once
	request, hasReq, halfDone := s.request, s.hasReq, s.halfDone
	s.mu.Unlock()
	if !mayRetry {
		// Not sent again (a request stream, a retry): a refused token is dropped all the same.
		if status.Code(err) == codes.Unauthenticated && sent.get() != "" {
			s.conn.ts.InvalidateToken(sent.get(), s.conn.audience, s.conn.scopes...)
		}
		return err
	}
	if !s.conn.refused(s.ctx, err, sent.get()) {
		return err
	}
	if s.open() != nil {
		return err
	}
	next := s.stream()
	if hasReq {
		if serr := next.SendMsg(request); serr != nil {
			return s.RecvMsg(m)
		}
	}
	if halfDone {
		_ = next.CloseSend()
	}
	return s.RecvMsg(m)
}
