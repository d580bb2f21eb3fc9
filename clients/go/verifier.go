package authz

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults and bounds of a Verifier.
const (
	// MaxLeeway is the largest clock skew a Verifier allows, and its default: a replica whose clock is
	// up to 30 s off still verifies fresh tokens.
	MaxLeeway = 30 * time.Second
	// DefaultMaxLifetime bounds exp − iat (plus the leeway): authz issues tokens of 5 to 15 minutes.
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
	// PEM keys get their RFC 7638 thumbprint as kid, as authz computes it.
	Keys     []byte
	KeysFile string
	KeysEnv  string

	// Algorithms the operator allows (default ["RS256"]; "ES256" may be added). The algorithm of a
	// token is always the one of its kid's JWKS entry; a token whose header says otherwise is refused.
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat: 0 means the default, MaxLeeway (30 s); a
	// negative value means none; more than 30 s is a configuration error.
	Leeway time.Duration
	// MaxLifetime bounds exp − iat (default 15 min); the leeway is added to it.
	MaxLifetime time.Duration
	// AllowNoPeer accepts a token when Verify gets no peer certificate (default: refused). A peer that
	// is given is always checked against cnf.x5t#S256.
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
	// Logger receives JWKS refresh failures and, from the middlewares, every denial (sub, aud, method,
	// path, reason; never a token). Default slog.Default().
	Logger *slog.Logger
	// Clock is for tests (default the system clock).
	Clock Clock
}

// Caller is who called, as established by a verified token.
type Caller struct {
	// Service is the calling service: sub, the CN of the certificate it got the token with.
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
	issuer, audience string
	algorithms       []string
	leeway           time.Duration
	maxLifetime      time.Duration
	allowNoPeer      bool
	cooldown         time.Duration
	fetchTimeout     time.Duration
	logger           *slog.Logger
	onFetch          func([]string, error)
	clock            Clock
	parser           *jwt.Parser

	keys atomic.Pointer[keySet]

	// JWKS URL only.
	url    string
	client *http.Client
	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu         sync.Mutex
	lastFetch  time.Time // start of the last fetch attempt, whatever caused it
	inflight   chan struct{}
	etag       string
	failures   int
	timer      Timer
	closed     bool
	fetchCount atomic.Int64
}

