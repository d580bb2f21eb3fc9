// Package testissuer runs the real authz issuer (node dist/bin/server.js, built from this repository)
// for the kit's tests: dev PKI and signing key in a temp dir, listeners on free 127.0.0.1 ports,
// stopped by PID. It also holds the tests' other fixtures: a fake clock, a JWKS proxy that counts and
// misbehaves on demand, test PKIs made with crypto/x509, and token minting. Nothing here is ever
// committed material: every key and certificate is made at test time.
package testissuer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultPolicy is the issuer policy of the tests: order-service may call inventory-service
// (stock:read, stock:deduct) and payment-service; payment-service may read inventory and orders.
const DefaultPolicy = `{
  "audiences": ["inventory-service", "order-service", "payment-service"],
  "grants": {
    "order-service":   { "inventory-service": ["stock:read", "stock:deduct"], "payment-service": ["pay:charge"] },
    "payment-service": { "inventory-service": ["stock:read"], "order-service": ["order:read"] }
  }
}`

// IssuerName is AUTHZ_ISSUER of the test issuers (the default).
const IssuerName = "https://authz.internal"

// Options of Start.
type Options struct {
	Policy string // default DefaultPolicy
	TTL    int    // AUTHZ_TOKEN_TTL, default 600
	// FixedPorts: pick the ports once so the issuer can be restarted on them (Stop then Restart).
	FixedPorts bool
	// Env: more AUTHZ_* settings ("AUTHZ_JWKS_MAX_AGE=3"), for the server and the keys CLI alike.
	Env []string
}

// Issuer is a running authz.
type Issuer struct {
	Root     string // the repository
	Dir      string // temp dir: policy, keys/, keys/dev-pki/
	KeysDir  string
	PKIDir   string
	TokenURL string // https://127.0.0.1:<port>/token
	JWKSURL  string // http://127.0.0.1:<ops port>/.well-known/jwks.json
	OpsURL   string

	env []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	lines   []string
	changed chan struct{}
}

// RepoRoot finds the repository: $AUTHZ_ROOT, or the first parent of the (symlink-resolved) working
// directory that has package.json and src/server.ts.
func RepoRoot() (string, error) {
	if root := os.Getenv("AUTHZ_ROOT"); root != "" {
		return root, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(wd); err == nil {
		wd = real
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if fileExists(filepath.Join(dir, "package.json")) && fileExists(filepath.Join(dir, "src", "server.ts")) {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("cannot find the authz repository above " + wd + " (set AUTHZ_ROOT)")
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// FreePort asks the kernel for a free 127.0.0.1 port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts an issuer in a new temp dir (removed by Close). It fails — never skips — when node or
// the built issuer (npm run build) is missing.
func Start(opts Options) (*Issuer, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	server := filepath.Join(root, "dist", "bin", "server.js")
	if !fileExists(server) {
		return nil, fmt.Errorf("%s is missing: run `npm run build` first", server)
	}
	if _, err := exec.LookPath("node"); err != nil {
		return nil, errors.New("node is not on PATH: the kit's tests run the real issuer")
	}
	dir, err := os.MkdirTemp("", "authz-go-test-")
	if err != nil {
		return nil, err
	}
	policy := opts.Policy
	if policy == "" {
		policy = DefaultPolicy
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(policy), 0o644); err != nil {
		return nil, err
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = 600
	}
	port, opsPort := 0, 0
	if opts.FixedPorts {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
		if opsPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	is := &Issuer{Root: root, Dir: dir, KeysDir: filepath.Join(dir, "keys"), PKIDir: filepath.Join(dir, "keys", "dev-pki")}
	is.env = append(cleanEnv(),
		"AUTHZ_HOST=127.0.0.1",
		"AUTHZ_PORT="+strconv.Itoa(port),
		"AUTHZ_OPS_HOST=127.0.0.1",
		"AUTHZ_OPS_PORT="+strconv.Itoa(opsPort),
		"AUTHZ_KEYS_DIR="+is.KeysDir,
		"AUTHZ_POLICY="+filepath.Join(dir, "policy.json"),
		"AUTHZ_TOKEN_TTL="+strconv.Itoa(ttl),
		"AUTHZ_RATE_LIMIT=0",
		"AUTHZ_LOG_LEVEL=info",
	)
	is.env = append(is.env, opts.Env...)
	if err := is.run(); err != nil {
		is.Close()
		return nil, err
	}
	return is, nil
}

// cleanEnv is the environment without AUTHZ_* (authz refuses unknown ones, and a developer's own
// settings must not leak into the tests).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTHZ_") {
			env = append(env, kv)
		}
	}
	return env
}

var listening = regexp.MustCompile(`"main":"https://127\.0\.0\.1:(\d+)","ops":"http://127\.0\.0\.1:(\d+)"`)

func (is *Issuer) run() error {
	cmd := exec.Command("node", filepath.Join(is.Root, "dist", "bin", "server.js"))
	cmd.Dir = is.Dir
	cmd.Env = is.env
	// If the test binary dies (a panic, a timeout), authz goes with it instead of running on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	is.mu.Lock()
	is.cmd, is.exited, is.lines, is.changed = cmd, exited, nil, make(chan struct{})
	is.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			is.mu.Lock()
			is.lines = append(is.lines, sc.Text())
			close(is.changed)
			is.changed = make(chan struct{})
			is.mu.Unlock()
		}
		_ = cmd.Wait()
		close(exited)
	}()
	line, err := is.WaitLog(30*time.Second, func(l string) bool { return listening.MatchString(l) })
	if err != nil {
		return fmt.Errorf("authz did not start: %w\n%s", err, is.Log())
	}
	m := listening.FindStringSubmatch(line)
	is.TokenURL = "https://127.0.0.1:" + m[1] + "/token"
	is.OpsURL = "http://127.0.0.1:" + m[2]
	is.JWKSURL = is.OpsURL + "/.well-known/jwks.json"
	return nil
}

// WaitLog waits for a log line (from the start of this run) that pred accepts.
func (is *Issuer) WaitLog(timeout time.Duration, pred func(string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		is.mu.Lock()
		lines, changed, exited := is.lines, is.changed, is.exited
		is.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if pred(lines[seen]) {
				return lines[seen], nil
			}
		}
		select {
		case <-changed:
		case <-exited:
			return "", errors.New("authz exited")
		case <-deadline.C:
			return "", errors.New("timed out waiting for a log line")
		}
	}
}

// Log is everything authz printed in this run.
func (is *Issuer) Log() string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return strings.Join(is.lines, "\n")
}

// Stop sends SIGTERM to authz's PID and waits for it to exit (SIGKILL after 15 s).
func (is *Issuer) Stop() {
	is.mu.Lock()
	cmd, exited := is.cmd, is.exited
	is.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart starts authz again with the same directory and ports (Options.FixedPorts).
func (is *Issuer) Restart() error { return is.run() }

// Close stops authz and removes its directory.
func (is *Issuer) Close() {
	is.Stop()
	_ = os.RemoveAll(is.Dir)
}
