// Package inventory is the receiving demo service: HTTPS with Gin, the same API with Echo, and gRPC, all
// over mTLS, all guarded by authz tokens and the service's own policy file (inventory-policy.json).
package inventory

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/echoauth"
	"authz.internal/clients/go/ginauth"
	"authz.internal/clients/go/grpcauth"
	"github.com/gin-gonic/gin"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// StockRequest and StockReply are the messages of both APIs.
type StockRequest struct {
	SKU string `json:"sku"`
}

type StockReply struct {
	SKU       string `json:"sku"`
	Available int    `json:"available"`
	Caller    string `json:"caller"`
}

// JSONCodec puts JSON on the gRPC wire (content-subtype "json"), keeping the demo free of a
// protobuf toolchain, like the TypeScript demo. Clients call with grpc.CallContentSubtype("json").
type JSONCodec struct{}

func (JSONCodec) Marshal(v interface{}) ([]byte, error)   { return json.Marshal(v) }
func (JSONCodec) Unmarshal(b []byte, v interface{}) error { return json.Unmarshal(b, v) }
func (JSONCodec) Name() string                            { return "json" }

func init() { encoding.RegisterCodec(JSONCodec{}) }

// Service is a running inventory-service.
type Service struct {
	HTTPURL     string // Gin
	EchoURL     string // the same API on Echo
	GRPCAddress string
	http        *http.Server
	echo        *http.Server
	grpc        *grpc.Server
}

type store struct {
	mu    sync.Mutex
	stock map[string]int
}

func (s *store) get(sku string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stock[sku]
}

func (s *store) deduct(sku string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stock[sku] > 0 {
		s.stock[sku]--
	}
	return s.stock[sku]
}

// Start listens on 127.0.0.1 (free ports). tlsConfig must require and verify client certificates.
func Start(tlsConfig *tls.Config, v *authz.Verifier, p *authz.CalleePolicy) (*Service, error) {
	st := &store{stock: map[string]int{"sku-1": 10}}
	reply := func(ctx context.Context, sku string, n int) *StockReply {
		c, _ := authz.CallerFromContext(ctx)
		return &StockReply{SKU: sku, Available: n, Caller: c.Service}
	}

	// HTTP: Gin behind ginauth; every route's rule comes from the policy ("GET /stock/:sku", ...).
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery(), ginauth.Middleware(v, p))
	r.GET("/stock/:sku", func(c *gin.Context) {
		c.JSON(http.StatusOK, reply(c.Request.Context(), c.Param("sku"), st.get(c.Param("sku"))))
	})
	r.POST("/stock/:sku/deduct", func(c *gin.Context) {
		c.JSON(http.StatusOK, reply(c.Request.Context(), c.Param("sku"), st.deduct(c.Param("sku"))))
	})
	hl, err := tls.Listen("tcp", "127.0.0.1:0", tlsConfig)
	if err != nil {
		return nil, err
	}
	s := &Service{HTTPURL: "https://" + hl.Addr().String(), http: &http.Server{Handler: r}}
	go func() { _ = s.http.Serve(hl) }()

	// The same API on Echo behind echoauth: the rules are keyed by Echo's route patterns, the same ones.
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(middleware.Recover(), echoauth.Middleware(v, p))
	e.GET("/stock/:sku", func(c echo.Context) error {
		return c.JSON(http.StatusOK, reply(c.Request().Context(), c.Param("sku"), st.get(c.Param("sku"))))
	})
	e.POST("/stock/:sku/deduct", func(c echo.Context) error {
		return c.JSON(http.StatusOK, reply(c.Request().Context(), c.Param("sku"), st.deduct(c.Param("sku"))))
	})
	el, err := tls.Listen("tcp", "127.0.0.1:0", tlsConfig)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.EchoURL, s.echo = "https://"+el.Addr().String(), &http.Server{Handler: e}
	go func() { _ = s.echo.Serve(el) }()

	// gRPC: the interceptors guard every method; the health check is exempted explicitly.
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(v, p, grpcauth.Exempt("/grpc.health.v1.Health/Check"))),
		grpc.ChainStreamInterceptor(grpcauth.StreamServerInterceptor(v, p)),
	)
	s.grpc.RegisterService(&grpc.ServiceDesc{
		ServiceName: "demo.Inventory",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{
			unary("GetStock", func(ctx context.Context, in *StockRequest) (*StockReply, error) {
				return reply(ctx, in.SKU, st.get(in.SKU)), nil
			}),
			unary("Deduct", func(ctx context.Context, in *StockRequest) (*StockReply, error) {
				return reply(ctx, in.SKU, st.deduct(in.SKU)), nil
			}),
		},
	}, struct{}{})
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return nil, err
	}
	s.GRPCAddress = gl.Addr().String()
	go func() { _ = s.grpc.Serve(gl) }()
	return s, nil
}

func unary(name string, f func(context.Context, *StockRequest) (*StockReply, error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, ic grpc.UnaryServerInterceptor) (interface{}, error) {
		in := new(StockRequest)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, req interface{}) (interface{}, error) { return f(ctx, req.(*StockRequest)) }
		if ic == nil {
			return h(ctx, in)
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/demo.Inventory/" + name}, h)
	}}
}

// Close stops the servers.
func (s *Service) Close() {
	if s.grpc != nil {
		s.grpc.Stop()
	}
	for _, srv := range []*http.Server{s.http, s.echo} {
		if srv != nil {
			if err := srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return
			}
		}
	}
}
