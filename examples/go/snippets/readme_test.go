package snippets

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's Go code is this package's code, verbatim: it compiles, and stays in step.
func TestTheREADMEShowsTheseSnippetsVerbatim(t *testing.T) {
	root := os.Getenv("AUTHZ_ROOT")
	if root == "" {
		t.Fatal("AUTHZ_ROOT is not set (run npm run test:go)")
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var sources strings.Builder
	for _, f := range []string{"caller.go", "gin_receiver.go", "grpc_receiver.go", "echo_receiver.go", "remote_policy.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources.Write(b)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 5 {
		t.Fatalf("the README has %d Go blocks, want the caller, Gin, gRPC, Echo and remote policy ones", len(blocks))
	}
	for _, b := range blocks {
		if !strings.Contains(sources.String(), string(b[1])) {
			t.Errorf("a README Go block is not in examples/go/snippets:\n%s", b[1])
		}
	}
}
