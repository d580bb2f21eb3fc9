package authz

import (
	"context"
	"fmt"
)

// keySource is where a Verifier's keys come from: a static set given at start, or authz's JWKS
// fetched over http(s) — a remote source that delegates every lookup to the static set it last
// fetched, as jose's remote key set wraps its local one (the TypeScript SDK's KeySource).
type keySource interface {
	// lookup is the key of kid, or a *VerifyError (ERR_TOKEN_UNKNOWN_KID, ERR_JWKS_UNAVAILABLE). A
	// remote source may refetch once for an unknown kid, within its cooldown.
	lookup(ctx context.Context, kid string) (*verificationKey, error)
	// kids lists the kids in use.
	kids() []string
	// refresh fetches now (a no-op for a static set).
	refresh(ctx context.Context) error
	// fetches counts the fetches made so far (0 for a static set).
	fetches() int64
	close()
}

// staticSource is a key set that never changes.
type staticSource struct{ set *keySet }

func (s *staticSource) lookup(_ context.Context, kid string) (*verificationKey, error) {
	if k, ok := s.set.byKID[kid]; ok {
		return k, nil
	}
	return nil, &VerifyError{Code: ErrCodeTokenUnknownKID, Err: fmt.Errorf("kid %q is not in the key set", kid)}
}

func (s *staticSource) kids() []string                { return s.set.kids() }
func (s *staticSource) refresh(context.Context) error { return nil }
func (s *staticSource) fetches() int64                { return 0 }
func (s *staticSource) close()                        {}

// newStaticSource builds the source of a static set (Keys, KeysFile, KeysEnv): refused with
// ERR_JWKS_INVALID when it holds private key material or no usable key for the allowed algorithms.
func newStaticSource(data []byte, algorithms []string) (*staticSource, error) {
	set, err := parseKeys(data)
	if err != nil {
		return nil, &VerifyError{Code: ErrCodeJWKSInvalid, Err: fmt.Errorf("static keys: %w", err)}
	}
	allowed := set.allowing(algorithms)
	if len(allowed.byKID) == 0 {
		return nil, &VerifyError{Code: ErrCodeJWKSInvalid, Err: fmt.Errorf("static keys: no usable key for %v", algorithms)}
	}
	return &staticSource{set: allowed}, nil
}
