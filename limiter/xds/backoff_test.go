package xds

import (
	"testing"
	"time"
)

// TestBackoff: the wait doubles from initial up to max; jitter spreads
// each by random_factor either way, never beyond max; reset starts over.
func TestBackoff(t *testing.T) {
	s := time.Second
	cfg := BackoffConfig{Initial: 10 * s, Max: 60 * s, RandomFactor: 0.5}
	b := backoff{cfg: cfg, rand: func() float64 { return 0.5 }}
	var got []time.Duration
	for range 5 {
		got = append(got, b.next())
	}
	want := []time.Duration{10 * s, 20 * s, 40 * s, 60 * s, 60 * s}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("without jitter: %v, want %v", got, want)
		}
	}
	cfg.Jitter = true
	for _, tc := range []struct {
		r          float64
		first, cap time.Duration
	}{
		{0, 5 * s, 30 * s},         // the low end: half of each
		{0.999999, 15 * s, 60 * s}, // the high end, capped at max
		{0.5, 10 * s, 60 * s},      // the middle: the wait itself
	} {
		b := backoff{cfg: cfg, rand: func() float64 { return tc.r }}
		first := b.next()
		for range 5 {
			b.next()
		}
		last := b.next()
		if first.Round(time.Millisecond) != tc.first || last.Round(time.Millisecond) != tc.cap {
			t.Errorf("rand %v: first %v, last %v; want %v, %v", tc.r, first, last, tc.first, tc.cap)
		}
		b.reset()
		if d := b.next(); d != first {
			t.Errorf("rand %v: after reset %v, want %v", tc.r, d, first)
		}
	}
}
