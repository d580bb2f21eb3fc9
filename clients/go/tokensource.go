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

// TokenSourceConfig says how a TokenSource reaches authz and paces its refreshes.
type TokenSourceConfig struct {
	// TokenURL is authz's token endpoint, e.g. https://authz.internal:8443/token.
	TokenURL string
	// TLS holds this service's client certificate (its CN is the identity authz puts in sub) and the CA
	// authz's server certificate chains to. Use the same certificate when calling the service: the
	// token is bound to it.
	TLS *tls.Config

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
}

// TokenSource gets tokens from authz over one mTLS HTTP client and caches one per (audience, scopes),
// refreshing it in the background before it expires. Concurrent callers share one request; while
// refreshes fail, the cached token is served until it expires. Safe for concurrent use.
type TokenSource struct {
	url     string
	client  *http.Client
	clock   Clock
	rand    func() float64
	cfg     TokenSourceConfig
	ctx     context.Context
	cancel  context.CancelFunc
	group   singleflight.Group
	mu      sync.Mutex
	entries map[string]*tokenEntry
	closed  bool
}

// NewTokenSource checks the configuration and builds the HTTP client; it makes no request.
func NewTokenSource(cfg TokenSourceConfig) (*TokenSource, error) {
	u, err := url.Parse(cfg.TokenURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("authz: TokenURL must be an https URL, got %q", cfg.TokenURL)
	}
	if cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetClientCertificate == nil) {
		return nil, errors.New("authz: TokenSourceConfig.TLS needs this service's client certificate")
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
	ts := &TokenSource{
		url:     u.String(),
		clock:   clockOrSystem(cfg.Clock),
		rand:    cfg.Rand,
		cfg:     cfg,
		entries: map[string]*tokenEntry{},
	}
	if ts.rand == nil {
		ts.rand = rand.Float64
	}
	ts.ctx, ts.cancel = context.WithCancel(context.Background())
	ts.client = &http.Client{
		// Direct connections only (no HTTP_PROXY), like the TypeScript SDK.
		Transport: &http.Transport{
			TLSClientConfig:     cfg.TLS.Clone(),
			TLSHandshakeTimeout: cfg.RequestTimeout,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		},
		// Never follow a redirect: the request carries this service's identity to one endpoint only.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return ts, nil
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

// Token returns a valid token for audience with these scopes (none: all the caller is granted): the
// cached one while it is valid (a due refresh then runs in the background), else a fresh one, shared
// by every caller waiting for it. ctx bounds this caller's wait, not the request others may share.
// With nothing valid cached and the last request failed, a call within the backoff gets that error
// without a new request (Retryable says whether it may pass by itself).
func (ts *TokenSource) Token(ctx context.Context, audience string, scopes ...string) (string, error) {
	if audience == "" {
		return "", errors.New("authz: Token needs an audience")
	}
	list := normaliseScopes(scopes)
	keyJSON, _ := json.Marshal(append([]string{audience}, list...)) // unambiguous, whatever the strings hold
	key := string(keyJSON)
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		return "", ErrClosed
	}
	e := ts.entries[key]
	if e == nil {
		e = &tokenEntry{key: key, audience: audience, scopes: list}
		ts.entries[key] = e
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
	ch := ts.group.DoChan(key, func() (any, error) { return ts.fetch(e, false) })
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
	for _, e := range ts.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	ts.mu.Unlock()
	ts.cancel()
	ts.client.CloseIdleConnections()
	return nil
}
