//go:build live

package main

import (
	"strings"
	"testing"
)

// The demo runs authz itself (node): a live test, run by npm run test:go.
func TestLiveTheGoDemoRunsEndToEnd(t *testing.T) {
	var out strings.Builder
	ok, err := run(&out)
	if err != nil {
		t.Fatal(err)
	}
	if !ok || !strings.Contains(out.String(), "13 of 13 calls went as expected") {
		t.Fatalf("the demo went otherwise than expected:\n%s", out.String())
	}
}
