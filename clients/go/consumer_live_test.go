//go:build live

package authz_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"authz.internal/clients/go/internal/testissuer"
)

// The README's recipe for a service in another repository, followed word for word in a temp home
// directory: its main.go at the path the README names, its build commands (GOPATH mode, the kit
// vendored, Debian's libraries, Go 1.22 by its path) run by bash, and the binary run against a real authz.
func TestLiveConsumerRecipe(t *testing.T) {
	root, err := testissuer.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "clients", "go", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := func(marker, lang string) string {
		m := regexp.MustCompile("(?s)<!-- consumer: " + regexp.QuoteMeta(marker) + " -->\n```" + lang + "\n(.*?)```").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("the README has no %q block after <!-- consumer: %s -->", lang, marker)
		}
		return string(m[1])
	}
	mainGo, build := block("main.go", "go"), block("build", "sh")

	home := t.TempDir()
	service := filepath.Join(home, "go", "src", "example.com", "order-service")
	if err := os.MkdirAll(service, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(service, "main.go"), []byte(mainGo), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-x", "-c", build)
	// What a developer's shell has: a home, PATH, the checkout. The Go build cache is a cache, not
	// configuration: the one of this run is kept, so that the build does not start cold.
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "AUTHZ=" + root, "GOCACHE=" + goCache(t)}
	out, err := cmd.CombinedOutput()
	t.Logf("the README's build steps:\n%s", out)
	if err != nil {
		t.Fatalf("the build failed: %v", err)
	}
	// GOPATH holds only the temp home and Debian's libraries: the kit can only have come from vendor/.
	if _, err := os.Stat(filepath.Join(service, "vendor", "authz.internal", "clients", "go", "tokensource_test.go")); !os.IsNotExist(err) {
		t.Fatal("the vendored kit must not hold its tests")
	}

	is, err := testissuer.Start(testissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	run := exec.Command(filepath.Join(service, "order-service"))
	run.Dir = t.TempDir()
	run.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"TLS_CERT=" + filepath.Join(is.PKIDir, "clients", "order-service.pem"),
		"TLS_KEY=" + filepath.Join(is.PKIDir, "clients", "order-service-key.pem"),
		"TLS_CA=" + filepath.Join(is.PKIDir, "ca.pem"),
		"AUTHZ_TOKEN_URL=" + is.TokenURL,
		"AUTHZ_JWKS_URL=" + is.JWKSURL,
	}
	got, err := run.CombinedOutput()
	t.Logf("./order-service: %s", got)
	if err != nil || string(got) != "order-service may call inventory-service with [stock:read]\n" {
		t.Fatalf("the consumer: %v %q", err, got)
	}
}

func goCache(t *testing.T) string {
	if c := os.Getenv("GOCACHE"); c != "" {
		return c
	}
	out, err := exec.Command("/usr/lib/go-1.22/bin/go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