// NewVerifier checks the configuration and loads the keys. With a JWKSURL, ctx bounds the first load
// only: refreshing runs in the background until Close. It fails when the first load fails, unless
// StartWithoutKeys is set.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("authz: VerifierConfig needs Issuer and Audience")
	}
	v := &Verifier{
		issuer:       cfg.Issuer,
		audience:     cfg.Audience,
		allowNoPeer:  cfg.AllowNoPeer,
		logger:       cfg.Logger,
		onFetch:      cfg.OnJWKSFetch,
		clock:        clockOrSystem(cfg.Clock),
		maxLifetime:  cfg.MaxLifetime,
		cooldown:     cfg.UnknownKIDCooldown,
		fetchTimeout: cfg.FetchTimeout,
	}
	if v.logger == nil {
		v.logger = slog.Default()
	}
	switch {
	case cfg.Leeway == 0:
		v.leeway = MaxLeeway
	case cfg.Leeway < 0:
		v.leeway = 0
	case cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("authz: Leeway %v is over the maximum %v", cfg.Leeway, MaxLeeway)
	default:
		v.leeway = cfg.Leeway
	}
	if v.maxLifetime <= 0 {
		v.maxLifetime = DefaultMaxLifetime
	}
	if v.cooldown <= 0 {
		v.cooldown = DefaultUnknownKIDCooldown
	}
	if v.fetchTimeout <= 0 {
		v.fetchTimeout = 5 * time.Second
	}
	v.algorithms = cfg.Algorithms
	if len(v.algorithms) == 0 {
		v.algorithms = []string{RS256}
	}
	for _, alg := range v.algorithms {
		if alg != RS256 && alg != ES256 {
			return nil, fmt.Errorf("authz: algorithm %q is not supported (RS256, ES256)", alg)
		}
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.algorithms),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.clock.Now),
		jwt.WithStrictDecoding(),
	)

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
		data := cfg.Keys
		switch {
		case cfg.KeysFile != "":
			b, err := os.ReadFile(cfg.KeysFile)
			if err != nil {
				return nil, fmt.Errorf("authz: KeysFile: %w", err)
			}
			data = b
		case cfg.KeysEnv != "":
			s, ok := os.LookupEnv(cfg.KeysEnv)
			if !ok || s == "" {
				return nil, fmt.Errorf("authz: KeysEnv: %s is not set", cfg.KeysEnv)
			}
			data = []byte(s)
		}
		set, err := parseKeys(data)
		if err != nil {
			return nil, fmt.Errorf("authz: static keys: %w", err)
		}
		v.keys.Store(set)
		return v, nil
	}

	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("authz: JWKSURL must be an http(s) URL, got %q", cfg.JWKSURL)
	}
	v.url = u.String()
	// Direct connections only: an HTTP_PROXY from the environment must not sit between this service
	// and the keys it trusts (the ops JWKS is plain http inside the cluster).
	transport := &http.Transport{
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: v.fetchTimeout,
	}
	if cfg.TLS != nil {
		transport.TLSClientConfig = cfg.TLS.Clone()
	}
	v.client = &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())

	// The first load, bounded by ctx; then the background loop takes over.
	v.mu.Lock()
	v.lastFetch = v.clock.Now()
	v.mu.Unlock()
	next, err := v.fetch(ctx)
	if err != nil && !cfg.StartWithoutKeys {
		v.Close()
		return nil, &VerifyError{Code: ErrCodeJWKSUnavailable, Err: fmt.Errorf("first JWKS load from %s: %w", v.url, err)}
	}
	v.afterFetch(next, err)
	return v, nil
}

// Close stops the background refresh and closes idle connections. Verify keeps working with the keys
// it has.
func (v *Verifier) Close() {
	v.mu.Lock()
	v.closed = true
	if v.timer != nil {
		v.timer.Stop()
	}
	v.mu.Unlock()
	if v.cancel != nil {
		v.cancel()
		v.client.CloseIdleConnections()
	}
}

// KIDs lists the kids of the key set in use.
func (v *Verifier) KIDs() []string { return v.keys.Load().kids() }

// Logger is the logger the middlewares report denials to.
func (v *Verifier) Logger() *slog.Logger { return v.logger }

// JWKSFetches counts JWKS requests made so far (all causes), for metrics and tests.
func (v *Verifier) JWKSFetches() int64 { return v.fetchCount.Load() }

// Refresh fetches the JWKS now, unless a fetch is already running (then it waits for that one). The
// last good set stays when it fails. It is a no-op for a static key set.
func (v *Verifier) Refresh(ctx context.Context) error {
	if v.url == "" {
		return nil
	}
	return v.refetch(ctx, false)
}

// Verify checks a token and its binding to the certificate it came over, and returns the caller.
// Errors are *VerifyError; answer them with a bare 401.
func (v *Verifier) Verify(ctx context.Context, token string, peer *x509.Certificate) (*Caller, error) {
	if token == "" {
		return nil, &VerifyError{Code: ErrCodeTokenMissing}
	}
	if len(token) > MaxTokenBytes {
		return nil, &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("token too long")}
	}
	if peer == nil && !v.allowNoPeer {
		return nil, &VerifyError{Code: ErrCodeBindingRequired, Err: errors.New("no peer certificate to check the binding against")}
	}
	claims := &tokenClaims{maxLifetime: v.maxLifetime, leeway: v.leeway}
	tok, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.keyFor(ctx, t) })
	if err != nil {
		return nil, v.classify(tok, err)
	}
	if peer != nil {
		if !claims.hasCnf {
			return nil, &VerifyError{Code: ErrCodeBindingRequired, Err: errors.New("token carries no certificate binding")}
		}
		if subtle.ConstantTimeCompare([]byte(claims.cnfX5t), []byte(CertificateThumbprint(peer))) != 1 {
			return nil, &VerifyError{Code: ErrCodeBindingMismatch, Err: errors.New("token is bound to another certificate")}
		}
	}
	return &Caller{
		Service:   claims.sub,
		Audience:  claims.aud,
		Scopes:    claims.scopes(),
		TokenID:   claims.jti,
		ExpiresAt: claims.exp.Time,
	}, nil
}

