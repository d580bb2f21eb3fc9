// The Go demo: authz (dev mode, in a temp dir) + inventory-service (Gin, Echo and gRPC, receiving) +
// order-service and payment-service (calling), all over mTLS on 127.0.0.1. It makes allowed and
// denied calls, prints what happened, and exits non-zero if any call went otherwise than expected.
//
//	npm run demo:go
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/examples/go/inventory"
	"authz.internal/examples/go/order"
	"google.golang.org/grpc/codes"
)

func main() {
	ok, err := run(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// repoRoot is $AUTHZ_ROOT, or the first parent of the working directory with the built issuer.
func repoRoot() (string, error) {
	if root := os.Getenv("AUTHZ_ROOT"); root != "" {
		return root, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "dist", "bin", "server.js")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("cannot find the built authz (run npm run build, or set AUTHZ_ROOT)")
		}
	}
}

type issuer struct {
	cmd      *exec.Cmd
	tokenURL string
	jwksURL  string
	pki      string
}

var listening = regexp.MustCompile(`"main":"https://127\.0\.0\.1:(\d+)","ops":"http://127\.0\.0\.1:(\d+)"`)

// startAuthz runs node dist/bin/server.js in dev mode with everything under dir.
func startAuthz(root, dir string) (*issuer, error) {
	policy, err := os.ReadFile(filepath.Join(root, "config", "service-policy.json"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "service-policy.json"), policy, 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("node", filepath.Join(root, "dist", "bin", "server.js"))
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTHZ_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "AUTHZ_HOST=127.0.0.1", "AUTHZ_PORT=0", "AUTHZ_OPS_PORT=0",
		"AUTHZ_KEYS_DIR="+filepath.Join(dir, "keys"), "AUTHZ_POLICY="+filepath.Join(dir, "service-policy.json"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
		close(found)
	}()
	select {
	case m, ok := <-found:
		if !ok {
			_ = cmd.Wait()
			return nil, errors.New("authz exited before listening")
		}
		go func() {
			for range found { // keep draining the log
			}
		}()
		return &issuer{
			cmd:      cmd,
			tokenURL: "https://localhost:" + m[1] + "/token",
			jwksURL:  "http://127.0.0.1:" + m[2] + "/.well-known/jwks.json",
			pki:      filepath.Join(dir, "keys", "dev-pki"),
		}, nil
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return nil, errors.New("authz did not start within 60 s")
	}
}

func (i *issuer) stop() {
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = i.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = i.cmd.Process.Kill()
	}
}

// serverTLS is inventory-service's TLS: a certificate from a CA made here, client certificates
// required and verified against authz's dev CA (the callers' certificates come from it).
func serverTLS(clientCAs *x509.CertPool) (*tls.Config, *x509.Certificate, error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "inventory demo CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "inventory-service"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, ca, nil
}

// identity is a caller's TLS: its dev certificate, trusting authz's CA and inventory-service's.
func identity(pkiDir, name string, roots *x509.CertPool) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "clients", name+".pem"), filepath.Join(pkiDir, "clients", name+"-key.pem"))
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

var grpcNames = map[string]string{
	codes.PermissionDenied.String(): "PERMISSION_DENIED",
	codes.Unauthenticated.String():  "UNAUTHENTICATED",
}

