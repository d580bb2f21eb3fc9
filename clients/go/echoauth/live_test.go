//go:build live

package echoauth_test

import (
	"testing"

	"authz.internal/clients/go/internal/testissuer"
)

func TestLiveMiddlewareGuardsAnEchoService(t *testing.T) {
	iss, err := testissuer.Start(testissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	testissuer.RunHTTPGuardSuite(t, iss, echoGuard)
}
