package authz

import (
	"net/url"
	"strings"
)

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
// "/stock/:sku"; "" when no route matched). The rule of GET governs HEAD.
func (p *CalleePolicy) DecideRoute(method, route string, c *Caller) Decision {
	if p == nil {
		return Allow
	}
	if route == "" {
		return decide(c) // no route matched: unlisted
	}
	r, _ := p.Rule(method + " " + route)
	return decide(c, r)
}

// DecideHTTP decides an HTTP request by its path, matched against the rules' patterns: a ":name"
// segment matches one non-empty path segment, anything else matches itself, and the most specific
// pattern wins (a literal segment beats ":name", left to right). escapedPath is r.URL.EscapedPath();
// segments are compared unescaped, one by one, as net/http's ServeMux does. A path with "." or ".."
// segments or bad escapes matches nothing. HEAD is governed by the GET rule.
func (p *CalleePolicy) DecideHTTP(method, escapedPath string, c *Caller) Decision {
	if p == nil {
		return Allow
	}
	segments, ok := splitPath(escapedPath)
	if !ok {
		return decide(c)
	}
	if method == "HEAD" {
		method = "GET"
	}
	return decide(c, bestMatch(p.doc.Load().http[method], segments))
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
