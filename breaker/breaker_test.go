package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
)

// fakeClock is a Clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var errBackend = errors.New("backend down")

// testConfig trips only by what a test turns on.
func testConfig(clk breaker.Clock) breaker.Config {
	return breaker.Config{
		MinCalls:         10,
		Window:           10 * time.Second,
		WindowBuckets:    10,
		OpenDuration:     5 * time.Second,
		HalfOpenMaxCalls: 1,
		Clock:            clk,
	}
}

func mustNew(t *testing.T, cfg breaker.Config) *breaker.Breaker {
	t.Helper()
	b, err := breaker.New("test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ok(context.Context) error   { return nil }
func fail(context.Context) error { return errBackend }

// call runs one Do with fn and checks that Do returned fn's error.
func call(t *testing.T, b *breaker.Breaker, fn func(context.Context) error) {
	t.Helper()
	want := fn(context.Background())
	if err := b.Do(context.Background(), fn); !errors.Is(err, want) {
		t.Fatalf("Do returned %v, want %v", err, want)
	}
}

func wantState(t *testing.T, b *breaker.Breaker, want breaker.State) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("state %v, want %v", got, want)
	}
}

// wantRejected checks that Do refuses with ErrOpen without calling fn.
func wantRejected(t *testing.T, b *breaker.Breaker) {
	t.Helper()
	called := false
	err := b.Do(context.Background(), func(context.Context) error { called = true; return nil })
	if !errors.Is(err, breaker.ErrOpen) || called {
		t.Fatalf("Do = %v (fn called: %v), want ErrOpen without calling fn", err, called)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[breaker.State]string{
		breaker.StateClosed: "closed", breaker.StateHalfOpen: "half_open", breaker.StateOpen: "open", 7: "state(7)",
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
	if breaker.StateClosed != 0 || breaker.StateHalfOpen != 1 || breaker.StateOpen != 2 {
		t.Error("state values must match the sluice_breaker_state gauge: 0 closed, 1 half-open, 2 open")
	}
}

func TestValidate(t *testing.T) {
	if err := breaker.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(*breaker.Config)
		field string
	}{
		{"negative consecutive", func(c *breaker.Config) { c.ConsecutiveFailures = -1 }, "consecutive_failures"},
		{"rate above 1", func(c *breaker.Config) { c.FailureRateThreshold = 1.5 }, "failure_rate_threshold"},
		{"negative rate", func(c *breaker.Config) { c.FailureRateThreshold = -0.1 }, "failure_rate_threshold"},
		{"slow rate above 1", func(c *breaker.Config) { c.SlowCallRateThreshold = 2 }, "slow_call_rate_threshold"},
		{"negative min calls", func(c *breaker.Config) { c.MinCalls = -1 }, "min_calls"},
		{"no window", func(c *breaker.Config) { c.Window = 0 }, "window"},
		{"buckets too short", func(c *breaker.Config) { c.Window = 5 * time.Millisecond }, "window"},
		{"no buckets", func(c *breaker.Config) { c.WindowBuckets = 0 }, "window_buckets"},
		{"too many buckets", func(c *breaker.Config) { c.WindowBuckets = breaker.MaxWindowBuckets + 1 }, "window_buckets"},
		{"negative slow duration", func(c *breaker.Config) { c.SlowCallDuration = -1 }, "slow_call_duration"},
		{"slow rate without duration", func(c *breaker.Config) { c.SlowCallDuration = 0 }, "slow_call_duration"},
		{"negative call timeout", func(c *breaker.Config) { c.CallTimeout = -time.Second }, "call_timeout"},
		{"no open duration", func(c *breaker.Config) { c.OpenDuration = 0 }, "open_duration"},
		{"no probes", func(c *breaker.Config) { c.HalfOpenMaxCalls = 0 }, "half_open_max_calls"},
		{"never trips", func(c *breaker.Config) {
			c.ConsecutiveFailures, c.FailureRateThreshold, c.SlowCallRateThreshold = 0, 0, 0
		}, "consecutive_failures"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := breaker.DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			var ce *breaker.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Validate() = %v, want a ConfigError for %s", err, tc.field)
			}
			if _, err := breaker.New("x", c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if _, err := breaker.New("", breaker.DefaultConfig()); err == nil {
		t.Fatal("New accepted an empty name")
	}
}

func TestTripOnConsecutiveFailures(t *testing.T) {
	cfg := testConfig(newFakeClock())
	cfg.ConsecutiveFailures = 3
	b := mustNew(t, cfg)
	call(t, b, fail)
	call(t, b, fail)
	call(t, b, ok) // breaks the run
	call(t, b, fail)
	call(t, b, fail)
	wantState(t, b, breaker.StateClosed)
	call(t, b, fail)
	wantState(t, b, breaker.StateOpen)
	wantRejected(t, b)
}

func TestTripOnFailureRate(t *testing.T) {
	cfg := testConfig(newFakeClock())
	cfg.FailureRateThreshold = 0.5
	cfg.MinCalls = 10
	b := mustNew(t, cfg)
	// 6 of the first 8 fail: above the threshold, but fewer than MinCalls.
	for _, fn := range []func(context.Context) error{fail, fail, fail, ok, fail, fail, fail, ok, ok} {
		call(t, b, fn)
	}
	wantState(t, b, breaker.StateClosed)
	// The 10th call makes 7 of 10.
	call(t, b, fail)
	wantState(t, b, breaker.StateOpen)
}

func TestFailureRateBelowThreshold(t *testing.T) {
	cfg := testConfig(newFakeClock())
	cfg.FailureRateThreshold = 0.5
	cfg.MinCalls = 4
	b := mustNew(t, cfg)
	for range 20 { // 1 in 3 fails
		call(t, b, ok)
		call(t, b, fail)
		call(t, b, ok)
	}
	wantState(t, b, breaker.StateClosed)
}

func TestTripOnSlowCallRate(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk)
	cfg.SlowCallDuration = 100 * time.Millisecond
	cfg.SlowCallRateThreshold = 0.5
	cfg.MinCalls = 4
	b := mustNew(t, cfg)
	slow := func(context.Context) error { clk.Advance(150 * time.Millisecond); return nil }
	call(t, b, ok)
	call(t, b, slow)
	call(t, b, ok)
	wantState(t, b, breaker.StateClosed)
	if s := b.Snapshot(); s.WindowCalls != 3 || s.WindowSlowCalls != 1 || s.WindowFailures != 0 {
		t.Fatalf("snapshot %+v, want 3 calls, 1 slow, 0 failures", s)
	}
	call(t, b, slow) // 2 of 4 slow
	wantState(t, b, breaker.StateOpen)
}

func tripped(t *testing.T, clk *fakeClock, probes int) *breaker.Breaker {
	t.Helper()
	cfg := testConfig(clk)
	cfg.ConsecutiveFailures = 1
	cfg.HalfOpenMaxCalls = probes
	b := mustNew(t, cfg)
	call(t, b, fail)
	wantState(t, b, breaker.StateOpen)
	return b
}

func TestOpenThenHalfOpenThenClosed(t *testing.T) {
	clk := newFakeClock()
	b := tripped(t, clk, 2)
	openedAt := clk.Now()
	clk.Advance(5*time.Second - time.Nanosecond)
	wantRejected(t, b)
	clk.Advance(time.Nanosecond)
	wantState(t, b, breaker.StateHalfOpen) // the next call is the probe
	if s := b.Snapshot(); !s.OpenedAt.Equal(openedAt) || !s.NextProbeAt.Equal(openedAt.Add(5*time.Second)) {
		t.Fatalf("snapshot %+v: want opened_at %v, next probe %v", s, openedAt, openedAt.Add(5*time.Second))
	}
	var during breaker.State
	call(t, b, func(context.Context) error { during = b.State(); return nil })
	if during != breaker.StateHalfOpen {
		t.Fatalf("state during the probe %v, want half_open", during)
	}
	wantState(t, b, breaker.StateHalfOpen) // one of two probes done
	call(t, b, ok)
	wantState(t, b, breaker.StateClosed)
	if s := b.Snapshot(); !s.OpenedAt.IsZero() || !s.NextProbeAt.IsZero() || s.ConsecutiveFailures != 0 || s.WindowCalls != 0 {
		t.Fatalf("closed snapshot %+v, want counts cleared", s)
	}
}

func TestHalfOpenProbeFailureReopens(t *testing.T) {
	clk := newFakeClock()
	b := tripped(t, clk, 3)
	clk.Advance(5 * time.Second)
	call(t, b, ok)
	call(t, b, fail)
	wantState(t, b, breaker.StateOpen)
	s := b.Snapshot()
	if !s.OpenedAt.Equal(clk.Now()) || !s.NextProbeAt.Equal(clk.Now().Add(5*time.Second)) {
		t.Fatalf("snapshot %+v: want reopened now, next probe in 5s", s)
	}
	wantRejected(t, b)
	clk.Advance(5 * time.Second)
	for range 3 {
		call(t, b, ok)
	}
	wantState(t, b, breaker.StateClosed)
}

func TestSlowProbeReopens(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk)
	cfg.ConsecutiveFailures = 1
	cfg.SlowCallDuration = 100 * time.Millisecond
	cfg.SlowCallRateThreshold = 0.9
	b := mustNew(t, cfg)
	call(t, b, fail)
	clk.Advance(5 * time.Second)
	call(t, b, func(context.Context) error { clk.Advance(time.Second); return nil })
	wantState(t, b, breaker.StateOpen)
}

func TestHalfOpenProbeLimit(t *testing.T) {
	clk := newFakeClock()
	b := tripped(t, clk, 2)
	clk.Advance(5 * time.Second)
	done1, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	done2, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	before := b.Snapshot().Rejections
	if _, err := b.Allow(); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("third probe: Allow = %v, want ErrOpen", err)
	}
	wantRejected(t, b)
	s := b.Snapshot()
	if s.Rejections != before+2 || s.HalfOpenProbes != 2 || s.State != breaker.StateHalfOpen {
		t.Fatalf("snapshot %+v, want 2 more rejections and 2 probes", s)
	}
	// A probe whose caller gave up frees its slot for another caller.
	done1(context.Canceled)
	done3, err := b.Allow()
	if err != nil {
		t.Fatalf("after a cancelled probe: %v", err)
	}
	done2(nil)
	wantState(t, b, breaker.StateHalfOpen)
	done3(nil)
	wantState(t, b, breaker.StateClosed)
	done3(errBackend) // extra done calls are ignored
	wantState(t, b, breaker.StateClosed)
}

