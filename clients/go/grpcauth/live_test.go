//go:build live

package grpcauth_test

import (
	"testing"

	"authz.internal/clients/go/internal/testissuer"
)

var live *testissuer.Issuer

func startLive() (func(), error) {
	var err error
	if live, err = testissuer.Start(testissuer.Options{}); err != nil {
		return nil, err
	}
	return live.Close, nil
}

// The interceptors and credentials against the real authz: its tokens, its refusals.
func TestLiveInterceptorsWithTheRealIssuer(t *testing.T) {
	iss = live
	defer func() { iss = fake }()
	for name, test := range map[string]func(*testing.T){
		"guard unary and stream calls":             TestInterceptorsGuardUnaryAndStreamCallsOverMTLS,
		"refuse a replayed token":                  TestInterceptorsRefuseATokenReplayedOverAnotherCertificate,
		"credentials need TLS and report refusals": TestPerRPCCredentialsNeedTLSAndReportRefusals,
	} {
		t.Run(name, test)
	}
}
