package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// policySource is where a callee policy comes from: a file, or a URL (policy_source_url.go). Every read
// returns the whole document.
type policySource interface {
	// name identifies the source in errors and logs: a path, or the URL without its secrets.
	name() string
	read(ctx context.Context) ([]byte, error)
	// after is the delay before the next read, after a success (failures 0) or the failures-th
	// failure in a row, given the configured interval.
	after(interval time.Duration, failures int) time.Duration
	// defaultInterval is the interval when none is configured.
	defaultInterval() time.Duration
	close()
}

type fileSource struct{ path string }

func (f fileSource) name() string                                      { return f.path }
func (f fileSource) after(interval time.Duration, _ int) time.Duration { return interval }
func (f fileSource) defaultInterval() time.Duration                    { return DefaultPolicyPollInterval }
func (f fileSource) close()                                            {}

// maxPolicyBytes is the largest policy read, file or answer (the TypeScript SDK's bound too).
const maxPolicyBytes = 1 << 20

// read reads the file, which must be a regular file of at most 1 MiB: a FIFO at the path would block
// the poll for ever, a device would never end. It is opened non-blocking, then judged by what it is.
func (f fileSource) read(context.Context) ([]byte, error) {
	refuse := func(why string) error {
		return &PolicyError{Code: ErrCodePolicyRead, Source: f.path, Message: "cannot read: " + why}
	}
	file, err := os.OpenFile(f.path, os.O_RDONLY|openNonBlocking, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, refuse(pe.Err.Error())
		}
		return nil, refuse("error")
	}
	defer file.Close()
	st, err := file.Stat()
	switch {
	case err != nil:
		return nil, refuse(err.Error())
	case !st.Mode().IsRegular():
		return nil, refuse("not a regular file")
	case st.Size() > maxPolicyBytes:
		return nil, refuse("larger than 1 MiB")
	}
	data, err := io.ReadAll(io.LimitReader(file, maxPolicyBytes+1))
	if err != nil {
		return nil, refuse(err.Error())
	}
	if len(data) > maxPolicyBytes {
		return nil, refuse("larger than 1 MiB")
	}
	return data, nil
}

// LoadCalleePolicy reads a callee policy (the TypeScript SDK's format) and keeps it fresh from the
// start, as the TypeScript SDK's CalleePolicy.load does. source is a file path — re-read every 2 s — or
// an https:// URL — fetched now (a start that cannot fetch it fails; see WithBundledPolicy), then pulled
// every 30 s, jittered, with If-None-Match. New rules are in force once read; a source that cannot be
// read or does not parse is logged once and the rules in force stay (a URL is retried with backoff from
// 1 s). Close stops it. An error is a *PolicyError naming the bad entry, or the source.
func LoadCalleePolicy(source string) (*CalleePolicy, error) { return LoadCalleePolicyWith(source) }

// LoadCalleePolicyWith is LoadCalleePolicy with options.
func LoadCalleePolicyWith(source string, opts ...PolicyOption) (*CalleePolicy, error) {
	var o policyOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	o.clock = clockOrSystem(o.clock)
	if !isURLSource(source) {
		return loadPolicy(fileSource{source}, o)
	}
	src, err := newURLSource(source, &o)
	if err != nil {
		return nil, err
	}
	return loadPolicy(src, o)
}

func loadPolicy(src policySource, o policyOptions) (*CalleePolicy, error) {
	if !o.intervalSet {
		o.interval = src.defaultInterval()
	}
	p := &CalleePolicy{source: src, policyOptions: o}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	var bundled *policyDoc
	if o.bundled != "" {
		data, err := fileSource{o.bundled}.read(p.ctx)
		if err == nil {
			bundled, err = parsePolicy(data, o.bundled)
		}
		if err != nil {
			p.close()
			return nil, err
		}
	}
	data, err := src.read(p.ctx)
	var doc *policyDoc
	if err == nil {
		doc, err = parsePolicy(data, src.name())
	}
	switch {
	case err == nil:
		p.doc.Store(doc)
		p.succeeded()
	case bundled != nil:
		p.doc.Store(bundled)
		p.failed(failureHash(data, err), err, "; the bundled file "+o.bundled+" is in force")
	default:
		p.close()
		return nil, err
	}
	if p.interval > 0 {
		p.schedule(p.next)
	}
	return p, nil
}

