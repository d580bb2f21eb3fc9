package authz

import (
	"errors"
	"time"
)

func (ts *TokenSource) refreshInBackground(e *tokenEntry) {
	ts.mu.Lock()
	ts.currentLocked() // a renewal seen now retires e's generation
	stale := ts.closed || e.gen.retired
	ts.mu.Unlock()
	if stale {
		return
	}
	e.gen.group.DoChan(e.key, func() (any, error) { return ts.fetch(e, true) }) // outcome handled in fetch
}

// schedule arms e's timer; ts.mu is held.
func (ts *TokenSource) schedule(e *tokenEntry, at time.Time) {
	if ts.closed || e.gen.retired {
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
	if !background {
		// A caller that found nothing usable may start its flight just after another flight ended: what
		// that one left (a token, or an error within the backoff) answers it, without a request.
		ts.mu.Lock()
		now := ts.clock.Now()
		token, lastErr := e.token, e.lastErr
		fresh, backingOff := token != "" && now.Before(e.expiresAt), lastErr != nil && now.Before(e.retryAt)
		ts.mu.Unlock()
		if fresh {
			return token, nil
		}
		if backingOff {
			return nil, lastErr
		}
	}
	requestedAt := ts.clock.Now()
	token, lifetime, err := ts.request(e.gen.client, e.audience, e.scopes)
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
		e.lastErr = nil
		ev.ExpiresAt, ev.RefreshAt = e.expiresAt, e.refreshAt
		ts.schedule(e, e.refreshAt)
	} else {
		e.failures++
		delay := ts.cfg.RetryMin << min(e.failures-1, 20)
		if delay > ts.cfg.RetryMax || delay <= 0 {
			delay = ts.cfg.RetryMax
		}
		delay = delay/2 + time.Duration(ts.rand()*float64(delay/2)) // jitter: [delay/2, delay)
		var te *TokenError
		if errors.As(err, &te) {
			delay = max(delay, te.RetryAfter)
		}
		e.retryAt = ts.clock.Now().Add(delay)
		e.lastErr = err
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