// keyFor is the jwt.Keyfunc: header checks, then the key of the kid, whose JWKS entry alone decides
// the algorithm.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	typ, _ := t.Header["typ"].(string)
	if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
		return nil, &VerifyError{Code: ErrCodeTokenTyp, Err: errors.New("typ is not at+jwt")}
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, &VerifyError{Code: ErrCodeTokenMalformed, Err: errors.New("crit header parameters are not supported")}
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, &VerifyError{Code: ErrCodeTokenUnknownKID, Err: errors.New("no kid")}
	}
	alg, _ := t.Header["alg"].(string)
	key, err := v.lookup(ctx, kid)
	if err != nil {
		return nil, err
	}
	if key.alg != alg || !contains(v.algorithms, key.alg) {
		return nil, &VerifyError{Code: ErrCodeTokenAlg, Err: fmt.Errorf("header alg %q, but kid %q is an %s key", alg, kid, key.alg)}
	}
	return key.key, nil
}

func (v *Verifier) lookup(ctx context.Context, kid string) (*verificationKey, error) {
	if set := v.keys.Load(); set != nil {
		if k, ok := set.byKID[kid]; ok {
			return k, nil
		}
	}
	if v.url == "" {
		return nil, &VerifyError{Code: ErrCodeTokenUnknownKID, Err: fmt.Errorf("kid %q is not in the static key set", kid)}
	}
	// An unknown kid (or no set yet): refetch — authz may have just published it — but at most once
	// per cooldown, so a flood of forged kids cannot become a flood of fetches.
	hadKeys := v.keys.Load() != nil
	if err := v.refetch(ctx, true); err != nil && !hadKeys && v.keys.Load() == nil {
		return nil, &VerifyError{Code: ErrCodeJWKSUnavailable, Err: err}
	}
	set := v.keys.Load()
	if set == nil {
		return nil, &VerifyError{Code: ErrCodeJWKSUnavailable, Err: errors.New("no JWKS loaded yet")}
	}
	if k, ok := set.byKID[kid]; ok {
		return k, nil
	}
	return nil, &VerifyError{Code: ErrCodeTokenUnknownKID, Err: fmt.Errorf("kid %q is not in the JWKS", kid)}
}

var errCooldown = errors.New("JWKS fetched too recently")