// failureHash identifies a failure, to report each distinct one once: the bytes of a bad document, or
// the read error.
func failureHash(data []byte, err error) [32]byte {
	if data == nil {
		return sha256.Sum256([]byte("read error: " + err.Error()))
	}
	return sha256.Sum256(data)
}

func (p *CalleePolicy) schedule(d time.Duration) {
	p.timerMu.Lock()
	defer p.timerMu.Unlock()
	if !p.closed {
		p.timer = p.clock.AfterFunc(d, p.pull)
	}
}

// pull is one background read; the next is scheduled before the hook hears of this one.
func (p *CalleePolicy) pull() {
	err := p.Reload()
	p.mu.Lock()
	next := p.next
	p.mu.Unlock()
	p.schedule(next)
	if p.onPull != nil {
		tell(func() { p.onPull(err, next) })
	}
}

// tell calls a user's hook: its panic is its own fault and stops nothing of ours (a pull runs in a
// goroutine of its own, where a panic would end the process).
func tell(hook func()) {
	defer func() { _ = recover() }()
	hook()
}

// Reload reads the source now (e.g. on SIGHUP). On error the rules in force stay; a failure is logged
// (and told to the reload hook) once, not at every poll, and counted every time.
func (p *CalleePolicy) Reload() error {
	if p == nil || p.source == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := p.source.read(p.ctx)
	if p.ctx.Err() != nil {
		return errors.New("authz: callee policy closed")
	}
	if err == nil {
		if sum := sha256.Sum256(data); sum == p.doc.Load().sha256 {
			p.succeeded()
			return nil
		}
		var doc *policyDoc
		if doc, err = parsePolicy(data, p.source.name()); err == nil {
			p.doc.Store(doc)
			p.succeeded()
			if p.onReload != nil {
				tell(func() { p.onReload(nil) })
			}
			return nil
		}
	}
	p.failed(failureHash(data, err), err, "; the previous rules stay in force")
	return err
}

// succeeded records a good read: after failures, one line says the source loads again.
func (p *CalleePolicy) succeeded() {
	p.counters.ObservePolicyReload(nil)
	p.next = p.source.after(p.interval, 0)
	if p.failures > 0 {
		p.logger.Warn("authz: callee policy loads again", "event", "policy_reload_recovered", "source", p.source.name(), "failures", p.failures)
	}
	p.failures = 0
	p.badHash = [32]byte{}
}

// failed records a failed read: counted every time, logged and told to the hook once per distinct
// failure.
func (p *CalleePolicy) failed(sum [32]byte, err error, keeps string) {
	p.failures++
	p.counters.ObservePolicyReload(err)
	p.next = p.source.after(p.interval, p.failures)
	if sum == p.badHash {
		return
	}
	p.badHash = sum
	attrs := []any{"event", "policy_reload_failed", "source", p.source.name(), "error", err.Error()}
	var pe *PolicyError
	if errors.As(err, &pe) {
		attrs = append(attrs, "code", string(pe.Code))
	}
	if p.interval > 0 {
		attrs = append(attrs, "retry_in", p.next.Round(time.Millisecond).String())
	}
	p.logger.Error("authz: callee policy reload failed"+keeps, attrs...)
	if p.onReload != nil {
		tell(func() { p.onReload(err) })
	}
}

// Close stops reading the source and abandons a read in flight. It returns nil; it is safe on nil and
// more than once.
func (p *CalleePolicy) Close() error {
	if p == nil || p.source == nil {
		return nil
	}
	p.close()
	return nil
}

func (p *CalleePolicy) close() {
	p.timerMu.Lock()
	if !p.closed {
		p.closed = true
		if p.timer != nil {
			p.timer.Stop()
		}
		p.cancel()
		p.source.close()
	}
	p.timerMu.Unlock()
}
