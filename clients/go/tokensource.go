package authz

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// testHookBeforeFlight runs between a Token call's look at the cache and its joining (or starting) a
// flight: tests make another flight end there.
var testHookBeforeFlight func()

// DefaultRefreshBefore is the refresh margin: a token is refreshed no later than this long before it
// expires (the TypeScript SDK's REFRESH_BEFORE_MS).
const DefaultRefreshBefore = 60 * time.Second

// DefaultInvalidateCooldown is the shortest interval between two invalidations of one key that drop a
// token (the TypeScript SDK's INVALIDATE_COOLDOWN_MS).
const DefaultInvalidateCooldown = 30 * time.Second

// TokenSourceConfig says how a TokenSource reaches authz and paces its refreshes.
type TokenSourceConfig struct {
	// TokenURL is authz's token endpoint, e.g. https://authz.internal:8443/token.
	TokenURL string
	// TLS holds this service's client certificate (its CN or SPIFFE ID is the identity authz puts in
	// sub) and the CA authz's server certificate chains to, fixed. Use the same certificate when calling
	// the service: the token is bound to it. Give this or Files.
	TLS *tls.Config
	// Files is this service's certificate, key and CA bundle from files, followed as they are renewed:
	// after a renewal, new tokens are fetched with the new certificate and the old certificate's tokens
	// are dropped; NewTransport and grpcauth.Dial open new connections with it. The TokenSource does not
	// close it.
	Files *TLSFiles

	// RequestTimeout bounds one token request (default 5 s).
	RequestTimeout time.Duration
	// RefreshRatio: refresh at this fraction of the lifetime (default 0.5).
	RefreshRatio float64
	// Jitter: relative jitter on the refresh instant (default 0.1, ±10 %).
	Jitter float64
	// RefreshBefore: never refresh later than this long before expiry (default 60 s, the TypeScript
	// SDK's refreshBeforeMs): room for two retries at the backoff's cap before the cached token dies.
	RefreshBefore time.Duration
	// RetryMin and RetryMax: exponential backoff of failed requests (defaults 1 s and 30 s, jittered,
	// and never sooner than authz's Retry-After). With no valid token cached, a Token call within the
	// backoff gets the last error at once, without a request: an outage or a refusal is not retried
	// at the rate callers arrive.
	RetryMin, RetryMax time.Duration

	// InvalidateCooldown: Invalidate drops a key's token at most once per this interval (default 30 s),
	// so a callee that answers 401 to every token costs authz at most one request per key and interval.
	InvalidateCooldown time.Duration

	// OnRefresh is told about every token request and its outcome (metrics, logs, tests). It must not
	// block.
	OnRefresh func(RefreshEvent)
	// Clock and Rand are for tests.
	Clock Clock
	Rand  func() float64
}

// RefreshEvent is one token request's outcome.
type RefreshEvent struct {
	Audience string
	Scopes   []string
	// Background: a scheduled refresh, not a caller waiting for a token.
	Background bool
	// Err is nil on success.
	Err error
	// ExpiresAt and RefreshAt: the new token's, on success.
	ExpiresAt, RefreshAt time.Time
	// RetryAt: when the next attempt is scheduled after a failure (zero: none; the cached token, if
	// any, will have expired by then).
	RetryAt time.Time
}

type tokenEntry struct {
	gen       *tokenGen
	key       string
	audience  string
	scopes    []string
	token     string
	expiresAt time.Time
	refreshAt time.Time
	failures  int
	retryAt   time.Time
	lastErr   error // why the last request failed, until one succeeds
	timer     Timer
	// invalidatedAt: when Invalidate last dropped this key's token.
	invalidatedAt time.Time
}

// tokenGen is one set of TLS material, its client to authz and the tokens fetched with it.
type tokenGen struct {
	material *TLSMaterial
	client   *http.Client
	group    singleflight.Group
	entries  map[string]*tokenEntry
	// retired: a renewal replaced its material; its tokens are dropped and it schedules no refresh.
	retired bool
}

// TokenSource gets tokens from authz over one mTLS HTTP client and caches one per (audience, scopes),
// refreshing it in the background before it expires. Concurrent callers share one request; while
// refreshes fail, the cached token is served until it expires. With Files, each certificate is a
// generation of its own (client and cache); a renewal drops the old certificate's tokens. Safe for
// concurrent use.
type TokenSource struct {
	url    string
	clock  Clock
	rand   func() float64
	cfg    TokenSourceConfig
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	gen    *tokenGen
	closed bool
}

