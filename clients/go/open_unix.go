//go:build unix

package authz

import "syscall"

// openNonBlocking opens a FIFO without waiting for a writer (a regular file reads as ever).
const openNonBlocking = syscall.O_NONBLOCK
