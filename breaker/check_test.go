package breaker_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
)

// TestNoOpenPastOpenDuration checks that an idle breaker whose open period
// has passed reads HALF_OPEN, from State and from Snapshot, with the probe
// due, and that the hook is told of the change.
func TestNoOpenPastOpenDuration(t *testing.T) {
	for _, read := range []struct {
		name string
		fn   func(*breaker.Breaker) breaker.State
	}{
		{"State", (*breaker.Breaker).State},
		{"Snapshot", func(b *breaker.Breaker) breaker.State { return b.Snapshot().State }},
	} {
		t.Run(read.name, func(t *testing.T) {
			clk := newFakeClock()
			var (
				mu      sync.Mutex
				changes []string
			)
			cfg := testConfig(clk)
			cfg.ConsecutiveFailures = 1
			cfg.OnStateChange = func(_ string, from, to breaker.State) {
				mu.Lock()
				changes = append(changes, from.String()+">"+to.String())
				mu.Unlock()
			}
			b := mustNew(t, cfg)
			call(t, b, fail)
			openedAt := clk.Now()
			clk.Advance(5*time.Second - time.Nanosecond)
			if got := read.fn(b); got != breaker.StateOpen {
				t.Fatalf("within the open period: %v, want open", got)
			}
			clk.Advance(time.Hour)
			if got := read.fn(b); got != breaker.StateHalfOpen {
				t.Fatalf("an hour past the open period: %v, want half_open", got)
			}
			s := b.Snapshot()
			if s.State != breaker.StateHalfOpen || !s.NextProbeAt.Equal(openedAt.Add(5*time.Second)) || s.HalfOpenProbes != 0 {
				t.Fatalf("snapshot %+v: want half_open, probe due since %v", s, openedAt.Add(5*time.Second))
			}
			mu.Lock()
			got := slices.Clone(changes)
			mu.Unlock()
			if want := []string{"closed>open", "open>half_open"}; !slices.Equal(got, want) {
				t.Fatalf("hook saw %v, want %v", got, want)
			}
			// The probe is still one call, as before.
			call(t, b, ok)
			wantState(t, b, breaker.StateClosed)
		})
	}
}

// TestReportCheck covers a background check as the recovery test: it
// changes nothing while CLOSED, within the open period or forced open;
// once due, a pass closes the breaker and a failure reopens it.
func TestReportCheck(t *testing.T) {
	errPing := errors.New("ping: connection refused")

	t.Run("closed", func(t *testing.T) {
		cfg := testConfig(newFakeClock())
		cfg.ConsecutiveFailures = 1
		b := mustNew(t, cfg)
		for range 3 {
			if b.ReportCheck(errPing) {
				t.Fatal("a failing check changed a closed breaker")
			}
		}
		wantState(t, b, breaker.StateClosed)
		if s := b.Snapshot(); s.WindowCalls != 0 || s.ConsecutiveFailures != 0 {
			t.Fatalf("checks were counted as calls: %+v", s)
		}
	})

	t.Run("pass closes once due", func(t *testing.T) {
		clk := newFakeClock()
		b := tripped(t, clk, 3)
		clk.Advance(5*time.Second - time.Nanosecond)
		if b.ReportCheck(nil) {
			t.Fatal("a passing check ended the open period early")
		}
		wantState(t, b, breaker.StateOpen)
		clk.Advance(time.Nanosecond)
		if !b.ReportCheck(nil) {
			t.Fatal("a passing check did not change a breaker due a probe")
		}
		wantState(t, b, breaker.StateClosed)
		call(t, b, ok)
	})

	t.Run("pass closes half open", func(t *testing.T) {
		clk := newFakeClock()
		b := tripped(t, clk, 3)
		clk.Advance(5 * time.Second)
		call(t, b, ok) // one probe of three
		wantState(t, b, breaker.StateHalfOpen)
		b.ReportCheck(nil)
		wantState(t, b, breaker.StateClosed)
	})

	t.Run("failure reopens", func(t *testing.T) {
		clk := newFakeClock()
		b := tripped(t, clk, 1)
		clk.Advance(7 * time.Second)
		if !b.ReportCheck(errPing) {
			t.Fatal("a failing check did not change a breaker due a probe")
		}
		wantState(t, b, breaker.StateOpen)
		s := b.Snapshot()
		if !s.OpenedAt.Equal(clk.Now()) || !s.NextProbeAt.Equal(clk.Now().Add(5*time.Second)) || s.ConsecutiveFailures != 2 {
			t.Fatalf("snapshot %+v: want reopened now for 5s, 2 failures", s)
		}
		wantRejected(t, b)
		clk.Advance(5 * time.Second)
		b.ReportCheck(nil)
		wantState(t, b, breaker.StateClosed)
	})

	t.Run("forced", func(t *testing.T) {
		clk := newFakeClock()
		cfg := testConfig(clk)
		cfg.ConsecutiveFailures = 1
		b := mustNew(t, cfg)
		b.ForceOpen()
		clk.Advance(time.Hour)
		if b.ReportCheck(nil) {
			t.Fatal("a passing check changed a forced breaker")
		}
		wantState(t, b, breaker.StateOpen)
	})
}
