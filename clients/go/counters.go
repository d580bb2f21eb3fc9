package authz

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// The metric names both kits use for the callee-side counters.
const (
	CalleeVerifiedMetric = "authz_callee_verified_total"
	CalleeDeniedMetric   = "authz_callee_denied_total"
	// CalleePolicyReloadFailuresMetric counts callee policy reloads (file or URL) that failed.
	CalleePolicyReloadFailuresMetric = "authz_callee_policy_reload_failures_total"
	// CalleePolicyReloadFailingMetric is 1 while the last reload of the callee policy failed.
	CalleePolicyReloadFailingMetric = "authz_callee_policy_reload_failing"
)

// ReasonLabel is a denial reason as a Prometheus label value: lower case, without ERR_
// (ERR_TOKEN_EXPIRED → token_expired), as the project's metrics conventions ask.
func ReasonLabel(reason string) string { return strings.ToLower(strings.TrimPrefix(reason, "ERR_")) }

// CalleeCounters counts what the receiving edge decided: calls let through, and calls denied by
// reason — the TypeScript SDK's CalleeCounters. Pass Observe to OnDecision (one instance may serve
// the net/http, Gin and gRPC guards of a service), then read Verified and Denied, or write them to
// your /metrics with WritePrometheus. Safe for concurrent use; the zero value is ready.
type CalleeCounters struct {
	mu             sync.Mutex
	verified       uint64
	denied         map[string]uint64
	policyFailures uint64
	policyFailing  bool
}

// Observe counts one outcome: the OnDecision hook.
func (c *CalleeCounters) Observe(o CallOutcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o.Allowed {
		c.verified++
		return
	}
	if c.denied == nil {
		c.denied = map[string]uint64{}
	}
	c.denied[o.Reason]++
}

// Verified is the number of calls let through so far.
func (c *CalleeCounters) Verified() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified
}

// Denied is the number of calls denied so far, by reason: every reason of DenialReasons, 0 when none.
func (c *CalleeCounters) Denied() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]uint64{}
	for _, r := range DenialReasons() {
		out[r] = c.denied[r]
	}
	return out
}

// ObservePolicyReload counts one reload of the callee policy (what WithPolicyCounters does): a failure
// (err non-nil) adds to PolicyReloadFailures and makes PolicyReloadFailing true until a reload
// succeeds. Safe on nil.
func (c *CalleeCounters) ObservePolicyReload(err error) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.policyFailing = err != nil
	if err != nil {
		c.policyFailures++
	}
}

// PolicyReloadFailures is the number of callee policy reloads that failed so far.
func (c *CalleeCounters) PolicyReloadFailures() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policyFailures
}

// PolicyReloadFailing reports whether the last reload of the callee policy failed (the rules read
// before it are in force).
func (c *CalleeCounters) PolicyReloadFailing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policyFailing
}

// WritePrometheus writes the counters in the Prometheus text exposition format (the metric names
// above; the reason label is ReasonLabel of the reason), for a service's own /metrics.
func (c *CalleeCounters) WritePrometheus(w io.Writer) error {
	denied := c.Denied()
	var b strings.Builder
	fmt.Fprintf(&b, "# HELP %s Calls the authz guard let through (token verified, bound to the caller's certificate, allowed by the callee policy).\n", CalleeVerifiedMetric)
	fmt.Fprintf(&b, "# TYPE %s counter\n%s %d\n", CalleeVerifiedMetric, CalleeVerifiedMetric, c.Verified())
	fmt.Fprintf(&b, "# HELP %s Calls the authz guard refused, by reason (401: the peer or the token; 403: the callee policy).\n", CalleeDeniedMetric)
	fmt.Fprintf(&b, "# TYPE %s counter\n", CalleeDeniedMetric)
	for _, r := range DenialReasons() {
		fmt.Fprintf(&b, "%s{reason=%q} %d\n", CalleeDeniedMetric, ReasonLabel(r), denied[r])
	}
	failing := 0
	if c.PolicyReloadFailing() {
		failing = 1
	}
	fmt.Fprintf(&b, "# HELP %s Callee policy reloads (file or URL) that failed; the rules read before stay in force.\n", CalleePolicyReloadFailuresMetric)
	fmt.Fprintf(&b, "# TYPE %s counter\n%s %d\n", CalleePolicyReloadFailuresMetric, CalleePolicyReloadFailuresMetric, c.PolicyReloadFailures())
	fmt.Fprintf(&b, "# HELP %s 1 while the last reload of the callee policy failed (retried; the rules read before stay in force), else 0.\n", CalleePolicyReloadFailingMetric)
	fmt.Fprintf(&b, "# TYPE %s gauge\n%s %d\n", CalleePolicyReloadFailingMetric, CalleePolicyReloadFailingMetric, failing)
	_, err := io.WriteString(w, b.String())
	return err
}
