package authz

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RouteRule is what one route requires of its caller.
type RouteRule struct {
	// Scopes: every one is required.
	Scopes []string `json:"scopes"`
	// Callers: when present, only these callers (service names or SPIFFE IDs) may call.
	Callers []string `json:"callers,omitempty"`
}

// Satisfies reports whether a caller meets a rule.
func (r *RouteRule) Satisfies(c *Caller) bool {
	if r.Callers != nil && !contains(r.Callers, c.Service) {
		return false
	}
	for _, s := range r.Scopes {
		if !c.HasScope(s) {
			return false
		}
	}
	return true
}

// Decision is a callee policy's answer for one request.
type Decision int

const (
	// Allow: a rule names the route and the caller satisfies it (or there is no policy).
	Allow Decision = iota
	// Forbidden: a rule names the route and the caller does not satisfy it (403, ERR_ROUTE_FORBIDDEN).
	Forbidden
	// Unlisted: no rule names the route; under a policy it is refused (403, ERR_ROUTE_UNLISTED).
	Unlisted
)

func (d Decision) String() string {
	return [...]string{"allow", "forbidden", "unlisted"}[d]
}

// Reason is the denial reason of a Decision other than Allow: ERR_ROUTE_FORBIDDEN or ERR_ROUTE_UNLISTED
// ("" for Allow).
func (d Decision) Reason() string {
	return [...]string{"", ReasonRouteForbidden, ReasonRouteUnlisted}[d]
}

// CalleePolicy is a receiving service's own route rules (the TypeScript SDK's file format,
// conformance/callee-policy.schema.json), reloaded from its source — a file, or an https:// URL of a
// configuration center — in the background: a source that cannot be read or does not parse keeps the
// rules in force. A nil *CalleePolicy allows any verified caller; every method is safe on nil.
type CalleePolicy struct {
	source policySource
	doc    atomic.Pointer[policyDoc]
	policyOptions

	mu       sync.Mutex    // one reload at a time
	badHash  [32]byte      // the failure last reported (a bad document, or a read error)
	failures int           // reloads failed in a row
	next     time.Duration // until the next background read, as the last one left it

	timerMu sync.Mutex
	timer   Timer
	closed  bool
	ctx     context.Context // ends at Close: a read in flight is abandoned
	cancel  context.CancelFunc
}

// ParseCalleePolicy parses a callee policy document:
//
//	{
//	  "service": "inventory-service",
//	  "routes": {
//	    "GET /stock/:sku":          { "scopes": ["stock:read"] },
//	    "/demo.Inventory/Deduct":   { "scopes": ["stock:deduct"], "callers": ["order-service"] }
//	  }
//	}
//
// An error is a *PolicyError naming the bad entry.
func ParseCalleePolicy(data []byte) (*CalleePolicy, error) {
	doc, err := parsePolicy(data, "policy")
	if err != nil {
		return nil, err
	}
	p := &CalleePolicy{}
	p.doc.Store(doc)
	return p, nil
}

// Service is the policy's "service" member ("" when absent, or for a nil policy).
func (p *CalleePolicy) Service() string {
	if p == nil {
		return ""
	}
	return p.doc.Load().service
}

// Rule returns the rule of an exact route key ("GET /stock/:sku", "/pkg.Service/Method"); a HEAD key
// finds its GET rule. A nil policy has none.
func (p *CalleePolicy) Rule(key string) (*RouteRule, bool) {
	if p == nil {
		return nil, false
	}
	if rest, ok := strings.CutPrefix(key, "HEAD "); ok {
		key = "GET " + rest
	}
	r, ok := p.doc.Load().routes[key]
	return r, ok
}
