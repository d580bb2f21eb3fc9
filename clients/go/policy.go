package authz

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RouteRule is what one route requires of its caller.
type RouteRule struct {
	// Scopes: every one is required.
	Scopes []string `json:"scopes"`
	// Callers: when present, only these services may call.
	Callers []string `json:"callers,omitempty"`
}

// Decision is a callee policy's answer for one request.
type Decision int

const (
	// Allow: a rule names the route and the caller satisfies it (or there is no policy).
	Allow Decision = iota
	// Forbidden: a rule names the route and the caller does not satisfy it (403).
	Forbidden
	// Unlisted: no rule names the route; under a policy it is refused (403).
	Unlisted
)

func (d Decision) String() string {
	return [...]string{"allow", "forbidden", "unlisted"}[d]
}

// The file format of the TypeScript SDK's callee policy (same patterns, same JSON Schema).
var (
	serviceNamePattern = regexp.MustCompile(`^[\x21-\x7E]{1,255}$`)
	scopePattern       = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`)
	routeKeyPattern    = regexp.MustCompile(`^((GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) )?/\S*$`)
)

type httpRule struct {
	method   string
	segments []string // "" never; ":name" matches one segment
	rule     *RouteRule
}

type policyDoc struct {
	service string
	routes  map[string]*RouteRule
	http    map[string][]httpRule // by method
	sha256  [32]byte
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
// The error names the bad entry.
func ParseCalleePolicy(data []byte) (*CalleePolicy, error) {
	doc, err := parsePolicy(data, "policy")
	if err != nil {
		return nil, err
	}
	p := &CalleePolicy{}
	p.doc.Store(doc)
	return p, nil
}

func strictObject(raw json.RawMessage, where string, allowed ...string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%s must be an object", where)
	}
	for k := range m {
		if !contains(allowed, k) {
			return nil, fmt.Errorf("%s: unknown member %q", where, k)
		}
	}
	return m, nil
}

func stringList(raw json.RawMessage, where string, pattern *regexp.Regexp) ([]string, error) {
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, fmt.Errorf("%s must be an array of strings", where)
	}
	seen := map[string]bool{}
	for _, s := range list {
		if !pattern.MatchString(s) {
			return nil, fmt.Errorf("%s: %q is not allowed", where, s)
		}
		if seen[s] {
			return nil, fmt.Errorf("%s: %q appears twice", where, s)
		}
		seen[s] = true
	}
	return list, nil
}

func parsePolicy(data []byte, source string) (*policyDoc, error) {
	if !json.Valid(data) {
		return nil, fmt.Errorf("%s: not valid JSON", source)
	}
	top, err := strictObject(data, source, "$schema", "service", "routes")
	if err != nil {
		return nil, err
	}
	doc := &policyDoc{routes: map[string]*RouteRule{}, http: map[string][]httpRule{}, sha256: sha256.Sum256(data)}
	if raw, ok := top["$schema"]; ok {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, fmt.Errorf("%s: $schema must be a string", source)
		}
	}
	if raw, ok := top["service"]; ok {
		if json.Unmarshal(raw, &doc.service) != nil || !serviceNamePattern.MatchString(doc.service) {
			return nil, fmt.Errorf("%s: service must be a service name", source)
		}
	}
	rawRoutes, ok := top["routes"]
	if !ok {
		return nil, fmt.Errorf("%s: routes is required", source)
	}
	var routes map[string]json.RawMessage
	if err := json.Unmarshal(rawRoutes, &routes); err != nil || routes == nil {
		return nil, fmt.Errorf("%s: routes must be an object", source)
	}
	keys := make([]string, 0, len(routes))
	for k := range routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		where := fmt.Sprintf("%s: routes[%q]", source, key)
		if !routeKeyPattern.MatchString(key) {
			return nil, fmt.Errorf(`%s: route key %q must be "METHOD /path" or a gRPC "/pkg.Service/Method"`, source, key)
		}
		m, err := strictObject(routes[key], where, "scopes", "callers")
		if err != nil {
			return nil, err
		}
		rawScopes, ok := m["scopes"]
		if !ok {
			return nil, fmt.Errorf("%s: scopes is required", where)
		}
		rule := &RouteRule{}
		if rule.Scopes, err = stringList(rawScopes, where+".scopes", scopePattern); err != nil {
			return nil, err
		}
		if rawCallers, ok := m["callers"]; ok {
			if rule.Callers, err = stringList(rawCallers, where+".callers", serviceNamePattern); err != nil {
				return nil, err
			}
		}
		doc.routes[key] = rule
		if method, path, ok := strings.Cut(key, " "); ok {
			doc.http[method] = append(doc.http[method], httpRule{method: method, segments: strings.Split(path, "/")[1:], rule: rule})
		}
	}
	return doc, nil
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

// CalleePolicy is a receiving service's own route rules, reloaded from its file on change (a file that
// does not parse keeps the rules in force). A nil *CalleePolicy allows any verified caller.
type CalleePolicy struct {
	path     string
	doc      atomic.Pointer[policyDoc]
	logger   *slog.Logger
	onReload func(error)
	interval time.Duration

	mu       sync.Mutex // one reload at a time
	badHash  [32]byte
	stop     chan struct{}
	stopOnce sync.Once
}

// PolicyOption configures LoadCalleePolicyWith.
type PolicyOption func(*CalleePolicy)

// WithPollInterval sets how often the file is checked for changes (default 2 s; 0 turns polling off,
// leaving Reload).
func WithPollInterval(d time.Duration) PolicyOption { return func(p *CalleePolicy) { p.interval = d } }

// WithReloadHook is called after every reload that changed the rules (nil) or failed (the error).
func WithReloadHook(f func(error)) PolicyOption { return func(p *CalleePolicy) { p.onReload = f } }

// WithPolicyLogger sets where reload failures are logged (default slog.Default()).
func WithPolicyLogger(l *slog.Logger) PolicyOption { return func(p *CalleePolicy) { p.logger = l } }

// LoadCalleePolicy reads a callee policy file (the TypeScript SDK's format) and watches it: the file is
// re-read when it changes (polled every 2 s); an invalid new file is logged and the previous rules
// stay. Close stops it.
func LoadCalleePolicy(path string) (*CalleePolicy, error) { return LoadCalleePolicyWith(path) }

// LoadCalleePolicyWith is LoadCalleePolicy with options (poll interval, reload hook, logger).
func LoadCalleePolicyWith(path string, opts ...PolicyOption) (*CalleePolicy, error) {
	p := &CalleePolicy{path: path, interval: 2 * time.Second, stop: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authz: callee policy: %w", err)
	}
	doc, err := parsePolicy(data, path)
	if err != nil {
		return nil, fmt.Errorf("authz: callee policy: %w", err)
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

// Reload re-reads the file now (e.g. on SIGHUP). On error the rules in force stay.
func (p *CalleePolicy) Reload() error {
	if p == nil || p.path == "" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := os.ReadFile(p.path)
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
		if doc, err = parsePolicy(data, p.path); err == nil {
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
	p.logger.Error("authz: callee policy reload failed; the previous rules stay in force", "event", "policy_reload_failed", "path", p.path, "error", err.Error())
	if p.onReload != nil {
		p.onReload(err)
	}
	return err
}

// Close stops watching the file.
func (p *CalleePolicy) Close() {
	if p == nil || p.stop == nil {
		return
	}
	p.stopOnce.Do(func() { close(p.stop) })
}

// Service is the policy's "service" member ("" when absent).
func (p *CalleePolicy) Service() string { return p.doc.Load().service }

// Rule returns the rule of an exact route key ("GET /stock/:sku", "/pkg.Service/Method").
func (p *CalleePolicy) Rule(key string) (*RouteRule, bool) {
	r, ok := p.doc.Load().routes[key]
	return r, ok
}

func decide(c *Caller, rules ...*RouteRule) Decision {
	found := false
	for _, r := range rules {
		if r == nil {
			continue
		}
		found = true
		if !r.Satisfies(c) {
			return Forbidden
		}
	}
	if !found {
		return Unlisted
	}
	return Allow
}

// DecideMethod decides a gRPC call by its full method name ("/pkg.Service/Method").
func (p *CalleePolicy) DecideMethod(fullMethod string, c *Caller) Decision {
	if p == nil {
		return Allow
	}
	r, _ := p.Rule(fullMethod)
	return decide(c, r)
}

// DecideRoute decides an HTTP request by its router's route pattern (Gin's FullPath(), e.g.
// "/stock/:sku"). The rule of GET governs HEAD too: a HEAD request must satisfy the GET rule and the
// HEAD rule, whichever exist.
func (p *CalleePolicy) DecideRoute(method, route string, c *Caller) Decision {
	if p == nil {
		return Allow
	}
	if route == "" {
		return decide(c) // no route matched: unlisted
	}
	r, _ := p.Rule(method + " " + route)
	if method == "HEAD" {
		g, _ := p.Rule("GET " + route)
		return decide(c, r, g)
	}
	return decide(c, r)
}

// DecideHTTP decides an HTTP request by its path, matched against the rules' patterns: a ":name"
// segment matches one non-empty path segment, anything else matches itself, and the most specific
// pattern wins (a literal segment beats ":name", left to right). escapedPath is r.URL.EscapedPath();
// segments are compared unescaped, one by one, as net/http's ServeMux does. A path with "." or ".."
// segments or bad escapes matches nothing. HEAD is governed by the GET rule as in DecideRoute.
func (p *CalleePolicy) DecideHTTP(method, escapedPath string, c *Caller) Decision {
	if p == nil {
		return Allow
	}
	segments, ok := splitPath(escapedPath)
	if !ok {
		return decide(c)
	}
	doc := p.doc.Load()
	r := bestMatch(doc.http[method], segments)
	if method == "HEAD" {
		return decide(c, r, bestMatch(doc.http["GET"], segments))
	}
	return decide(c, r)
}

func splitPath(escaped string) ([]string, bool) {
	if !strings.HasPrefix(escaped, "/") {
		return nil, false
	}
	parts := strings.Split(escaped, "/")[1:]
	for i, part := range parts {
		s, err := url.PathUnescape(part)
		if err != nil || s == "." || s == ".." {
			return nil, false
		}
		parts[i] = s
	}
	return parts, true
}

func bestMatch(rules []httpRule, segments []string) *RouteRule {
	var best *httpRule
	for i := range rules {
		r := &rules[i]
		if !matches(r.segments, segments) {
			continue
		}
		if best == nil || moreSpecific(r.segments, best.segments) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	return best.rule
}

func isParam(seg string) bool { return len(seg) > 1 && seg[0] == ':' }

func matches(pattern, segments []string) bool {
	if len(pattern) != len(segments) {
		return false
	}
	for i, p := range pattern {
		if isParam(p) {
			if segments[i] == "" {
				return false
			}
		} else if p != segments[i] {
			return false
		}
	}
	return true
}

func moreSpecific(a, b []string) bool {
	for i := range a {
		if pa, pb := isParam(a[i]), isParam(b[i]); pa != pb {
			return !pa
		}
	}
	return false
}
