package authz

import (
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// DefaultPolicyPollInterval is how often a loaded callee policy checks its source for changes: the
// TypeScript SDK's POLICY_POLL_MS too.
const DefaultPolicyPollInterval = 2 * time.Second

// policySource is where a callee policy comes from: a file. Every read returns the whole document.
// (A remote source — a URL — plugs in here beside the file.)
type policySource interface {
	// name identifies the source in errors and logs (a path).
	name() string
	read() ([]byte, error)
}

type fileSource struct{ path string }

func (f fileSource) name() string { return f.path }

// maxPolicyBytes is the largest policy file read (the TypeScript SDK's bound too).
const maxPolicyBytes = 1 << 20

// read reads the file, which must be a regular file of at most 1 MiB: a FIFO at the path would block
// the poll for ever, a device would never end. It is opened non-blocking, then judged by what it is.
func (f fileSource) read() ([]byte, error) {
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

// PolicyOption configures LoadCalleePolicyWith.
type PolicyOption func(*CalleePolicy)

// WithPollInterval sets how often the file is checked for changes (default 2 s; 0 turns watching
// off, leaving Reload).
func WithPollInterval(d time.Duration) PolicyOption { return func(p *CalleePolicy) { p.interval = d } }

// WithReloadHook is called after every reload that changed the rules (nil) or failed (the error, once
// per distinct bad file).
func WithReloadHook(f func(error)) PolicyOption { return func(p *CalleePolicy) { p.onReload = f } }

// WithPolicyLogger sets where reload failures are logged (default slog.Default()).
func WithPolicyLogger(l *slog.Logger) PolicyOption { return func(p *CalleePolicy) { p.logger = l } }

// LoadCalleePolicy reads a callee policy file (the TypeScript SDK's format) and watches it from the
// start, as the TypeScript SDK's CalleePolicy.load does: the file is re-read every 2 s and its new
// rules are in force when it changed; an invalid new file is logged once and the previous rules stay.
// Close stops it. An error is a *PolicyError naming the bad entry.
func LoadCalleePolicy(path string) (*CalleePolicy, error) { return LoadCalleePolicyWith(path) }

// LoadCalleePolicyWith is LoadCalleePolicy with options (poll interval, reload hook, logger).
func LoadCalleePolicyWith(path string, opts ...PolicyOption) (*CalleePolicy, error) {
	return loadPolicy(fileSource{path}, opts)
}

func loadPolicy(src policySource, opts []PolicyOption) (*CalleePolicy, error) {
	p := &CalleePolicy{source: src, interval: DefaultPolicyPollInterval, stop: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	data, err := src.read()
	if err != nil {
		return nil, err
	}
	doc, err := parsePolicy(data, src.name())
	if err != nil {
		return nil, err
	}
	p.doc.Store(doc)
	if p.interval > 0 {
		go p.poll()
	}
	return p, nil
}

func (p *CalleePolicy) poll() {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			_ = p.Reload()
		}
	}
}

// Reload re-reads the source now (e.g. on SIGHUP). On error the rules in force stay; a bad source is
// logged (and told to the reload hook) once, not at every poll.
func (p *CalleePolicy) Reload() error {
	if p == nil || p.source == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := p.source.read()
	var sum [32]byte
	if err != nil {
		sum = sha256.Sum256([]byte("read error: " + err.Error()))
	} else {
		sum = sha256.Sum256(data)
		if sum == p.doc.Load().sha256 {
			p.badHash = [32]byte{}
			return nil
		}
		var doc *policyDoc
		if doc, err = parsePolicy(data, p.source.name()); err == nil {
			p.doc.Store(doc)
			p.badHash = [32]byte{}
			if p.onReload != nil {
				p.onReload(nil)
			}
			return nil
		}
	}
	if sum == p.badHash {
		return err // already reported
	}
	p.badHash = sum
	p.logger.Error("authz: callee policy reload failed; the previous rules stay in force", "event", "policy_reload_failed", "path", p.source.name(), "error", err.Error())
	if p.onReload != nil {
		p.onReload(err)
	}
	return err
}

// Close stops watching the source. It returns nil; it is safe on nil and more than once.
func (p *CalleePolicy) Close() error {
	if p == nil || p.stop == nil {
		return nil
	}
	p.stopOnce.Do(func() { close(p.stop) })
	return nil
}