// NewTokenSource checks the configuration and builds the HTTP client; it makes no request.
func NewTokenSource(cfg TokenSourceConfig) (*TokenSource, error) {
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("authz: TokenURL must be an https URL, got %q", cfg.TokenURL)
	}
	var material *TLSMaterial
	switch {
	case cfg.Files != nil && cfg.TLS != nil:
		return nil, errors.New("authz: TokenSourceConfig: give TLS or Files, not both")
	case cfg.Files != nil:
		material = cfg.Files.Material()
	case cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetClientCertificate == nil):
		return nil, errors.New("authz: TokenSourceConfig.TLS needs this service's client certificate (or give Files)")
	default:
		material = materialOf(cfg.TLS)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.RefreshRatio == 0 {
		cfg.RefreshRatio = 0.5
	}
	if !(cfg.RefreshRatio > 0 && cfg.RefreshRatio < 1) {
		return nil, errors.New("authz: RefreshRatio must be between 0 and 1")
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.1
	}
	if cfg.Jitter < 0 || cfg.Jitter >= 1 {
		return nil, errors.New("authz: Jitter must be in [0, 1)")
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = DefaultRefreshBefore
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	if cfg.InvalidateCooldown <= 0 {
		cfg.InvalidateCooldown = DefaultInvalidateCooldown
	}
	ts := &TokenSource{
		url:   u.String(),
		clock: clockOrSystem(cfg.Clock),
		rand:  cfg.Rand,
		cfg:   cfg,
	}
	if ts.rand == nil {
		ts.rand = rand.Float64
	}
	ts.ctx, ts.cancel = context.WithCancel(context.Background())
	ts.gen = ts.newGen(material)
	return ts, nil
}