func TestResetFromOpen(t *testing.T) {
	clk := newFakeClock()
	b := tripped(t, clk, 1)
	b.Reset()
	wantState(t, b, breaker.StateClosed)
	call(t, b, ok)
	if s := b.Snapshot(); s.WindowCalls != 1 || s.WindowFailures != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("snapshot after reset %+v", s)
	}
}

func TestForceOpen(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk)
	cfg.ConsecutiveFailures = 3
	b := mustNew(t, cfg)
	call(t, b, ok)
	b.ForceOpen()
	wantState(t, b, breaker.StateOpen)
	wantRejected(t, b)
	clk.Advance(time.Hour) // no probes while forced
	wantRejected(t, b)
	s := b.Snapshot()
	if !s.Forced || !s.NextProbeAt.IsZero() || !s.OpenedAt.Equal(clk.Now().Add(-time.Hour)) {
		t.Fatalf("snapshot %+v, want forced, no next probe", s)
	}
	b.Reset()
	wantState(t, b, breaker.StateClosed)
	call(t, b, ok)

	// Forcing a breaker that tripped by itself stops its probes too.
	b = tripped(t, clk, 1)
	b.ForceOpen()
	clk.Advance(time.Hour)
	wantRejected(t, b)
}

func TestWindowSlides(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk) // 10 s window in 1 s buckets
	cfg.FailureRateThreshold = 0.5
	cfg.MinCalls = 4
	b := mustNew(t, cfg)
	call(t, b, fail)
	call(t, b, fail)
	clk.Advance(5 * time.Second)
	call(t, b, fail)
	if s := b.Snapshot(); s.WindowCalls != 3 || s.WindowFailures != 3 {
		t.Fatalf("snapshot %+v, want 3 failures in the window", s)
	}
	clk.Advance(5 * time.Second) // the first two are 10 s old
	if s := b.Snapshot(); s.WindowCalls != 1 || s.WindowFailures != 1 {
		t.Fatalf("snapshot %+v, want the old bucket forgotten", s)
	}
	// 1 old failure + 3 successes: 4 calls, 25%.
	call(t, b, ok)
	call(t, b, ok)
	call(t, b, ok)
	clk.Advance(30 * time.Second) // more than a whole window
	if s := b.Snapshot(); s.WindowCalls != 0 {
		t.Fatalf("snapshot %+v, want an empty window", s)
	}
	// Were the old failures remembered, 3 more would trip the breaker.
	call(t, b, fail)
	call(t, b, fail)
	call(t, b, fail)
	wantState(t, b, breaker.StateClosed)
	call(t, b, ok)
	call(t, b, fail) // 4 of 5
	wantState(t, b, breaker.StateOpen)
}

