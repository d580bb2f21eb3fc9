package authz

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// The grammar of a callee policy: the patterns of conformance/callee-policy.schema.json (the tests
// compare them), the TypeScript SDK's constants.
const (
	// ScopeTokenPattern: RFC 6749 §3.3 scope-token, printable ASCII except space, '"' and '\'; 1–128.
	ScopeTokenPattern = `^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`
	// ServiceNamePattern: a certificate CN or an audience, printable ASCII without space; 1–255.
	ServiceNamePattern = `^[\x21-\x7E]{1,255}$`
	// SpiffeIDPattern: a workload SPIFFE ID — spiffe://, a lowercase trust domain, a non-empty path of
	// segments of letters, digits, '.', '-', '_' (no empty, "." or ".." segment, no trailing slash, no
	// port, user info, query, fragment or percent-encoding) — at most SpiffeIDMaxLength bytes.
	SpiffeIDPattern   = `^spiffe://[a-z0-9._-]{1,255}(/(\.*[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.\.+))+$`
	SpiffeIDMaxLength = 2048
	// HTTPRouteKeyPattern: a method (HEAD is governed by GET) and a route pattern of printable ASCII.
	HTTPRouteKeyPattern = `^(GET|POST|PUT|PATCH|DELETE|OPTIONS) /[\x21-\x7E]*$`
	// GRPCRouteKeyPattern: a gRPC full method name, /package.Service/Method (the package is required).
	GRPCRouteKeyPattern = `^/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+/[A-Za-z_][A-Za-z0-9_]*$`
)

var (
	scopeToken   = regexp.MustCompile(ScopeTokenPattern)
	serviceName  = regexp.MustCompile(ServiceNamePattern)
	spiffeID     = regexp.MustCompile(SpiffeIDPattern)
	httpRouteKey = regexp.MustCompile(HTTPRouteKeyPattern)
	grpcRouteKey = regexp.MustCompile(GRPCRouteKeyPattern)
)

// IsSpiffeID reports whether s is a well-formed workload SPIFFE ID.
func IsSpiffeID(s string) bool { return len(s) <= SpiffeIDMaxLength && spiffeID.MatchString(s) }

// IsCallerName reports whether s may name a caller in a callee policy: a service name, or a SPIFFE
// ID. Anything that starts with the spiffe: scheme, in any case, must be a well-formed SPIFFE ID.
func IsCallerName(s string) bool {
	if len(s) >= 7 && strings.EqualFold(s[:7], "spiffe:") {
		return IsSpiffeID(s)
	}
	return serviceName.MatchString(s)
}

type httpRule struct {
	method   string
	segments []string // ":name" matches one non-empty segment
	rule     *RouteRule
}

type policyDoc struct {
	service string
	routes  map[string]*RouteRule
	http    map[string][]httpRule // by method
	sha256  [32]byte
}

// pointer is a JSON pointer (RFC 6901) to the entry of these parts.
func pointer(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("/" + strings.ReplaceAll(strings.ReplaceAll(p, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

func invalid(source, entry, format string, args ...any) *PolicyError {
	where := entry
	if where == "" {
		where = "/"
	}
	return &PolicyError{Code: ErrCodePolicyInvalid, Source: source, Entry: entry, Message: where + ": " + fmt.Sprintf(format, args...)}
}

// object decodes an object's members and returns the first that is not allowed (by name), if any.
func object(raw json.RawMessage, allowed ...string) (members map[string]json.RawMessage, unknown string, ok bool) {
	if json.Unmarshal(raw, &members) != nil || members == nil {
		return nil, "", false
	}
	var extra []string
	for name := range members {
		if !contains(allowed, name) {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		unknown = extra[0]
	}
	return members, unknown, true
}

// list is an array of distinct strings that valid accepts; the entry of a bad or repeated item is its
// index.
func list(source, entry string, raw json.RawMessage, valid func(string) bool, what string) ([]string, error) {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil || items == nil {
		return nil, invalid(source, entry, "must be an array of %ss", what)
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		var s string
		if json.Unmarshal(item, &s) != nil || !valid(s) {
			return nil, invalid(source, fmt.Sprintf("%s/%d", entry, i), "not a valid %s", what)
		}
		if contains(out, s) {
			return nil, invalid(source, fmt.Sprintf("%s/%d", entry, i), "repeats %q", s)
		}
		out = append(out, s)
	}
	return out, nil
}

// parsePolicy validates a document against the schema's rules. With several faults, the first in this
// order is named (as the TypeScript SDK does): unknown members (by name), $schema, service, routes,
// then each route in key order — its key, unknown members, scopes, callers.
func parsePolicy(data []byte, source string) (*policyDoc, error) {
	if !json.Valid(data) {
		return nil, &PolicyError{Code: ErrCodePolicyJSON, Source: source, Message: "not valid JSON"}
	}
	top, unknown, ok := object(data, "$schema", "service", "routes")
	if !ok {
		return nil, invalid(source, "", "must be a JSON object")
	}
	if unknown != "" {
		return nil, invalid(source, pointer(unknown), "unknown member")
	}
	doc := &policyDoc{routes: map[string]*RouteRule{}, http: map[string][]httpRule{}, sha256: sha256.Sum256(data)}
	var s string
	if raw, ok := top["$schema"]; ok && json.Unmarshal(raw, &s) != nil {
		return nil, invalid(source, "/$schema", "must be a string")
	}
	if raw, ok := top["service"]; ok && (json.Unmarshal(raw, &doc.service) != nil || !serviceName.MatchString(doc.service)) {
		return nil, invalid(source, "/service", "not a valid service name")
	}
	var routes map[string]json.RawMessage
	if json.Unmarshal(top["routes"], &routes) != nil || routes == nil {
		return nil, invalid(source, "/routes", "must be an object of route rules")
	}
	keys := make([]string, 0, len(routes))
	for k := range routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		entry := pointer("routes", key)
		if !httpRouteKey.MatchString(key) && !grpcRouteKey.MatchString(key) {
			why := ""
			if strings.HasPrefix(key, "HEAD ") {
				why = " (HEAD is governed by the GET rule of the same route)"
			}
			return nil, &PolicyError{Code: ErrCodePolicyRouteKey, Source: source, Entry: entry,
				Message: fmt.Sprintf(`route key %q must be "METHOD /path" or a gRPC "/package.Service/Method"%s`, key, why)}
		}
		rule, err := parseRule(source, entry, routes[key])
		if err != nil {
			return nil, err
		}
		doc.routes[key] = rule
		if method, path, ok := strings.Cut(key, " "); ok {
			doc.http[method] = append(doc.http[method], httpRule{method: method, segments: strings.Split(path, "/")[1:], rule: rule})
		}
	}
	return doc, nil
}

func parseRule(source, entry string, raw json.RawMessage) (*RouteRule, error) {
	m, unknown, ok := object(raw, "scopes", "callers")
	if !ok {
		return nil, invalid(source, entry, "must be an object")
	}
	if unknown != "" {
		return nil, invalid(source, entry+pointer(unknown), "unknown member")
	}
	rule := &RouteRule{}
	var err error
	if rule.Scopes, err = list(source, entry+"/scopes", m["scopes"], scopeToken.MatchString, "scope-token"); err != nil {
		return nil, err
	}
	if rawCallers, ok := m["callers"]; ok {
		if rule.Callers, err = list(source, entry+"/callers", rawCallers, IsCallerName, "caller (a service name or a SPIFFE ID)"); err != nil {
			return nil, err
		}
	}
	return rule, nil
}
