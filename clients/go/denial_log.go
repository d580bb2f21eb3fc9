package authz

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultDenialLogInterval is the length of one summary interval of the denial log (the issuer's, and
// the TypeScript SDK's DenialLog's).
const DefaultDenialLogInterval = 10 * time.Second

// maxDenialLogKeys bounds the (reason, caller) pairs tracked at once; beyond, denials are counted
// together in lines marked overflow.
const maxDenialLogKeys = 256

// denialLog bounds the guards' denial lines as the issuer bounds its own: a caller can repeat a denied
// call at will (forged tokens, a replayed token, a missing scope), so a line per denial would let it
// flood the service's log. The first denial of a (reason, caller) is one line at once; the next ones
// are counted and written as one summary line per interval with count, while they go on. A key quiet
// for a whole interval is forgotten. sub is only ever authz's word (a verified token's), so keys are
// bounded by the fleet's identities. OnDecision and CalleeCounters still see every call. The
// TypeScript SDK writes the same lines.
type denialLog struct {
	logger   *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	tallies map[string]*denialTally
	timer   *time.Timer
}

type denialTally struct {
	attrs   []any // what the denials of the key share: status, reason, sub, aud
	pending int   // denials since the last line
}

func newDenialLog(logger *slog.Logger, interval time.Duration) *denialLog {
	if interval <= 0 {
		interval = DefaultDenialLogInterval
	}
	return &denialLog{logger: logger, interval: interval, tallies: map[string]*denialTally{}}
}

// note is one denial: a line now if its (reason, caller) is new, else counted for the next summary.
func (l *denialLog) note(d Denial) {
	sub, aud := d.Subject, d.Audience
	if d.Caller != nil && sub == "" {
		sub, aud = d.Caller.Service, d.Caller.Audience
	}
	key := d.Reason + "\n" + sub
	shared := []any{"status", d.Status, "reason", d.Reason}
	if sub != "" {
		shared = append(shared, "sub", sub)
	}
	if aud != "" {
		shared = append(shared, "aud", aud)
	}
	l.mu.Lock()
	t := l.tallies[key]
	if t == nil && len(l.tallies) >= maxDenialLogKeys {
		key, shared = "\x00overflow", []any{"overflow", true}
		t = l.tallies[key]
	}
	if t != nil {
		t.pending++
		l.mu.Unlock()
		return
	}
	l.tallies[key] = &denialTally{attrs: shared}
	if l.timer == nil {
		l.timer = time.AfterFunc(l.interval, l.flush)
	}
	l.mu.Unlock()
	first := []any{"event", "service_call_denied", "status", d.Status, "reason", d.Reason}
	if key == "\x00overflow" {
		first = []any{"event", "service_call_denied", "overflow", true}
	} else {
		if d.Method != "" {
			first = append(first, "method", d.Method)
		}
		first = append(first, "path", d.Path)
		first = append(first, shared[4:]...) // sub, aud
	}
	l.logger.Warn("service call denied", append(first, "count", 1)...)
}

// flush writes one summary line per key that had denials since its last line, forgets the quiet keys,
// and stops when none is left.
func (l *denialLog) flush() {
	l.mu.Lock()
	type line struct {
		attrs []any
		count int
	}
	var lines []line
	for key, t := range l.tallies {
		if t.pending == 0 {
			delete(l.tallies, key)
			continue
		}
		lines = append(lines, line{t.attrs, t.pending})
		t.pending = 0
	}
	if len(l.tallies) == 0 {
		l.timer = nil
	} else {
		l.timer = time.AfterFunc(l.interval, l.flush)
	}
	l.mu.Unlock()
	seconds := l.interval.Seconds()
	for _, ln := range lines {
		attrs := append([]any{"event", "service_call_denied"}, ln.attrs...)
		attrs = append(attrs, "count", ln.count, "interval_s", seconds)
		l.logger.Warn(fmt.Sprintf("service call denied (%d more in the last %gs)", ln.count, seconds), attrs...)
	}
}
