package authz

import "time"

// SetTestHookBeforeFlight installs f between a Token call's look at the cache and its flight, for the
// tests of package authz_test; the returned func removes it.
func SetTestHookBeforeFlight(f func()) (restore func()) {
	testHookBeforeFlight = f
	return func() { testHookBeforeFlight = nil }
}

// DescribePolicySource is how LoadCalleePolicyWith reads a source string, for the conformance vectors
// of policy-sources.json: "file", or "url" and the URL as logs show it, or the refusal.
func DescribePolicySource(source string, plainHTTP bool) (kind, shown string, err error) {
	if !isURLSource(source) {
		return "file", "", nil
	}
	s, err := newURLSource(source, &policyOptions{plainHTTP: plainHTTP, clock: SystemClock})
	if err != nil {
		return "", "", err
	}
	return "url", s.name(), nil
}

// PolicyPullSchedule is the delay a URL source waits after a success (failures 0) or its failures-th
// failure in a row.
func PolicyPullSchedule(interval time.Duration, failures int) time.Duration {
	return (&urlSource{}).after(interval, failures)
}
