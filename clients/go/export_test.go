package authz

// SetTestHookBeforeFlight installs f between a Token call's look at the cache and its flight, for the
// tests of package authz_test; the returned func removes it.
func SetTestHookBeforeFlight(f func()) (restore func()) {
	testHookBeforeFlight = f
	return func() { testHookBeforeFlight = nil }
}
