package echoauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/echoauth"
	"authz.internal/clients/go/internal/testissuer"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// fake stands in for authz (no node); live_test.go runs the same suite against the real issuer.
var fake *testissuer.Fake

func TestMain(m *testing.M) {
	fake = testissuer.StartFake()
	code := m.Run()
	fake.Close()
	os.Exit(code)
}

// handler answers what the suite expects of every route, from the caller in both places the guard
// puts it.
func handler(c echo.Context) error {
	caller, ok := echoauth.Caller(c)
	if stored, _ := c.Get(echoauth.ContextKey).(*authz.Caller); !ok || stored != caller {
		return c.NoContent(http.StatusInternalServerError)
	}
	testissuer.CallerBody(c.Response(), c.Request())
	return nil
}

// echoGuard is the suite's inventory-service on Echo behind echoauth.Middleware, with Echo's Recover.
func echoGuard(v *authz.Verifier, p *authz.CalleePolicy, opts ...authz.GuardOption) http.Handler {
	e := echo.New()
	e.Logger.SetOutput(io.Discard)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true}), echoauth.Middleware(v, p, opts...))
	e.GET("/stock/:sku", handler)
	e.HEAD("/stock/:sku", handler) // its rule is the GET rule
	e.POST("/stock/:sku/deduct", handler)
	e.GET("/stock/:sku/history", handler)
	e.GET("/admin", handler)
	e.GET("/panic", func(echo.Context) error { panic("handler bug") })
	return e
}

func TestMiddlewareGuardsAnEchoService(t *testing.T) {
	testissuer.RunHTTPGuardSuite(t, fake, echoGuard)
}

// The API as issue 22 names it.
var _ func(*authz.Verifier, *authz.CalleePolicy, ...authz.GuardOption) echo.MiddlewareFunc = echoauth.Middleware

// ---- what Echo does on its own ---------------------------------------------------------------------

// call is one request straight into an Echo app, over a TLS state whose verified peer is the
// order-service certificate the token is bound to.
type call struct {
	method, path string
	token        string
}

type answer struct {
	status int
	body   string
	header http.Header
}

type echoRig struct {
	t        *testing.T
	v        *authz.Verifier
	peer     *x509.Certificate
	read     string
	outcomes []authz.CallOutcome
	logs     *testissuer.SyncBuffer
}

func newRig(t *testing.T) *echoRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, jwksURL := fake.Endpoints()
	logs := &testissuer.SyncBuffer{}
	v, err := authz.NewVerifier(ctx, authz.VerifierConfig{
		Issuer: testissuer.IssuerName, Audience: "inventory-service", JWKSURL: jwksURL,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	read, err := fake.RawToken("order-service", "inventory-service", "stock:read")
	if err != nil {
		t.Fatal(err)
	}
	return &echoRig{t: t, v: v, peer: fake.ClientCert("order-service").Leaf, read: read, logs: logs}
}

func (r *echoRig) guard(p *authz.CalleePolicy, opts ...authz.GuardOption) echo.MiddlewareFunc {
	opts = append(opts, authz.OnDecision(func(o authz.CallOutcome) { r.outcomes = append(r.outcomes, o) }))
	return echoauth.Middleware(r.v, p, opts...)
}

func (r *echoRig) do(e *echo.Echo, c call) answer {
	req := httptest.NewRequest(c.method, c.path, nil)
	req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{r.peer}}}
	if c.token != "" {
		req.Header.Set(authz.ServiceTokenHeader, c.token)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Body.String(), rec.Header()}
}

// lastReason is the reason of the last outcome ("" when it was allowed).
func (r *echoRig) lastReason() string {
	if len(r.outcomes) == 0 {
		r.t.Fatal("no outcome reported")
	}
	return r.outcomes[len(r.outcomes)-1].Reason
}

