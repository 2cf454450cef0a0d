package limitertest

import (
	"fmt"
	"runtime"
	"testing"
)

// run calls f on its own goroutine, as a test's Fatalf ends the goroutine
// it runs on, and waits for it.
func run(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// recorder is a testing.TB whose Fatalf records the failure and ends the
// calling goroutine, without failing the real test.
type recorder struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