func TestHookOrderOutsideLock(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk)
	cfg.ConsecutiveFailures = 1
	var (
		b   *breaker.Breaker
		got []string
	)
	cfg.OnStateChange = func(name string, from, to breaker.State) {
		// Reading the breaker from the hook must not deadlock, and must see
		// the state the change led to.
		if s := b.State(); s != to {
			t.Errorf("State() in hook = %v, want %v", s, to)
		}
		_ = b.Snapshot()
		got = append(got, fmt.Sprintf("%s:%v>%v", name, from, to))
	}
	b = mustNew(t, cfg)
	call(t, b, fail)
	clk.Advance(5 * time.Second)
	call(t, b, fail) // probe fails
	clk.Advance(5 * time.Second)
	call(t, b, ok) // probe succeeds
	b.ForceOpen()
	b.Reset()
	b.Reset() // no change, no call
	want := []string{
		"test:closed>open", "test:open>half_open", "test:half_open>open",
		"test:open>half_open", "test:half_open>closed", "test:closed>open", "test:open>closed",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("hook calls\n got %v\nwant %v", got, want)
	}
}

func TestHookChangingState(t *testing.T) {
	cfg := testConfig(newFakeClock())
	cfg.ConsecutiveFailures = 1
	var (
		b   *breaker.Breaker
		got []string
	)
	cfg.OnStateChange = func(_ string, from, to breaker.State) {
		got = append(got, fmt.Sprintf("%v>%v", from, to))
		if to == breaker.StateOpen {
			b.Reset() // a hook may change the state; its change comes next
		}
	}
	b = mustNew(t, cfg)
	call(t, b, fail)
	wantState(t, b, breaker.StateClosed)
	if want := []string{"closed>open", "open>closed"}; !slices.Equal(got, want) {
		t.Fatalf("hook calls %v, want %v", got, want)
	}
}

