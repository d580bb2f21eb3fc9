package authz

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults and bounds of a Verifier.
const (
	// MaxLeeway is the largest clock skew a Verifier allows, and its default: a replica whose clock is
	// up to 30 s off still verifies fresh tokens.
	MaxLeeway = 30 * time.Second
	// DefaultMaxLifetime is authz's longest token lifetime (AUTHZ_TOKEN_TTL ≤ 900 s). Without a
	// MaxLifetime, a Verifier accepts exp − iat up to this plus the leeway.
	DefaultMaxLifetime = 15 * time.Minute
	// DefaultJWKSRefresh is the refresh interval when the JWKS answer has no Cache-Control max-age.
	DefaultJWKSRefresh = 5 * time.Minute
	// MinJWKSRefresh and MaxJWKSRefresh bound the interval a max-age asks for.
	MinJWKSRefresh = 30 * time.Second
	MaxJWKSRefresh = time.Hour
	// DefaultUnknownKIDCooldown is the least time between two fetches caused by tokens (an unknown kid,
	// or no key set loaded yet).
	DefaultUnknownKIDCooldown = 30 * time.Second
	// MaxTokenBytes: a longer token is refused before it is decoded.
	MaxTokenBytes = 8 << 10

	maxJWKSBytes = 1 << 20
)

// VerifierConfig says which tokens a Verifier accepts and where its keys come from: JWKSURL, or a
// static set (Keys, KeysFile or KeysEnv: a JWKS document or PEM public keys / certificates).
type VerifierConfig struct {
	// Issuer is authz's AUTHZ_ISSUER, compared exactly with iss.
	Issuer string
	// Audience is this service's own name, compared exactly with aud (which must be one string).
	Audience string

	// JWKSURL is where authz publishes its keys: the ops listener (http://…:9464/.well-known/jwks.json)
	// or the main listener over mTLS (https://…:8443/.well-known/jwks.json, with TLS).
	JWKSURL string
	// TLS is the client TLS configuration for an https JWKSURL (CA, and a client certificate for the
	// mTLS listener).
	TLS *tls.Config
	// Keys, KeysFile, KeysEnv: a static key set instead of JWKSURL (exactly one source may be set).
	// PEM keys get their RFC 7638 thumbprint as kid, as authz computes it. A set with private key
	// material, or no usable key for Algorithms, is refused (ERR_JWKS_INVALID).
	Keys     []byte
	KeysFile string
	KeysEnv  string

	// Algorithms the operator allows (default ["RS256"]; "ES256" may be added). Keys of other
	// algorithms are left out of the set; the algorithm of a token is always the one of its kid's key,
	// and a token whose header says otherwise is refused.
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat: 0 means the default, MaxLeeway (30 s); a
	// negative value means none; more than 30 s is a configuration error.
	Leeway time.Duration
	// MaxLifetime bounds exp − iat exactly (default DefaultMaxLifetime + the leeway: 15 min 30 s).
	MaxLifetime time.Duration
	// AllowNoPeer accepts a token when Verify gets no peer certificate (default false: refused with
	// ERR_BINDING_REQUIRED). Only for a service whose mTLS ends before it (a mesh sidecar): its tokens
	// are then bearer tokens. A peer that is given is always checked against cnf.x5t#S256.
	AllowNoPeer bool

	// UnknownKIDCooldown: at most one JWKS fetch per this interval is caused by tokens (default 30 s,
	// at most 30 s). It holds before the first successful load too.
	UnknownKIDCooldown time.Duration
	// FetchTimeout bounds one JWKS request (default 5 s).
	FetchTimeout time.Duration
	// StartWithoutKeys makes NewVerifier return even when the first JWKS load fails; it keeps trying in
	// the background, and refuses tokens (ERR_JWKS_UNAVAILABLE) until a load succeeds.
	StartWithoutKeys bool

	// OnJWKSFetch is told the outcome of every JWKS fetch (the kids in use afterwards, and the error of
	// a failed fetch) for metrics and tests. It must not block.
	OnJWKSFetch func(kids []string, err error)
	// Logger receives JWKS refresh failures and, from the guards, their denials (reason, method, path,
	// and sub and aud once a token's signature verified; never a token), bounded: a line at once per
	// reason and caller, then one count per DenialLogInterval while they go on. Default slog.Default().
	Logger *slog.Logger
	// DenialLogInterval is the length of one summary interval of the denial lines (default 10 s).
	DenialLogInterval time.Duration
	// Clock is for tests (default the system clock).
	Clock Clock
}

