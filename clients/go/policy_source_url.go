package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A source that starts with a URL scheme ("https://…") is a URL; anything else is a file path.
var urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

func isURLSource(source string) bool { return urlScheme.MatchString(source) }

// urlSource is a callee policy served over HTTP(S) by a configuration center (Consul's KV with ?raw, a
// plain web server): one GET per read, conditional on the last answer's ETag. Redirects are never
// followed: a 3xx is a failed read, so a compromised or misconfigured server cannot move the policy to
// another scheme or host without anyone noticing.
type urlSource struct {
	url     string // as configured, secrets included: what is requested
	shown   string // what errors and logs say
	client  *http.Client
	header  http.Header
	timeout time.Duration
	clock   Clock

	mu   sync.Mutex
	etag string
	body []byte // the last 2xx answer, which a 304 means again
}

// newURLSource checks a URL source: https, or http with WithPlainHTTP; a host; no fragment.
func newURLSource(source string, o *policyOptions) (*urlSource, error) {
	refuse := func(shown, why string) error {
		return &PolicyError{Code: ErrCodePolicyRead, Source: shown, Message: why}
	}
	u, err := url.Parse(source)
	if err != nil {
		return nil, refuse(urlScheme.FindString(source)+"…", "not a valid URL")
	}
	shown := shownURL(u)
	switch {
	case u.Scheme == "http" && !o.plainHTTP:
		return nil, refuse(shown, "an http:// source needs WithPlainHTTP (whoever can change the answer decides who may call)")
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, refuse(shown, "a URL source must be https:// (or http:// with WithPlainHTTP)")
	case u.Hostname() == "":
		return nil, refuse(shown, "a URL source needs a host")
	case u.Fragment != "" || strings.Contains(source, "#"):
		return nil, refuse(shown, "a URL source has no fragment")
	}
	timeout := o.timeout
	if timeout <= 0 {
		timeout = DefaultPolicyFetchTimeout
	}
	// Direct connections only (no HTTP_PROXY from the environment), as for the JWKS.
	// No Accept-Encoding (DisableCompression): the answer is the document as stored, of at most 1 MiB as
	// sent, and read as the TypeScript SDK reads it; an encoded answer is refused.
	transport := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: timeout, MaxResponseHeaderBytes: 64 << 10, DisableCompression: true}
	if o.tls != nil {
		transport.TLSClientConfig = o.tls.Clone()
	}
	return &urlSource{
		url: u.String(), shown: shown, header: o.header, timeout: timeout, clock: o.clock,
		client: &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}, nil
}

// shownURL is a URL as logs may show it: scheme, host (lower case, without a default port) and path;
// no user information, and a query only as "?redacted" — either may hold a secret.
func shownURL(u *url.URL) string {
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port := u.Port(); port != "" && !(scheme == "https" && port == "443") && !(scheme == "http" && port == "80") {
		host += ":" + port
	}
	shown := scheme + "://" + host + u.EscapedPath()
	if u.RawQuery != "" || u.ForceQuery {
		shown += "?redacted"
	}
	return shown
}

func (s *urlSource) name() string                   { return s.shown }
func (s *urlSource) defaultInterval() time.Duration { return DefaultPolicyPullInterval }
func (s *urlSource) close()                         { s.client.CloseIdleConnections() }

// after: the interval after a success; after failures, 1 s doubling up to the interval; either
// jittered by ±10 %, so that a fleet started together does not pull together.
func (s *urlSource) after(interval time.Duration, failures int) time.Duration {
	d := interval
	if failures > 0 {
		d = min(time.Second<<min(failures-1, 20), interval)
	}
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

func (s *urlSource) refuse(why string) error {
	return &PolicyError{Code: ErrCodePolicyRead, Source: s.shown, Message: "cannot fetch: " + why}
}

// read fetches the document: a 2xx answer of at most 1 MiB (a 304 repeats the last one), within the
// timeout, measured on the policy's clock.
func (s *urlSource) read(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	deadline := s.clock.AfterFunc(s.timeout, func() { timedOut.Store(true); cancel() })
	defer deadline.Stop()
	fail := func(err error) ([]byte, error) {
		if timedOut.Load() {
			return nil, s.refuse(fmt.Sprintf("no complete answer within %s", s.timeout))
		}
		return nil, s.refuse(describeFetchError(err))
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fail(err)
	}
	for name, values := range s.header {
		req.Header[name] = values
	}
	req.Header.Set("Accept", "application/json")
	s.mu.Lock()
	etag, last := s.etag, s.body
	s.mu.Unlock()
	conditional := etag != "" && last != nil
	if conditional {
		req.Header.Set("If-None-Match", etag)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer res.Body.Close()
	switch code := res.StatusCode; {
	// A 304 means the answer whose ETag was sent; to a request that sent none it names no document.
	case code == http.StatusNotModified && conditional:
		return last, nil
	case code == http.StatusNotModified:
		return nil, s.refuse("answered 304 to a request without If-None-Match")
	case code >= 300 && code < 400:
		return nil, s.refuse(fmt.Sprintf("answered %d: redirects are not followed (configure the final URL)", code))
	case code < 200 || code > 299:
		return nil, s.refuse(fmt.Sprintf("answered %d", code))
	case res.ContentLength > maxPolicyBytes:
		return nil, s.refuse("larger than 1 MiB")
	}
	if enc := res.Header.Values("Content-Encoding"); len(enc) > 0 && !(len(enc) == 1 && strings.EqualFold(strings.TrimSpace(enc[0]), "identity")) {
		shown, _ := json.Marshal(truncate(strings.Join(enc, ", "), 40))
		return nil, s.refuse(fmt.Sprintf("answered with Content-Encoding %s, which was not asked for", shown))
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxPolicyBytes+1))
	if err != nil {
		return fail(err)
	}
	if len(data) > maxPolicyBytes {
		return nil, s.refuse("larger than 1 MiB")
	}
	s.mu.Lock()
	s.etag, s.body = res.Header.Get("ETag"), data
	s.mu.Unlock()
	return data, nil
}

// truncate is s cut to at most n bytes (for a header value quoted in an error).
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// describeFetchError says why a request failed without the URL (a *url.Error spells it out, user
// information and query included).
func describeFetchError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var opErr *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "unreachable: " + opErr.Err.Error()
	}
	return err.Error()
}