func TestCallerContextIsNotAFailure(t *testing.T) {
	cfg := testConfig(newFakeClock())
	cfg.ConsecutiveFailures = 1
	cfg.FailureRateThreshold = 0.1
	cfg.MinCalls = 1
	b := mustNew(t, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Do(ctx, func(ctx context.Context) error { return ctx.Err() }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := b.Do(ctx, func(ctx context.Context) error { return fmt.Errorf("read: %w", ctx.Err()) }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want context.DeadlineExceeded", err)
	}
	done, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	done(context.Canceled)
	wantState(t, b, breaker.StateClosed)
	if s := b.Snapshot(); s.WindowCalls != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("snapshot %+v: caller context errors were counted", s)
	}

	// Nor are they successes: they do not break a run of failures.
	cfg.ConsecutiveFailures = 2
	cfg.FailureRateThreshold = 0
	b = mustNew(t, cfg)
	call(t, b, fail)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_ = b.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	call(t, b, fail)
	wantState(t, b, breaker.StateOpen)
}

func TestCallTimeout(t *testing.T) {
	cfg := testConfig(nil) // CallTimeout runs on the wall clock
	cfg.ConsecutiveFailures = 1
	cfg.CallTimeout = 20 * time.Millisecond
	b := mustNew(t, cfg)
	hung := make(chan struct{})
	defer close(hung)
	start := time.Now()
	err := b.Do(context.Background(), func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-hung:
			return nil
		}
	})
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("Do took %v with a 20ms call timeout", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want context.DeadlineExceeded", err)
	}
	wantState(t, b, breaker.StateOpen) // the breaker's timeout is a failure

	// A call that finishes in time passes its context a deadline.
	b.Reset()
	err = b.Do(context.Background(), func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("no deadline")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, b, breaker.StateClosed)
}

func TestAllowCallTimeout(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk)
	cfg.ConsecutiveFailures = 1
	cfg.CallTimeout = time.Second
	b := mustNew(t, cfg)
	done, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(999 * time.Millisecond)
	done(nil)
	wantState(t, b, breaker.StateClosed)
	done, _ = b.Allow()
	clk.Advance(time.Second)
	done(nil) // in time for the caller, too late for the breaker
	wantState(t, b, breaker.StateOpen)
}

func TestIsFailure(t *testing.T) {
	errMiss := errors.New("not found")
	cfg := testConfig(newFakeClock())
	cfg.ConsecutiveFailures = 1
	cfg.IsFailure = func(err error) bool { return !errors.Is(err, errMiss) }
	b := mustNew(t, cfg)
	if err := b.Do(context.Background(), func(context.Context) error { return errMiss }); !errors.Is(err, errMiss) {
		t.Fatalf("Do = %v, want the error as is", err)
	}
	done, _ := b.Allow()
	done(errMiss)
	wantState(t, b, breaker.StateClosed)
	if s := b.Snapshot(); s.WindowCalls != 2 || s.WindowFailures != 0 {
		t.Fatalf("snapshot %+v, want 2 successes", s)
	}
	call(t, b, fail)
	wantState(t, b, breaker.StateOpen)
}