// Caller is who called, as established by a verified token.
type Caller struct {
	// Service is the calling service: sub, the identity of the certificate it got the token with (its
	// CN, or its SPIFFE ID with AUTHZ_IDENTITY=spiffe).
	Service string
	// Audience is aud: this service.
	Audience string
	// Scopes are the granted scopes (scope, split on spaces).
	Scopes []string
	// TokenID is jti.
	TokenID string
	// ExpiresAt is exp.
	ExpiresAt time.Time
}

// HasScope reports whether the caller's token carries scope.
func (c *Caller) HasScope(scope string) bool { return contains(c.Scopes, scope) }

// Verifier verifies authz tokens for one audience, offline, with keys from authz's JWKS (refreshed in
// the background until Close) or a static set. It is safe for concurrent use.
type Verifier struct {
	rules       claimRules
	algorithms  []string
	allowNoPeer bool
	logger      *slog.Logger
	clock       Clock
	parser      *jwt.Parser
	keys        keySource
	denials     *denialLog // shared by every guard of this verifier
}

// NewVerifier checks the configuration and loads the keys. With a JWKSURL, ctx bounds the first load
// only: refreshing runs in the background until Close. It fails when the first load fails, unless
// StartWithoutKeys is set.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("authz: VerifierConfig needs Issuer and Audience")
	}
	v := &Verifier{allowNoPeer: cfg.AllowNoPeer, logger: cfg.Logger, clock: clockOrSystem(cfg.Clock), algorithms: cfg.Algorithms}
	if v.logger == nil {
		v.logger = slog.Default()
	}
	v.denials = newDenialLog(v.logger, cfg.DenialLogInterval)
	leeway := cfg.Leeway
	switch {
	case leeway == 0:
		leeway = MaxLeeway
	case leeway < 0:
		leeway = 0
	case leeway > MaxLeeway:
		return nil, fmt.Errorf("authz: Leeway %v is over the maximum %v", cfg.Leeway, MaxLeeway)
	}
	maxLifetime := cfg.MaxLifetime
	if maxLifetime <= 0 {
		maxLifetime = DefaultMaxLifetime + leeway
	}
	v.rules = claimRules{issuer: cfg.Issuer, audience: cfg.Audience, leeway: seconds(leeway), maxLifetime: seconds(maxLifetime)}
	if len(v.algorithms) == 0 {
		v.algorithms = []string{RS256}
	}
	for _, alg := range v.algorithms {
		if alg != RS256 && alg != ES256 {
			return nil, fmt.Errorf("authz: algorithm %q is not supported (RS256, ES256)", alg)
		}
	}
	// golang-jwt decodes the token and checks the signature with the key keyFor chose; the kit judges
	// the header (keyFor) and the claims (checkClaims) itself, in the order the TypeScript SDK does.
	v.parser = jwt.NewParser(jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding())

	sources := 0
	for _, set := range []bool{cfg.JWKSURL != "", cfg.Keys != nil, cfg.KeysFile != "", cfg.KeysEnv != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("authz: set exactly one of JWKSURL, Keys, KeysFile, KeysEnv")
	}
	if cfg.JWKSURL == "" {
		data, err := staticKeyData(cfg)
		if err != nil {
			return nil, err
		}
		if v.keys, err = newStaticSource(data, v.algorithms); err != nil {
			return nil, err
		}
		return v, nil
	}
	cooldown, timeout := cfg.UnknownKIDCooldown, cfg.FetchTimeout
	if cooldown <= 0 {
		cooldown = DefaultUnknownKIDCooldown
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	remote, err := newRemoteSource(ctx, remoteOptions{
		url: cfg.JWKSURL, tls: cfg.TLS, algorithms: v.algorithms, cooldown: cooldown, fetchTimeout: timeout,
		logger: v.logger, onFetch: cfg.OnJWKSFetch, clock: v.clock,
	})
	if remote == nil {
		return nil, err
	}
	if err != nil && !cfg.StartWithoutKeys {
		remote.close()
		return nil, &VerifyError{Code: ErrCodeJWKSUnavailable, Err: fmt.Errorf("first JWKS load from %s: %w", remote.url, err)}
	}
	v.keys = remote
	return v, nil
}

