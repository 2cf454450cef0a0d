package limitertest

import (
	"errors"
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails t when it has not held
// within timeout. cond is a func() bool, or a func() error that returns nil
// once the condition holds and otherwise says why not; the last such error
// is in the failure message. what names the condition there.
//
// Polls start 1 ms apart and back off to 50 ms, so a quick condition is
// seen quickly and a slow one costs little CPU on a busy machine.
func Eventually[C func() bool | func() error](t testing.TB, timeout time.Duration, what string, cond C) {
	t.Helper()
	check := func() error {
		switch c := any(cond).(type) {
		case func() bool:
			if c() {
				return nil
			}
			return errNotYet
		case func() error:
			return c()
		}
		panic("unreachable")
	}
	deadline := time.Now().Add(timeout)
	poll := time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if errors.Is(err, errNotYet) {
				t.Fatalf("timed out after %v waiting for %s", timeout, what)
			} else {
				t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
			}
			return
		}
		time.Sleep(poll)
		poll = min(2*poll, 50*time.Millisecond)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
