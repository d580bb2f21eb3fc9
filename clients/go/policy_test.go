package authz_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authz "authz.internal/clients/go"
	"authz.internal/clients/go/internal/testissuer"
)

func writeAtomic(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

var (
	reader  = &authz.Caller{Service: "order-service", Scopes: []string{"stock:read"}}
	deducer = &authz.Caller{Service: "order-service", Scopes: []string{"stock:deduct"}}
	payer   = &authz.Caller{Service: "payment-service", Scopes: []string{"stock:read", "stock:deduct"}}
)

func TestCalleePolicyReadsTheTypeScriptSDKsFile(t *testing.T) {
	root, err := testissuer.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p, err := authz.LoadCalleePolicyWith(filepath.Join(root, "examples", "inventory-policy.json"), authz.WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Service() != "inventory-service" {
		t.Fatalf("service %q", p.Service())
	}
	checks := []struct {
		name      string
		got, want authz.Decision
	}{
		{"GET by path", p.DecideHTTP("GET", "/stock/sku-1", reader), authz.Allow},
		{"GET by route", p.DecideRoute("GET", "/stock/:sku", reader), authz.Allow},
		{"GET without the scope", p.DecideHTTP("GET", "/stock/sku-1", deducer), authz.Forbidden},
		{"gRPC Deduct", p.DecideMethod("/demo.Inventory/Deduct", deducer), authz.Allow},
		{"gRPC Deduct, not one of its callers", p.DecideMethod("/demo.Inventory/Deduct", payer), authz.Forbidden},
		{"gRPC unknown method", p.DecideMethod("/demo.Inventory/Unknown", reader), authz.Unlisted},
		{"DELETE", p.DecideHTTP("DELETE", "/stock/sku-1", payer), authz.Unlisted},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("%v, want %v", c.got, c.want)
			}
		})
	}
}