func staticKeyData(cfg VerifierConfig) ([]byte, error) {
	switch {
	case cfg.KeysFile != "":
		b, err := os.ReadFile(cfg.KeysFile)
		if err != nil {
			return nil, fmt.Errorf("authz: KeysFile: %w", err)
		}
		return b, nil
	case cfg.KeysEnv != "":
		s, ok := os.LookupEnv(cfg.KeysEnv)
		if !ok || s == "" {
			return nil, fmt.Errorf("authz: KeysEnv: %s is not set", cfg.KeysEnv)
		}
		return []byte(s), nil
	}
	return cfg.Keys, nil
}

// Close stops the background refresh and closes idle connections. Verify keeps working with the keys
// it has. It returns nil; a nil *Verifier may be closed.
func (v *Verifier) Close() error {
	if v != nil && v.keys != nil {
		v.keys.close()
	}
	return nil
}

// KIDs lists the kids of the key set in use.
func (v *Verifier) KIDs() []string { return v.keys.kids() }

// Logger is the logger the guards report denials to.
func (v *Verifier) Logger() *slog.Logger { return v.logger }

// JWKSFetches counts JWKS requests made so far (all causes), for metrics and tests.
func (v *Verifier) JWKSFetches() int64 { return v.keys.fetches() }

// Refresh fetches the JWKS now, unless a fetch is already running (then it waits for that one). The
// last good set stays when it fails. It is a no-op for a static key set.
func (v *Verifier) Refresh(ctx context.Context) error { return v.keys.refresh(ctx) }

// Verify checks a token and its binding to the certificate it came over, and returns the caller.
// Errors are *VerifyError, whose Subject and Audience say whose token it was once its signature
// verified; answer them with a bare 401. The checks run in the order of conformance/README.md:
// structure, header, signature, claims, binding.
func (v *Verifier) Verify(ctx context.Context, token string, peer *x509.Certificate) (*Caller, error) {
	if token == "" {
		return nil, &VerifyError{Code: ErrCodeTokenMissing}
	}
	if len(token) > MaxTokenBytes {
		return nil, &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("token too long")}
	}
	if !compactJWS(token) {
		return nil, &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("not three base64url segments")}
	}
	claims := &tokenClaims{}
	tok, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.keyFor(ctx, t) })
	if err != nil {
		return nil, classify(tok, err)
	}
	c, err := claims.checkClaims(v.rules, v.clock.Now())
	if err != nil {
		return nil, err
	}
	if peer != nil {
		if !c.hasCnf {
			return nil, claims.whose(ErrCodeBindingRequired, "token carries no certificate binding")
		}
		if subtle.ConstantTimeCompare([]byte(c.cnfX5t), []byte(CertificateThumbprint(peer))) != 1 {
			return nil, claims.whose(ErrCodeBindingMismatch, "token is bound to another certificate")
		}
	} else if !v.allowNoPeer {
		return nil, claims.whose(ErrCodeBindingRequired, "no peer certificate to check the binding against")
	}
	return &Caller{Service: c.sub, Audience: c.aud, Scopes: c.scopes(), TokenID: c.jti, ExpiresAt: c.exp}, nil
}
