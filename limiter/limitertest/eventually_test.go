package limitertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	t.Run("holds after some polls", func(t *testing.T) {
		n := 0
		Eventually(t, 10*time.Second, "three polls", func() bool { n++; return n >= 3 })
		if n != 3 {
			t.Errorf("cond called %d times, want 3", n)
		}
	})
	t.Run("error cond", func(t *testing.T) {
		n := 0
		Eventually(t, 10*time.Second, "three polls", func() error {
			if n++; n < 3 {
				return fmt.Errorf("poll %d", n)
			}
			return nil
		})
		if n != 3 {
			t.Errorf("cond called %d times, want 3", n)
		}
	})
	t.Run("times out with the last error", func(t *testing.T) {
		r := &recorder{TB: t}
		run(func() { Eventually(r, 0, "the impossible", func() error { return errors.New("still no") }) })
		if !r.failed || !strings.Contains(r.msg, "the impossible: still no") {
			t.Errorf("failed=%v msg=%q, want a failure naming the condition and the last error", r.failed, r.msg)
		}
	})
	t.Run("times out on a bool", func(t *testing.T) {
		r := &recorder{TB: t}
		run(func() { Eventually(r, 0, "the impossible", func() bool { return false }) })
		if !r.failed || !strings.HasSuffix(r.msg, "waiting for the impossible") {
			t.Errorf("failed=%v msg=%q, want a failure naming the condition", r.failed, r.msg)
		}
	})
}