func TestCalleePolicyMatchesPathsLikeTheRouter(t *testing.T) {
	p, err := authz.ParseCalleePolicy([]byte(`{"routes": {
		"GET /stock/:sku":           {"scopes": ["stock:read"]},
		"GET /stock/special":        {"scopes": ["stock:deduct"]},
		"GET /stock/:sku/history":   {"scopes": ["stock:read"], "callers": ["order-service"]},
		"GET /":                     {"scopes": []}
	}}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		caller       *authz.Caller
		want         authz.Decision
	}{
		{"GET", "/stock/sku-1", reader, authz.Allow},
		{"GET", "/stock/special", reader, authz.Forbidden}, // the literal rule wins over :sku
		{"GET", "/stock/special", deducer, authz.Allow},
		{"GET", "/stock/a%2Fb", reader, authz.Allow}, // one segment, as ServeMux sees it
		{"GET", "/stock/sku-1/history", reader, authz.Allow},
		{"GET", "/stock/sku-1/history", payer, authz.Forbidden},
		{"GET", "/stock/", reader, authz.Unlisted},       // :sku needs a non-empty segment
		{"GET", "/stock/sku-1/", reader, authz.Unlisted}, // a trailing slash is another route
		{"GET", "//stock/sku-1", reader, authz.Unlisted},
		{"GET", "/stock/../stock/sku-1", reader, authz.Unlisted},
		{"GET", "/stock/%2e%2e", reader, authz.Unlisted},
		{"GET", "/stock/%zz", reader, authz.Unlisted},
		{"GET", "/", reader, authz.Allow},
		{"POST", "/stock/sku-1", payer, authz.Unlisted},
		// HEAD: the GET rule governs (a HEAD key is refused when the file is read).
		{"HEAD", "/stock/sku-1", reader, authz.Allow},
		{"HEAD", "/stock/sku-1", deducer, authz.Forbidden},
		{"HEAD", "/stock/special", reader, authz.Forbidden},
		{"HEAD", "/stock/sku-1/history", payer, authz.Forbidden},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path+" as "+c.caller.Service+" "+strings.Join(c.caller.Scopes, ","), func(t *testing.T) {
			if got := p.DecideHTTP(c.method, c.path, c.caller); got != c.want {
				t.Errorf("%v, want %v", got, c.want)
			}
		})
	}
	if got := p.DecideRoute("HEAD", "/stock/:sku", deducer); got != authz.Forbidden {
		t.Errorf("DecideRoute HEAD: %v, want forbidden (GET rule)", got)
	}
	if got := p.DecideRoute("GET", "", reader); got != authz.Unlisted {
		t.Errorf("no route: %v, want unlisted", got)
	}
}

// A nil *CalleePolicy "allows any verified caller": every method says so instead of dereferencing it
// (before: Service and Rule panicked).
func TestANilCalleePolicyIsSafeToUse(t *testing.T) {
	var none *authz.CalleePolicy
	if none.DecideHTTP("DELETE", "/anything", reader) != authz.Allow || none.DecideMethod("/x.Y/Z", reader) != authz.Allow || none.DecideRoute("GET", "/x", reader) != authz.Allow {
		t.Error("a nil policy allows any verified caller")
	}
	if none.Service() != "" {
		t.Error("a nil policy has no service")
	}
	if r, ok := none.Rule("GET /x"); ok || r != nil {
		t.Error("a nil policy has no rule")
	}
	if none.Reload() != nil || none.Close() != nil {
		t.Error("Reload and Close on nil are no-ops")
	}
}

// Every bad document of conformance/callee-policies.json is refused with its code and entry
// (conformance_test.go); here, the error a service sees: a *PolicyError naming the file and the entry.
func TestCalleePolicyRefusesBadFilesNamingTheEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	writeAtomic(t, path, `{"routes": {"GET /x": {"scopes": ["a b"]}}}`)
	_, err := authz.LoadCalleePolicyWith(path, authz.WithPollInterval(0))
	var pe *authz.PolicyError
	if !errors.As(err, &pe) || pe.Code != authz.ErrCodePolicyInvalid || pe.Source != path || pe.Entry != "/routes/GET ~1x/scopes/0" {
		t.Fatalf("want a PolicyError naming %s and /routes/GET ~1x/scopes/0, got %#v", path, err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "/routes/GET ~1x/scopes/0") {
		t.Fatalf("the message names the file and the entry: %v", err)
	}
	_, err = authz.LoadCalleePolicy(filepath.Join(t.TempDir(), "missing.json"))
	if !errors.As(err, &pe) || pe.Code != authz.ErrCodePolicyRead {
		t.Fatalf("a missing file: want ERR_POLICY_READ, got %v", err)
	}
}

func TestCalleePolicyReloadsOnChangeAndKeepsTheOldRulesOnABadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	writeAtomic(t, path, `{"routes": {"GET /stock/:sku": {"scopes": ["stock:read"]}}}`)
	reloads := make(chan error, 16)
	logger, logs := jsonLogger()
	counters := &authz.CalleeCounters{}
	p, err := authz.LoadCalleePolicyWith(path, authz.WithPollInterval(5*time.Millisecond), authz.WithReloadHook(func(err error) { reloads <- err }),
		authz.WithPolicyLogger(logger), authz.WithPolicyCounters(counters))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.Service(); got != "" {
		t.Fatalf("service %q", got)
	}
	wait := func() error {
		t.Helper()
		select {
		case err := <-reloads:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("no reload")
			return nil
		}
	}
	if p.DecideHTTP("GET", "/stock/1", deducer) != authz.Forbidden {
		t.Fatal("initial rules")
	}
	writeAtomic(t, path, `{"routes": {"GET /stock/:sku": {"scopes": ["stock:deduct"]}}}`)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if p.DecideHTTP("GET", "/stock/1", deducer) != authz.Allow {
		t.Fatal("the new rules should be in force")
	}
	writeAtomic(t, path, `{"routes": {"GET /stock/:sku": {"scopes": "oops"}}}`)
	if err := wait(); err == nil {
		t.Fatal("want the reload error")
	}
	if p.DecideHTTP("GET", "/stock/1", deducer) != authz.Allow {
		t.Fatal("a bad file must keep the rules in force")
	}
	if !strings.Contains(logs.String(), "policy_reload_failed") || !strings.Contains(logs.String(), `"source":"`+path+`"`) {
		t.Fatalf("a failed reload should be logged, naming the file: %s", logs.String())
	}
	if !counters.PolicyReloadFailing() || counters.PolicyReloadFailures() == 0 {
		t.Fatal("a failed reload is counted, and failing until one succeeds")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err == nil { // a missing file is a failed reload too, the rules stay
		t.Fatal("want the reload error for a missing file")
	}
	if p.DecideHTTP("GET", "/stock/1", deducer) != authz.Allow {
		t.Fatal("a missing file must keep the rules in force")
	}
	writeAtomic(t, path, `{"routes": {"GET /stock/:sku": {"scopes": ["stock:read"]}}}`)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if p.DecideHTTP("GET", "/stock/1", reader) != authz.Allow || p.DecideHTTP("GET", "/stock/1", deducer) != authz.Forbidden {
		t.Fatal("the fixed file should be in force")
	}
	if counters.PolicyReloadFailing() || strings.Count(logs.String(), "policy_reload_recovered") != 1 {
		t.Fatalf("the fixed file: failing %v, recoveries logged\n%s", counters.PolicyReloadFailing(), logs.String())
	}
}

// Files that are not files: a FIFO at the policy path used to block the poll for ever (and, in the
// TypeScript SDK, a libuv thread and the process's exit); a device never ends.
func TestCalleePolicyReadsRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.json")
	writeAtomic(t, big, `{"routes": {}, "$schema": "`+strings.Repeat("x", 1<<20)+`"}`)
	for name, path := range map[string]string{"a FIFO": fifo, "a directory": dir, "a device": "/dev/zero", "over 1 MiB": big} {
		t.Run(name, func(t *testing.T) {
			wantReadErrorAtOnce(t, func() error {
				_, err := authz.LoadCalleePolicyWith(path, authz.WithPollInterval(0))
				return err
			})
		})
	}
	// Swapped in under a watched policy: the reload fails at once and the rules in force stay.
	path := filepath.Join(dir, "policy.json")
	writeAtomic(t, path, `{"routes": {"GET /x": {"scopes": []}}}`)
	p, err := authz.LoadCalleePolicyWith(path, authz.WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	wantReadErrorAtOnce(t, p.Reload)
	if p.DecideHTTP("GET", "/x", reader) != authz.Allow {
		t.Fatal("the rules in force stay")
	}
}

// wantReadErrorAtOnce runs read, which must fail with ERR_POLICY_READ rather than block.
func wantReadErrorAtOnce(t *testing.T, read func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- read() }()
	select {
	case err := <-done:
		var pe *authz.PolicyError
		if !errors.As(err, &pe) || pe.Code != authz.ErrCodePolicyRead {
			t.Fatalf("want ERR_POLICY_READ, got %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reading it blocked")
	}
}
