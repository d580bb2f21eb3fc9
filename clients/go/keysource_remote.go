package authz

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// remoteSource is authz's JWKS, fetched over http(s): at start, then as its Cache-Control max-age says
// (bounded), and once for an unknown kid — at most once per cooldown, before the first successful load
// too. A failed fetch keeps the last good set and is retried with backoff. Lookups go to the static
// set of the last good fetch.
type remoteSource struct {
	remoteOptions
	client *http.Client
	ctx    context.Context // ends at close
	cancel context.CancelFunc

	current    atomic.Pointer[staticSource]
	fetchCount atomic.Int64

	mu        sync.Mutex
	lastFetch time.Time // start of the last fetch attempt, whatever caused it
	inflight  chan struct{}
	etag      string
	failures  int
	timer     Timer
	closed    bool
}

type remoteOptions struct {
	url          string
	tls          *tls.Config
	algorithms   []string
	cooldown     time.Duration
	fetchTimeout time.Duration
	logger       *slog.Logger
	onFetch      func([]string, error)
	clock        Clock
}

// newRemoteSource checks the URL and makes the first load, bounded by ctx; the background refresh then
// takes over. The first load's error is returned with the source (which keeps trying).
func newRemoteSource(ctx context.Context, o remoteOptions) (*remoteSource, error) {
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("authz: JWKSURL must be an http(s) URL, got %q", o.url)
	}
	o.url = u.String()
	r := &remoteSource{remoteOptions: o}
	// Direct connections only: an HTTP_PROXY from the environment must not sit between this service
	// and the keys it trusts (the ops JWKS is plain http inside the cluster).
	transport := &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: o.fetchTimeout}
	if o.tls != nil {
		transport.TLSClientConfig = o.tls.Clone()
	}
	r.client = &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.mu.Lock()
	r.lastFetch = r.clock.Now()
	r.mu.Unlock()
	next, err := r.fetch(ctx)
	r.afterFetch(next, err)
	return r, err
}

func (r *remoteSource) kids() []string {
	if cur := r.current.Load(); cur != nil {
		return cur.kids()
	}
	return nil
}

func (r *remoteSource) fetches() int64 { return r.fetchCount.Load() }

func (r *remoteSource) close() {
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	r.cancel()
	r.client.CloseIdleConnections()
}

func (r *remoteSource) refresh(ctx context.Context) error { return r.refetch(ctx, false) }

func (r *remoteSource) lookup(ctx context.Context, kid string) (*verificationKey, error) {
	if cur := r.current.Load(); cur != nil {
		if k, ok := cur.set.byKID[kid]; ok {
			return k, nil
		}
	}
	// An unknown kid (or no set yet): refetch — authz may have just published it — but at most once
	// per cooldown, so a flood of forged kids cannot become a flood of fetches.
	hadKeys := r.current.Load() != nil
	if err := r.refetch(ctx, true); err != nil && !hadKeys && r.current.Load() == nil {
		return nil, &VerifyError{Code: ErrCodeJWKSUnavailable, Err: err}
	}
	cur := r.current.Load()
	if cur == nil {
		return nil, &VerifyError{Code: ErrCodeJWKSUnavailable, Err: errors.New("no JWKS loaded yet")}
	}
	return cur.lookup(ctx, kid)
}

var errCooldown = errors.New("JWKS fetched too recently")

// refetch joins the fetch in flight, or starts one (when byToken, only if the cooldown has passed).
func (r *remoteSource) refetch(ctx context.Context, byToken bool) error {
	r.mu.Lock()
	wait := r.inflight
	if wait == nil {
		if r.closed {
			r.mu.Unlock()
			return errors.New("verifier closed")
		}
		if byToken && r.clock.Now().Sub(r.lastFetch) < r.cooldown {
			r.mu.Unlock()
			return errCooldown
		}
		done := make(chan struct{})
		r.inflight = done
		r.lastFetch = r.clock.Now()
		r.mu.Unlock()
		go func() {
			next, err := r.fetch(r.ctx)
			r.afterFetch(next, err)
			r.mu.Lock()
			r.inflight = nil
			r.mu.Unlock()
			close(done)
		}()
		wait = done
	} else {
		r.mu.Unlock()
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// afterFetch records the outcome and schedules the next background fetch.
func (r *remoteSource) afterFetch(next time.Duration, err error) {
	if r.onFetch != nil {
		defer r.onFetch(r.kids(), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if err != nil {
		r.failures++
		// Back off 1 s, 2 s, 4 s … up to MinJWKSRefresh while it fails; the last good set stays.
		next = min(time.Second<<min(r.failures-1, 5), MinJWKSRefresh)
		r.logger.Warn("authz: JWKS fetch failed; the key set in use (if any) stays", "event", "jwks_fetch_failed", "url", r.url, "error", err.Error(), "retry_in", next.String())
	} else {
		r.failures = 0
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timer = r.clock.AfterFunc(next, func() { _ = r.refetch(r.ctx, false) })
}

// fetch does one JWKS request and returns how long to wait before the next one.
func (r *remoteSource) fetch(ctx context.Context) (time.Duration, error) {
	r.fetchCount.Add(1)
	ctx, cancel := context.WithTimeout(ctx, r.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	r.mu.Lock()
	etag := r.etag
	r.mu.Unlock()
	if etag != "" && r.current.Load() != nil {
		req.Header.Set("If-None-Match", etag)
	}
	res, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	next := refreshInterval(res.Header.Get("Cache-Control"))
	if res.StatusCode == http.StatusNotModified && r.current.Load() != nil {
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
	// No usable key at all is a broken answer (authz always publishes its signing key), not a
	// revoke-all: the last good set stays. But keys of algorithms this verifier does not allow (authz
	// moved to ES256, this verifier was left at RS256) make an empty set: keeping the old one would keep
	// pruned and revoked keys trusted for ever.
	set, err := parseJWKS(body)
	if err != nil {
		return 0, err
	}
	r.current.Store(&staticSource{set: set.allowing(r.algorithms)})
	r.mu.Lock()
	r.etag = res.Header.Get("ETag")
	r.mu.Unlock()
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
				secs = min(secs, int64(MaxJWKSRefresh/time.Second))
				interval = time.Duration(secs) * time.Second
			}
		case "no-store", "no-cache":
			return MinJWKSRefresh
		}
	}
	return max(MinJWKSRefresh, min(interval, MaxJWKSRefresh))
}