// lockedWriter serialises the demo's lines and the services' log lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func run(w io.Writer) (bool, error) {
	out := &lockedWriter{w: w}
	root, err := repoRoot()
	if err != nil {
		return false, err
	}
	dir, err := os.MkdirTemp("", "authz-go-demo-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	az, err := startAuthz(root, dir)
	if err != nil {
		return false, err
	}
	defer az.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fmt.Fprintf(out, "authz: %s (token endpoint), %s (JWKS)\n", az.tokenURL, az.jwksURL)

	caPEM, err := os.ReadFile(filepath.Join(az.pki, "ca.pem"))
	if err != nil {
		return false, err
	}
	devCA := x509.NewCertPool()
	devCA.AppendCertsFromPEM(caPEM)
	invTLS, invCA, err := serverTLS(devCA)
	if err != nil {
		return false, err
	}
	// inventory-service logs every denial (sub, aud, method, path; never the token): shown inline.
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	verifier, err := authz.NewVerifier(ctx, authz.VerifierConfig{Issuer: "https://authz.internal", Audience: "inventory-service", JWKSURL: az.jwksURL, Logger: logger})
	if err != nil {
		return false, err
	}
	defer verifier.Close()
	policy, err := authz.LoadCalleePolicy(filepath.Join(root, "examples", "go", "inventory-policy.json"))
	if err != nil {
		return false, err
	}
	defer policy.Close()
	inv, err := inventory.Start(invTLS, verifier, policy)
	if err != nil {
		return false, err
	}
	defer inv.Close()
	fmt.Fprintf(out, "inventory-service: %s (HTTP, Gin), %s (HTTP, Echo), %s (gRPC)\n\n", inv.HTTPURL, inv.EchoURL, inv.GRPCAddress)

	roots := x509.NewCertPool() // callers trust authz's CA and inventory-service's
	roots.AppendCertsFromPEM(caPEM)
	roots.AddCert(invCA)
	orderTLS, err := identity(az.pki, "order-service", roots)
	if err != nil {
		return false, err
	}
	paymentTLS, err := identity(az.pki, "payment-service", roots)
	if err != nil {
		return false, err
	}
	orders, err := order.New(az.tokenURL, orderTLS)
	if err != nil {
		return false, err
	}
	defer orders.Close()
	payments, err := order.New(az.tokenURL, paymentTLS)
	if err != nil {
		return false, err
	}
	defer payments.Close()

	total, failed := 0, 0
	check := func(name, expected string, actual string, err error) {
		total++
		if err != nil {
			actual = "error: " + err.Error()
		}
		ok := strings.HasPrefix(actual, expected)
		mark := "✔"
		if !ok {
			mark = "✘"
			failed++
		}
		fmt.Fprintf(out, "%s %s\n    expected %s, got %s\n", mark, name, expected, actual)
	}
	stock := inv.HTTPURL + "/stock/sku-1"
	res, err := orders.HTTP(ctx, "GET", stock, "stock:read")
	check("HTTP  order-service GET /stock/sku-1 with a stock:read token", "200", res, err)
	res, err = orders.HTTP(ctx, "POST", stock+"/deduct", "stock:deduct")
	check("HTTP  order-service POST /stock/sku-1/deduct with a stock:deduct token", "200", res, err)
	res, err = orders.HTTP(ctx, "POST", stock+"/deduct", "stock:read")
	check("HTTP  order-service POST /stock/sku-1/deduct with only stock:read", "403", res, err)
	res, err = orders.HTTP(ctx, "GET", stock, "-")
	check("HTTP  order-service GET /stock/sku-1 without a token", "401", res, err)
	stolen, err := orders.Tokens().Token(ctx, "inventory-service", "stock:read")
	if err == nil {
		res, err = replay(ctx, paymentTLS, stock, stolen)
	}
	check("HTTP  payment-service replays order-service's token (bound to another certificate)", "401", res, err)
	_, err = payments.Tokens().Token(ctx, "inventory-service")
	var te *authz.TokenError
	denied := fmt.Sprint(err)
	if errors.As(err, &te) {
		denied = "TokenError " + te.Code
	}
	check("authz payment-service asks for an inventory-service token (no grant)", "TokenError invalid_target", denied, nil)

	echoStock := inv.EchoURL + "/stock/sku-1"
	res, err = orders.HTTP(ctx, "GET", echoStock, "stock:read")
	check("Echo  order-service GET /stock/sku-1 with a stock:read token", "200", res, err)
	res, err = orders.HTTP(ctx, "POST", echoStock+"/deduct", "stock:read")
	check("Echo  order-service POST /stock/sku-1/deduct with only stock:read", "403", res, err)
	res, err = orders.HTTP(ctx, "GET", inv.EchoURL+"/admin", "stock:read")
	check("Echo  order-service GET /admin (no route, no rule)", "403", res, err)

	grpcCheck := func(name, method, scope, expected string) {
		res, err := orders.GRPC(ctx, inv.GRPCAddress, method, scope)
		if n, ok := grpcNames[res]; ok {
			res = n
		}
		check(name, expected, res, err)
	}
	grpcCheck("gRPC  order-service GetStock with a stock:read token", "GetStock", "stock:read", "OK")
	grpcCheck("gRPC  order-service Deduct with a stock:deduct token", "Deduct", "stock:deduct", "OK")
	grpcCheck("gRPC  order-service Deduct with only stock:read", "Deduct", "stock:read", "PERMISSION_DENIED")
	grpcCheck("gRPC  order-service GetStock without a token", "GetStock", "-", "UNAUTHENTICATED")

	fmt.Fprintf(out, "\n%d of %d calls went as expected\n", total-failed, total)
	return failed == 0, nil
}

// replay sends a token over the caller's own certificate, as a thief would.
func replay(ctx context.Context, tlsConfig *tls.Config, url, token string) (string, error) {
	c, err := order.New("https://unused.invalid/token", tlsConfig)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.HTTPWithToken(ctx, "GET", url, token)
}
