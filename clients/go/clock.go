package authz

import "time"

// Clock is time as the kit sees it: when tokens and keys expire, and when background refreshes run.
// Tests replace it to move time instead of waiting; production code leaves it nil (the system clock).
type Clock interface {
	Now() time.Time
	// AfterFunc runs f in its own goroutine after d, like time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc; Stop cancels it (false when it already ran or was stopped).
type Timer interface {
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// SystemClock is the real clock, used when a config leaves Clock nil.
var SystemClock Clock = systemClock{}

func clockOrSystem(c Clock) Clock {
	if c == nil {
		return SystemClock
	}
	return c
}