// refetch joins the fetch in flight, or starts one (when byToken, only if the cooldown has passed).
func (v *Verifier) refetch(ctx context.Context, byToken bool) error {
	v.mu.Lock()
	wait := v.inflight
	if wait == nil {
		if v.closed {
			v.mu.Unlock()
			return errors.New("verifier closed")
		}
		if byToken && v.clock.Now().Sub(v.lastFetch) < v.cooldown {
			v.mu.Unlock()
			return errCooldown
		}
		done := make(chan struct{})
		v.inflight = done
		v.lastFetch = v.clock.Now()
		v.mu.Unlock()
		go func() {
			next, err := v.fetch(v.ctx)
			v.afterFetch(next, err)
			v.mu.Lock()
			v.inflight = nil
			v.mu.Unlock()
			close(done)
		}()
		wait = done
	} else {
		v.mu.Unlock()
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// afterFetch records the outcome and schedules the next background fetch.
func (v *Verifier) afterFetch(next time.Duration, err error) {
	if v.onFetch != nil {
		defer v.onFetch(v.KIDs(), err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	if err != nil {
		v.failures++
		// Back off 1 s, 2 s, 4 s … up to MinJWKSRefresh while it fails; the last good set stays.
		next = time.Second << min(v.failures-1, 5)
		if next > MinJWKSRefresh {
			next = MinJWKSRefresh
		}
		v.logger.Warn("authz: JWKS fetch failed; the key set in use (if any) stays", "event", "jwks_fetch_failed", "url", v.url, "error", err.Error(), "retry_in", next.String())
	} else {
		v.failures = 0
	}
	if v.timer != nil {
		v.timer.Stop()
	}
	v.timer = v.clock.AfterFunc(next, func() { _ = v.refetch(v.ctx, false) })
}

// fetch does one JWKS request and returns how long to wait before the next one.
func (v *Verifier) fetch(ctx context.Context) (time.Duration, error) {
	v.fetchCount.Add(1)
	ctx, cancel := context.WithTimeout(ctx, v.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	v.mu.Lock()
	etag := v.etag
	v.mu.Unlock()
	if etag != "" && v.keys.Load() != nil {
		req.Header.Set("If-None-Match", etag)
	}
	res, err := v.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	next := refreshInterval(res.Header.Get("Cache-Control"))
	if res.StatusCode == http.StatusNotModified && v.keys.Load() != nil {
		return next, nil
	}
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("JWKS answered %d", res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		return 0, err
	}
	if len(body) > maxJWKSBytes {
		return 0, errors.New("JWKS larger than 1 MiB")
	}
	set, err := parseJWKS(body)
	if err != nil {
		return 0, err
	}
	v.keys.Store(set)
	v.mu.Lock()
	v.etag = res.Header.Get("ETag")
	v.mu.Unlock()
	return next, nil
}

// refreshInterval is the JWKS answer's max-age, bounded to [MinJWKSRefresh, MaxJWKSRefresh];
// DefaultJWKSRefresh without one. no-store / no-cache mean "as often as allowed".
func refreshInterval(cacheControl string) time.Duration {
	interval := DefaultJWKSRefresh
	for _, directive := range strings.Split(cacheControl, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "max-age":
			if secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && secs >= 0 {
				if secs > int64(MaxJWKSRefresh/time.Second) {
					secs = int64(MaxJWKSRefresh / time.Second)
				}
				interval = time.Duration(secs) * time.Second
			}
		case "no-store", "no-cache":
			return MinJWKSRefresh
		}
	}
	return max(MinJWKSRefresh, min(interval, MaxJWKSRefresh))
}

// classify turns a golang-jwt error into a VerifyError with a stable code.
func (v *Verifier) classify(tok *jwt.Token, err error) error {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve
	}
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return &VerifyError{Code: ErrCodeTokenMalformed, Err: err}
	}
	if tok != nil && tok.Header != nil {
		if alg, _ := tok.Header["alg"].(string); !contains(v.algorithms, alg) {
			return &VerifyError{Code: ErrCodeTokenAlg, Err: fmt.Errorf("alg %q is not allowed", alg)}
		}
	}
	table := []struct {
		is   error
		code VerifyCode
	}{
		{jwt.ErrTokenSignatureInvalid, ErrCodeTokenSignature},
		{jwt.ErrTokenExpired, ErrCodeTokenExpired},
		{jwt.ErrTokenNotValidYet, ErrCodeTokenNotYetValid},
		{jwt.ErrTokenUsedBeforeIssued, ErrCodeTokenIssuedAt},
		{jwt.ErrTokenInvalidAudience, ErrCodeTokenAudience},
		{jwt.ErrTokenInvalidIssuer, ErrCodeTokenIssuer},
		{jwt.ErrTokenRequiredClaimMissing, ErrCodeTokenClaims},
	}
	for _, row := range table {
		if errors.Is(err, row.is) {
			return &VerifyError{Code: row.code, Err: err}
		}
	}
	return &VerifyError{Code: ErrCodeTokenMalformed, Err: err}
}