func TestPanicIsAFailure(t *testing.T) {
	clk := newFakeClock()
	b := tripped(t, clk, 1)
	clk.Advance(5 * time.Second)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic did not go on")
			}
		}()
		_ = b.Do(context.Background(), func(context.Context) error { panic("boom") })
	}()
	wantState(t, b, breaker.StateOpen) // the probe failed; its slot is not lost
}

func TestSnapshot(t *testing.T) {
	clk := newFakeClock()
	cfg := testConfig(clk)
	cfg.ConsecutiveFailures = 3
	cfg.SlowCallDuration = 100 * time.Millisecond
	b := mustNew(t, cfg)
	call(t, b, ok)
	call(t, b, func(context.Context) error { clk.Advance(200 * time.Millisecond); return errBackend })
	call(t, b, fail)
	want := breaker.Snapshot{
		Name: "test", State: breaker.StateClosed, ConsecutiveFailures: 2,
		WindowCalls: 3, WindowFailures: 2, WindowSlowCalls: 1,
	}
	if s := b.Snapshot(); s != want {
		t.Fatalf("snapshot\n got %+v\nwant %+v", s, want)
	}
	call(t, b, fail)
	wantRejected(t, b)
	wantRejected(t, b)
	openedAt := clk.Now()
	want = breaker.Snapshot{
		Name: "test", State: breaker.StateOpen, ConsecutiveFailures: 3,
		WindowCalls: 4, WindowFailures: 3, WindowSlowCalls: 1,
		OpenedAt: openedAt, NextProbeAt: openedAt.Add(5 * time.Second), Rejections: 2,
	}
	if s := b.Snapshot(); s != want {
		t.Fatalf("snapshot\n got %+v\nwant %+v", s, want)
	}
	if b.Name() != "test" {
		t.Fatalf("Name() = %q", b.Name())
	}
}

// TestConcurrent runs many goroutines with random outcomes through one
// breaker while the clock moves, under -race, and checks what must hold
// whatever the interleaving.
func TestConcurrent(t *testing.T) {
	clk := newFakeClock()
	cfg := breaker.DefaultConfig()
	cfg.Clock = clk
	cfg.MinCalls = 5
	cfg.OpenDuration = 50 * time.Millisecond
	cfg.SlowCallDuration = 5 * time.Millisecond
	var changes atomic.Int64
	var last atomic.Int32 // the state the previous hook call moved to
	cfg.OnStateChange = func(_ string, from, to breaker.State) {
		if prev := breaker.State(last.Swap(int32(to))); prev != from {
			t.Errorf("hook: change from %v, but the previous change went to %v", from, prev)
		}
		changes.Add(1)
	}
	b := mustNew(t, cfg)

	stop := make(chan struct{})
	var clockWG sync.WaitGroup
	clockWG.Add(1)
	go func() {
		defer clockWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
				clk.Advance(time.Millisecond)
				time.Sleep(10 * time.Microsecond)
			}
		}
	}()

	var wg sync.WaitGroup
	var calls, rejected atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			ctx := context.Background()
			for range 2000 {
				var fn func(context.Context) error
				switch r.IntN(10) {
				case 0, 1, 2:
					fn = fail
				case 3:
					fn = func(context.Context) error { clk.Advance(6 * time.Millisecond); return nil }
				default:
					fn = ok
				}
				switch r.IntN(20) {
				case 0:
					done, err := b.Allow()
					if err == nil {
						done(fn(ctx))
					}
				case 1:
					_ = b.Snapshot()
				case 2:
					if r.IntN(50) == 0 {
						b.Reset()
					}
				default:
					err := b.Do(ctx, fn)
					if errors.Is(err, breaker.ErrOpen) {
						rejected.Add(1)
					} else {
						calls.Add(1)
					}
				}
				if s := b.State(); s > breaker.StateOpen {
					t.Errorf("state %v", s)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	clockWG.Wait()

	s := b.Snapshot()
	if s.WindowFailures > s.WindowCalls || s.WindowSlowCalls > s.WindowCalls || s.WindowCalls < 0 {
		t.Fatalf("inconsistent snapshot %+v", s)
	}
	if s.Rejections < uint64(rejected.Load()) {
		t.Fatalf("snapshot counts %d rejections, Do returned ErrOpen %d times", s.Rejections, rejected.Load())
	}
	if breaker.State(last.Load()) != s.State && changes.Load() > 0 {
		t.Fatalf("last hook call went to %v, breaker is %v", breaker.State(last.Load()), s.State)
	}
	t.Logf("%d calls, %d rejected, %d state changes", calls.Load(), rejected.Load(), changes.Load())
	if changes.Load() == 0 {
		t.Fatal("the breaker never changed state; the test exercised nothing")
	}
}
