package authz

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// DefaultPolicyPollInterval is how often a callee policy file is checked for changes: the TypeScript
// SDK's POLICY_POLL_MS too.
const DefaultPolicyPollInterval = 2 * time.Second

// DefaultPolicyPullInterval is how often a callee policy from a URL is pulled (jittered by ±10 %): the
// TypeScript SDK's POLICY_PULL_MS too.
const DefaultPolicyPullInterval = 30 * time.Second

// DefaultPolicyFetchTimeout bounds one fetch of a policy URL, from the request to the last byte.
const DefaultPolicyFetchTimeout = 10 * time.Second

// PolicyOption configures LoadCalleePolicyWith.
type PolicyOption func(*policyOptions)

type policyOptions struct {
	interval    time.Duration
	intervalSet bool
	onReload    func(error)
	onPull      func(error, time.Duration)
	logger      *slog.Logger
	clock       Clock
	counters    *CalleeCounters
	bundled     string
	// URL sources only
	tls       *tls.Config
	plainHTTP bool
	timeout   time.Duration
	header    http.Header
}

// WithPollInterval sets how often the source is read again: default 2 s for a file, 30 s (jittered)
// for a URL; 0 turns watching off, leaving Reload.
func WithPollInterval(d time.Duration) PolicyOption {
	return func(o *policyOptions) { o.interval, o.intervalSet = d, true }
}

// WithReloadHook is called after every reload that changed the rules (nil) or failed (the error, once
// per distinct failure).
func WithReloadHook(f func(error)) PolicyOption { return func(o *policyOptions) { o.onReload = f } }

// WithPullHook is called after every background read of the source, changed or not, with its error
// (nil when it succeeded) and the delay until the next one: for metrics and tests.
func WithPullHook(f func(err error, next time.Duration)) PolicyOption {
	return func(o *policyOptions) { o.onPull = f }
}

// WithPolicyLogger sets where reload failures and recoveries are logged (default slog.Default()).
func WithPolicyLogger(l *slog.Logger) PolicyOption { return func(o *policyOptions) { o.logger = l } }

// WithPolicyClock sets the clock of the background reads, retries and fetch timeouts (tests).
func WithPolicyClock(c Clock) PolicyOption { return func(o *policyOptions) { o.clock = c } }

// WithPolicyCounters counts every reload of the policy in c: a failed one adds to
// authz_callee_policy_reload_failures_total and holds authz_callee_policy_reload_failing at 1 until a
// reload succeeds.
func WithPolicyCounters(c *CalleeCounters) PolicyOption {
	return func(o *policyOptions) { o.counters = c }
}

// WithBundledPolicy names a policy file shipped with the service, in force when the source cannot be
// read (or does not parse) at start: the start succeeds, the failure is reported, and the source is
// retried with backoff until its own rules replace the bundled ones. Without it, such a start fails.
// The file is read and checked at every start, so a broken one fails the start even when the source
// answers.
func WithBundledPolicy(path string) PolicyOption { return func(o *policyOptions) { o.bundled = path } }

// WithPolicyTLS is the TLS configuration of an https:// source: RootCAs (the configuration server's
// CA; default the system's) and, for mutual TLS, Certificates or GetClientCertificate.
func WithPolicyTLS(c *tls.Config) PolicyOption { return func(o *policyOptions) { o.tls = c } }

// WithPlainHTTP allows an http:// source: only where the network between this service and the
// configuration server is trusted, since whoever can change the answer decides who may call.
func WithPlainHTTP() PolicyOption { return func(o *policyOptions) { o.plainHTTP = true } }

// WithPolicyFetchTimeout bounds one fetch of a URL source (default 10 s), from the request to the last
// byte.
func WithPolicyFetchTimeout(d time.Duration) PolicyOption {
	return func(o *policyOptions) { o.timeout = d }
}

// WithPolicyHeader adds a header to every request of a URL source (a configuration center's token,
// say: X-Consul-Token). Header values are never logged.
func WithPolicyHeader(name, value string) PolicyOption {
	return func(o *policyOptions) {
		if o.header == nil {
			o.header = http.Header{}
		}
		o.header.Add(name, value)
	}
}
