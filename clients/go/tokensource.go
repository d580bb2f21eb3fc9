package authz

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

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
	// RefreshBefore: never refresh later than this long before expiry (default 30 s).
	RefreshBefore time.Duration
	// RetryMin and RetryMax: exponential backoff of failed refreshes (defaults 1 s and 30 s).
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
		cfg.RefreshBefore = 30 * time.Second
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
	ts.mu.Unlock()
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

// Close stops the background refreshes and closes the connection pool. Token then fails with ErrClosed.
func (ts *TokenSource) Close() {
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
}

func (ts *TokenSource) refreshInBackground(e *tokenEntry) {
	ts.mu.Lock()
	closed := ts.closed
	ts.mu.Unlock()
	if closed {
		return
	}
	ts.group.DoChan(e.key, func() (any, error) { return ts.fetch(e, true) }) // outcome handled in fetch
}

// schedule arms e's timer; ts.mu is held.
func (ts *TokenSource) schedule(e *tokenEntry, at time.Time) {
	if ts.closed {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	e.timer = ts.clock.AfterFunc(at.Sub(ts.clock.Now()), func() { ts.refreshInBackground(e) })
}

// fetch asks authz for e's token, stores it and plans the next refresh; on failure it plans a retry
// with backoff while the cached token is still good.
func (ts *TokenSource) fetch(e *tokenEntry, background bool) (any, error) {
	requestedAt := ts.clock.Now()
	token, lifetime, retryAfter, err := ts.request(e)
	ts.mu.Lock()
	ev := RefreshEvent{Audience: e.audience, Scopes: e.scopes, Background: background, Err: err}
	if err == nil {
		planned := time.Duration(float64(lifetime) * ts.cfg.RefreshRatio * (1 + ts.cfg.Jitter*(2*ts.rand()-1)))
		refreshIn := max(min(planned, lifetime-ts.cfg.RefreshBefore), min(time.Second, lifetime/2))
		e.token = token
		e.expiresAt = requestedAt.Add(lifetime)
		e.refreshAt = requestedAt.Add(refreshIn)
		e.failures = 0
		e.retryAt = time.Time{}
		ev.ExpiresAt, ev.RefreshAt = e.expiresAt, e.refreshAt
		ts.schedule(e, e.refreshAt)
	} else {
		e.failures++
		delay := ts.cfg.RetryMin << min(e.failures-1, 20)
		if delay > ts.cfg.RetryMax || delay <= 0 {
			delay = ts.cfg.RetryMax
		}
		delay = delay/2 + time.Duration(ts.rand()*float64(delay/2)) // jitter: [delay/2, delay)
		delay = max(delay, retryAfter)
		e.retryAt = ts.clock.Now().Add(delay)
		// Keep trying while the cached token is still good, so callers never see the outage.
		if e.token != "" && e.retryAt.Before(e.expiresAt) {
			ev.RetryAt = e.retryAt
			ts.schedule(e, e.retryAt)
		}
	}
	ts.mu.Unlock()
	if ts.cfg.OnRefresh != nil {
		ts.cfg.OnRefresh(ev)
	}
	if err != nil {
		return nil, err
	}
	return token, nil
}

type tokenResponse struct {
	AccessToken string   `json:"access_token"`
	TokenType   string   `json:"token_type"`
	ExpiresIn   *float64 `json:"expires_in"`
	Error       string   `json:"error"`
}

// request does one POST /token. retryAfter is authz's Retry-After on a 429.
func (ts *TokenSource) request(e *tokenEntry) (token string, lifetime, retryAfter time.Duration, err error) {
	body := map[string]string{"grant_type": "client_credentials", "audience": e.audience}
	if len(e.scopes) > 0 {
		body["scope"] = strings.Join(e.scopes, " ")
	}
	payload, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(ts.ctx, ts.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url, bytes.NewReader(payload))
	if err != nil {
		return "", 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := ts.client.Do(req)
	if err != nil {
		if ts.ctx.Err() != nil {
			return "", 0, 0, ErrClosed
		}
		return "", 0, 0, fmt.Errorf("%w: %v", ErrIssuerUnreachable, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return "", 0, 0, fmt.Errorf("%w: %v", ErrIssuerUnreachable, err)
	}
	var tr tokenResponse
	if json.Unmarshal(raw, &tr) != nil {
		return "", 0, 0, fmt.Errorf("%w: %d with a body that is not JSON", ErrBadTokenResponse, res.StatusCode)
	}
	if res.StatusCode != http.StatusOK {
		if tr.Error == "" {
			return "", 0, 0, fmt.Errorf("%w: %d without an OAuth error", ErrBadTokenResponse, res.StatusCode)
		}
		if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 && secs <= 3600 {
			retryAfter = time.Duration(secs) * time.Second
		}
		return "", 0, retryAfter, &TokenError{Code: tr.Error, Status: res.StatusCode, Audience: e.audience}
	}
	if !looksLikeJWT(tr.AccessToken) || tr.ExpiresIn == nil || !(*tr.ExpiresIn >= 1 && *tr.ExpiresIn <= 86400) {
		return "", 0, 0, fmt.Errorf("%w: 200 without a usable access_token/expires_in", ErrBadTokenResponse)
	}
	return tr.AccessToken, time.Duration(*tr.ExpiresIn * float64(time.Second)), 0, nil
}

func looksLikeJWT(s string) bool {
	if len(s) == 0 || len(s) > MaxTokenBytes || strings.Count(s, ".") != 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// NewTransport returns an http.RoundTripper that adds X-Service-Token (a token for audience and
// scopes from ts) to every request and sends it with base. base must present the same client
// certificate as ts (the token is bound to it); nil means http.DefaultTransport. Requests that are not
// https are refused (ErrInsecureTransport): a token never travels in clear.
func NewTransport(base http.RoundTripper, ts *TokenSource, audience string, scopes ...string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &tokenTransport{base: base, ts: ts, audience: audience, scopes: append([]string(nil), scopes...)}
}

type tokenTransport struct {
	base     http.RoundTripper
	ts       *TokenSource
	audience string
	scopes   []string
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if req.URL.Scheme != "https" {
		return fail(ErrInsecureTransport)
	}
	token, err := t.ts.Token(req.Context(), t.audience, t.scopes...)
	if err != nil {
		return fail(err)
	}
	r := req.Clone(req.Context())
	r.Header.Set(ServiceTokenHeader, token)
	return t.base.RoundTrip(r)
}
