//go:build !unix

package authz

// openNonBlocking: no such flag here; the file type is still checked before reading.
const openNonBlocking = 0