func mustPolicy(t *testing.T, doc string) *authz.CalleePolicy {
	t.Helper()
	p, err := authz.ParseCalleePolicy([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func quietEcho() *echo.Echo {
	e := echo.New()
	e.Logger.SetOutput(io.Discard)
	return e
}

func wantBare(t *testing.T, a answer, status int) {
	t.Helper()
	if a.status != status || a.body != "" || a.header.Get("Content-Type") != "" || a.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("want a bare %d, got %d %q %v", status, a.status, a.body, a.header)
	}
}

// Echo 4 leaves c.Path() at the request's own path when no route matched, and at the route's pattern
// when only the method did not: read as route patterns, a retired route's rule or the GET rule of a
// route without HEAD would let the request through to Echo's 404 or 405. No route, no rule.
func TestARequestNoRouteServesFindsNoRule(t *testing.T) {
	r := newRig(t)
	p := mustPolicy(t, `{"routes": {"GET /retired": {"scopes": []}, "GET /stock/:sku": {"scopes": ["stock:read"]}, "PUT /stock/:sku": {"scopes": ["stock:read"]}}}`)
	e := quietEcho()
	e.Use(r.guard(p))
	e.GET("/stock/:sku", handler)
	for _, c := range []call{
		{"GET", "/retired", r.read},      // no route: c.Path() is "/retired"
		{"HEAD", "/stock/sku-1", r.read}, // GET only: c.Path() is "/stock/:sku"
		{"PUT", "/stock/sku-1", r.read},  // a rule, but no PUT route
	} {
		a := r.do(e, c)
		wantBare(t, a, http.StatusForbidden)
		if got := r.lastReason(); got != authz.ReasonRouteUnlisted {
			t.Errorf("%s %s: reason %s, want %s", c.method, c.path, got, authz.ReasonRouteUnlisted)
		}
	}
	if a := r.do(e, call{"GET", "/stock/sku-1", r.read}); a.status != http.StatusOK {
		t.Fatalf("control: %d %q", a.status, a.body)
	}
}

// Echo's HTTPErrorHandler writes a JSON body for any error a handler returns: the guard answers
// itself and returns nil, so neither the default handler nor a custom one, Debug, Gzip or Secure
// adds a body, a type or a header that describes one.
func TestEchoAddsNothingToADenial(t *testing.T) {
	r := newRig(t)
	e := quietEcho()
	e.Debug = true
	handled := 0
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		handled++
		_ = c.JSON(http.StatusTeapot, map[string]string{"message": err.Error()})
	}
	e.Use(middleware.Gzip(), middleware.Secure(), r.guard(mustPolicy(t, `{"routes": {"GET /stock/:sku": {"scopes": ["stock:deduct"]}}}`)))
	e.GET("/stock/:sku", handler)
	for _, c := range []call{{"GET", "/stock/sku-1", ""}, {"GET", "/stock/sku-1", "not.a.token"}, {"GET", "/stock/sku-1", r.read}, {"GET", "/nowhere", r.read}} {
		a := r.do(e, c)
		want := http.StatusUnauthorized
		if c.token == r.read {
			want = http.StatusForbidden
		}
		wantBare(t, a, want)
		if enc := a.header.Get("Content-Encoding"); enc != "" {
			t.Errorf("Content-Encoding %q on an empty denial", enc)
		}
	}
	if handled != 0 {
		t.Fatalf("Echo's error handler was called %d times for denials", handled)
	}
}

// On a Group, the rule key is the group's full pattern; Group.Use routes every path under the
// prefix to its middleware ("/v1/*"), which no rule names unless the policy says so.
func TestAGroupGuardKeysRulesByTheFullPattern(t *testing.T) {
	r := newRig(t)
	e := quietEcho()
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) }) // outside the group: open
	g := e.Group("/v1")
	g.Use(r.guard(mustPolicy(t, `{"routes": {"GET /v1/stock/:sku": {"scopes": ["stock:read"]}}}`)))
	g.GET("/stock/:sku", handler)
	if a := r.do(e, call{"GET", "/v1/stock/sku-1", r.read}); a.status != http.StatusOK || a.body != "order-service /v1/stock/sku-1" {
		t.Fatalf("GET /v1/stock/sku-1: %d %q", a.status, a.body)
	}
	wantBare(t, r.do(e, call{"GET", "/v1/nowhere", r.read}), http.StatusForbidden)
	if a := r.do(e, call{"GET", "/healthz", ""}); a.status != http.StatusOK {
		t.Fatalf("a route outside the group: %d", a.status)
	}
}

// e.Pre runs before routing: there is no route, so nothing is allowed (the mistake fails closed).
func TestInstalledBeforeRoutingItRefusesEverything(t *testing.T) {
	r := newRig(t)
	e := quietEcho()
	e.Pre(r.guard(mustPolicy(t, `{"routes": {"GET /stock/:sku": {"scopes": ["stock:read"]}}}`)))
	e.GET("/stock/:sku", handler)
	wantBare(t, r.do(e, call{"GET", "/stock/sku-1", r.read}), http.StatusForbidden)
	if got := r.lastReason(); got != authz.ReasonRouteUnlisted {
		t.Fatalf("reason %s", got)
	}
}

// Exempt keys are route patterns; a path no route serves is never exempt, whatever it spells.
func TestExemptKeysAreRoutePatterns(t *testing.T) {
	r := newRig(t)
	e := quietEcho()
	e.Use(r.guard(mustPolicy(t, `{"routes": {}}`), authz.Exempt("GET /healthz", "GET /status/:part", "GET /gone")))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	e.GET("/status/:part", func(c echo.Context) error { return c.String(http.StatusOK, c.Param("part")) })
	for path, want := range map[string]int{"/healthz": 200, "/status/disk": 200, "/gone": 401} {
		if a := r.do(e, call{"GET", path, ""}); a.status != want {
			t.Errorf("GET %s without a token: %d, want %d", path, a.status, want)
		}
	}
	// An exempted call has no caller: the denial log stays quiet for it.
	if strings.Count(r.logs.String(), "service_call_denied") != 1 {
		t.Errorf("denial lines: %s", r.logs.String())
	}
}

// A denial's log line is the guard's: one line, the reason, the request path, never the token.
func TestADenialIsLoggedOnceWithTheRoutePath(t *testing.T) {
	r := newRig(t)
	e := quietEcho()
	e.Use(r.guard(mustPolicy(t, `{"routes": {"GET /stock/:sku": {"scopes": ["stock:deduct"]}}}`)))
	e.GET("/stock/:sku", handler)
	wantBare(t, r.do(e, call{"GET", "/stock/sku-9", r.read}), http.StatusForbidden)
	lines := strings.Split(strings.TrimSpace(r.logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines: %v", len(lines), lines)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line["reason"] != authz.ReasonRouteForbidden || line["path"] != "/stock/sku-9" || line["sub"] != "order-service" {
		t.Fatalf("logged %v", line)
	}
	if strings.Contains(r.logs.String(), strings.Split(r.read, ".")[2]) {
		t.Fatal("the token reached the log")
	}
}
