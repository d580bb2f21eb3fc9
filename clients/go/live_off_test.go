//go:build !live

package authz_test

// Without -tags live, no real issuer: the unit tests run on the fake alone.
func startLive() (func(), error) { return func() {}, nil }