// httpClientFor is the mTLS client to authz of one set of material.
func (ts *TokenSource) httpClientFor(m *TLSMaterial, keepAlive bool) *http.Client {
	return &http.Client{
		// Direct connections only (no HTTP_PROXY), like the TypeScript SDK.
		Transport: &http.Transport{
			TLSClientConfig:     m.ClientConfig(),
			TLSHandshakeTimeout: ts.cfg.RequestTimeout,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			DisableKeepAlives:   !keepAlive,
		},
		// Never follow a redirect: the request carries this service's identity to one endpoint only.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (ts *TokenSource) newGen(m *TLSMaterial) *tokenGen {
	return &tokenGen{material: m, client: ts.httpClientFor(m, true), entries: map[string]*tokenEntry{}}
}

// currentLocked is the generation of the material in force: after a renewal of Files, a new one, and
// the old one's tokens dropped (its refreshes stopped, its idle connections closed). ts.mu is held.
func (ts *TokenSource) currentLocked() *tokenGen {
	if ts.cfg.Files == nil || ts.closed {
		return ts.gen
	}
	if m := ts.cfg.Files.Material(); m != ts.gen.material {
		old := ts.gen
		ts.gen = ts.newGen(m)
		old.retired = true
		for _, e := range old.entries {
			if e.timer != nil {
				e.timer.Stop()
			}
		}
		old.entries = map[string]*tokenEntry{}
		old.client.CloseIdleConnections()
	}
	return ts.gen
}

// Material is the TLS material in force: what a connection carrying this source's tokens must present
// (the tokens are bound to its certificate). With Files it changes when the files are renewed.
func (ts *TokenSource) Material() *TLSMaterial {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.currentLocked().material
}

func normaliseScopes(scopes []string) []string {
	set := map[string]bool{}
	out := []string{}
	for _, s := range scopes {
		for _, one := range strings.Split(s, " ") {
			if one != "" && !set[one] {
				set[one] = true
				out = append(out, one)
			}
		}
	}
	sort.Strings(out)
	return out
}

// keyOf is a cache key: unambiguous, whatever the strings hold.
func keyOf(audience string, scopes []string) string {
	keyJSON, _ := json.Marshal(append([]string{audience}, scopes...))
	return string(keyJSON)
}

// Token returns a valid token for audience with these scopes (none: all the caller is granted): the
// cached one while it is valid (a due refresh then runs in the background), else a fresh one, shared
// by every caller waiting for it. ctx bounds this caller's wait, not the request others may share.
// With nothing valid cached and the last request failed, a call within the backoff gets that error
// without a new request (Retryable says whether it may pass by itself). The token is bound to the
// certificate in force (Material) when it returns.
func (ts *TokenSource) Token(ctx context.Context, audience string, scopes ...string) (string, error) {
	// A renewal while the request was in flight: that token is bound to the old certificate; ask again
	// (at most twice more: renewals are minutes apart).
	for attempt := 0; ; attempt++ {
		ts.mu.Lock()
		gen := ts.currentLocked()
		ts.mu.Unlock()
		token, err := ts.tokenOf(ctx, gen, audience, scopes)
		ts.mu.Lock()
		same := gen == ts.currentLocked()
		ts.mu.Unlock()
		if err != nil || same || attempt == 2 {
			return token, err
		}
	}
}

// TokenFor returns a token bound to m's certificate, for a connection opened with m: the cached token
// when m is the material in force; for material a renewal replaced (a connection opened just before
// it), one request with m, not cached.
func (ts *TokenSource) TokenFor(ctx context.Context, m *TLSMaterial, audience string, scopes ...string) (string, error) {
	if m == nil {
		return "", errors.New("authz: TokenFor needs TLS material")
	}
	ts.mu.Lock()
	gen, closed := ts.currentLocked(), ts.closed
	ts.mu.Unlock()
	if gen.material == m {
		return ts.tokenOf(ctx, gen, audience, scopes)
	}
	if closed {
		return "", ErrClosed
	}
	if audience == "" {
		return "", errors.New("authz: Token needs an audience")
	}
	client := ts.httpClientFor(m, false)
	defer client.CloseIdleConnections()
	token, _, err := ts.request(client, audience, normaliseScopes(scopes))
	return token, err
}

// Invalidate drops the cached token of (audience, scopes): the next Token for that key fetches a new
// one — after a `keys revoke`, say, when a callee answers 401 to a token that is still fresh. At most
// once per key per InvalidateCooldown (30 s). It reports whether the next Token returns another token:
// true when it dropped it (or none was cached), false when the cooldown kept it.
func (ts *TokenSource) Invalidate(audience string, scopes ...string) bool {
	return ts.InvalidateToken("", audience, scopes...)
}

// InvalidateToken is Invalidate for the token a callee refused: it drops the cached token only if that
// is still token ("" for any), so that many requests refused with one token drop it once. It reports
// whether the next Token returns a token other than the refused one: true when it dropped it or it was
// replaced already, false when the cooldown kept it. NewTransport and grpcauth.Dial call it on a 401.
func (ts *TokenSource) InvalidateToken(token, audience string, scopes ...string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	e := ts.currentLocked().entries[keyOf(audience, normaliseScopes(scopes))]
	if e == nil || e.token == "" || (token != "" && e.token != token) {
		return true
	}
	now := ts.clock.Now()
	if !e.invalidatedAt.IsZero() && now.Sub(e.invalidatedAt) < ts.cfg.InvalidateCooldown {
		return false
	}
	e.invalidatedAt = now
	e.token, e.expiresAt, e.refreshAt = "", time.Time{}, time.Time{}
	if e.timer != nil {
		e.timer.Stop()
	}
	return true
}

// tokenOf is Token for one generation.
func (ts *TokenSource) tokenOf(ctx context.Context, gen *tokenGen, audience string, scopes []string) (string, error) {
	if audience == "" {
		return "", errors.New("authz: Token needs an audience")
	}
	list := normaliseScopes(scopes)
	key := keyOf(audience, list)
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		return "", ErrClosed
	}
	e := gen.entries[key]
	if e == nil {
		e = &tokenEntry{gen: gen, key: key, audience: audience, scopes: list}
		gen.entries[key] = e
	}
	now := ts.clock.Now()
	if e.token != "" && now.Before(e.expiresAt) {
		token := e.token
		due := !now.Before(e.refreshAt) && !now.Before(e.retryAt)
		ts.mu.Unlock()
		if due {
			ts.refreshInBackground(e)
		}
		return token, nil
	}
	if e.lastErr != nil && now.Before(e.retryAt) {
		err := e.lastErr
		ts.mu.Unlock()
		return "", err
	}
	ts.mu.Unlock()
	if testHookBeforeFlight != nil {
		testHookBeforeFlight()
	}
	ch := gen.group.DoChan(key, func() (any, error) { return ts.fetch(e, false) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Close stops the background refreshes and closes the connection pool. Token then fails with
// ErrClosed. It returns nil, and may be called more than once.
func (ts *TokenSource) Close() error {
	ts.mu.Lock()
	ts.closed = true
	for _, e := range ts.gen.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	gen := ts.gen
	ts.mu.Unlock()
	ts.cancel()
	gen.client.CloseIdleConnections()
	return nil
}
