package testissuer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CAPool holds the dev CA: authz's server certificate and every dev client certificate chain to it.
func (is *Issuer) CAPool() *x509.CertPool {
	pem, err := os.ReadFile(filepath.Join(is.PKIDir, "ca.pem"))
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

// ClientCert is the dev client certificate of a caller the policy names.
func (is *Issuer) ClientCert(name string) tls.Certificate {
	cert, err := tls.LoadX509KeyPair(filepath.Join(is.PKIDir, "clients", name+".pem"), filepath.Join(is.PKIDir, "clients", name+"-key.pem"))
	if err != nil {
		panic(err)
	}
	if cert.Leaf == nil {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return cert
}

// ClientTLS is the TLS config of a caller talking to authz.
func (is *Issuer) ClientTLS(name string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{is.ClientCert(name)}, RootCAs: is.CAPool(), MinVersion: tls.VersionTLS12}
}

// RawToken gets a token with a plain HTTP client (no cache), for tests that need a fresh one.
func (is *Issuer) RawToken(caller, audience, scope string) (string, error) {
	client := is.TokenClient(caller)
	defer client.CloseIdleConnections()
	return is.PostToken(client, audience, scope)
}

// TokenClient is a plain keep-alive mTLS client of authz with caller's certificate (no TokenSource),
// for tests that fetch many fresh tokens.
func (is *Issuer) TokenClient(caller string) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: is.ClientTLS(caller)}, Timeout: 10 * time.Second}
}

// PostToken asks authz for a token over client (one of TokenClient's).
func (is *Issuer) PostToken(client *http.Client, audience, scope string) (string, error) {
	return postToken(client, is.TokenURL, audience, scope)
}

// postToken asks a token endpoint (authz's, or the fake's) for a token over client.
func postToken(client *http.Client, tokenURL, audience, scope string) (string, error) {
	body, _ := json.Marshal(map[string]string{"audience": audience, "scope": scope})
	if scope == "" {
		body, _ = json.Marshal(map[string]string{"audience": audience})
	}
	res, err := client.Post(tokenURL, "application/json", strings.NewReader(string(body)))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return "", err
	}
	if res.StatusCode != 200 {
		return "", fmt.Errorf("authz answered %d %s", res.StatusCode, out.Error)
	}
	return out.AccessToken, nil
}

// Discovery is authz's authorization server metadata (GET /.well-known/openid-configuration on the
// main listener).
func (is *Issuer) Discovery() (map[string]any, error) {
	client := is.TokenClient("order-service")
	defer client.CloseIdleConnections()
	res, err := client.Get(strings.TrimSuffix(is.TokenURL, "/token") + "/.well-known/openid-configuration")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return nil, fmt.Errorf("discovery answered %d", res.StatusCode)
	}
	var doc map[string]any
	return doc, json.NewDecoder(res.Body).Decode(&doc)
}

// PublishedKeys are the JWKs authz publishes now (its JWKS on the ops listener), by kid.
func (is *Issuer) PublishedKeys() (map[string]map[string]any, error) {
	res, err := http.Get(is.JWKSURL)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		return nil, err
	}
	keys := map[string]map[string]any{}
	for _, k := range doc.Keys {
		kid, _ := k["kid"].(string)
		keys[kid] = k
	}
	return keys, nil
}

// TokensIssued reads authz_tokens_issued_total{audience} from the ops listener's /metrics.
func (is *Issuer) TokensIssued(audience string) (int, error) {
	res, err := http.Get(is.OpsURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	text, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	re := regexp.MustCompile(`(?m)^authz_tokens_issued_total\{audience="` + regexp.QuoteMeta(audience) + `"\} (\d+)`)
	m := re.FindSubmatch(text)
	if m == nil {
		return 0, nil
	}
	return strconv.Atoi(string(m[1]))
}

// Rotate makes a new signing key, active at once (keys rotate --activate-in 0s --force), has the
// server reload it (SIGHUP), waits until the server says it signs with it, and returns its kid.
func (is *Issuer) Rotate(ctx context.Context) (string, error) {
	kid, err := is.NewKey(ctx, "rotate", "--activate-in", "0s", "--force")
	if err != nil {
		return "", err
	}
	return kid, is.WaitSigningKey(30*time.Second, kid)
}

// createdKey is the keys CLI's line about a new key: "created key <kid>: …", or
// "created key <kid> (ES256): …" for a key that is not the default RS256.
var createdKey = regexp.MustCompile(`created key (\S+?)(?: \([^)]*\))?: published`)

// NewKey runs a keys CLI verb that makes a key (rotate or init, with args), has the server reload the
// directory (SIGHUP), waits until the server says it reloaded a keyset holding the new key — from
// then on it is in the JWKS — and returns its kid.
func (is *Issuer) NewKey(ctx context.Context, args ...string) (string, error) {
	out, err := is.KeysCLI(ctx, args...)
	if err != nil {
		return "", err
	}
	m := createdKey.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("keys %s printed no kid:\n%s", strings.Join(args, " "), out)
	}
	kid := string(m[1])
	is.mu.Lock()
	proc := is.cmd.Process
	is.mu.Unlock()
	_ = proc.Signal(syscall.SIGHUP)
	if _, err := is.WaitLog(30*time.Second, func(l string) bool {
		return strings.Contains(l, `"keyset reloaded"`) && strings.Contains(l, `"`+kid+`"`)
	}); err != nil {
		return "", fmt.Errorf("authz did not publish %s: %w\n%s", kid, err, is.Log())
	}
	return kid, nil
}

// WaitSigningKey waits until the server says it signs with kid ("signing key switched").
func (is *Issuer) WaitSigningKey(timeout time.Duration, kid string) error {
	if _, err := is.WaitLog(timeout, func(l string) bool {
		return strings.Contains(l, `"signing key switched"`) && strings.Contains(l, `"`+kid+`"`)
	}); err != nil {
		return fmt.Errorf("authz did not switch to %s: %w\n%s", kid, err, is.Log())
	}
	return nil
}

// KeysCLI runs the keys CLI (node dist/bin/keys.js) on this issuer's keys directory; stdout only.
func (is *Issuer) KeysCLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(is.Root, "dist", "bin", "keys.js")}, args...)...)
	cmd.Dir = is.Dir
	cmd.Env = is.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("keys %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out, nil
}
