//go:build !live

package grpcauth_test

// Without -tags live, the fake alone.
func startLive() (func(), error) { return func() {}, nil }
