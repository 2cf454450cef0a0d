package breaker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
)

func nop(context.Context) error { return nil }

// BenchmarkDo measures a call through a CLOSED breaker with a no-op fn,
// the cost the breaker adds to every store call.
func BenchmarkDo(b *testing.B) {
	noSlow := breaker.DefaultConfig()
	noSlow.SlowCallDuration, noSlow.SlowCallRateThreshold = 0, 0
	timeout := breaker.DefaultConfig()
	timeout.CallTimeout = time.Second
	cases := []struct {
		name string
		cfg  breaker.Config
	}{
		{"default", breaker.DefaultConfig()},
		{"no-slow-calls", noSlow},
		{"call-timeout", timeout},
	}
	ctx := context.Background()
	for _, c := range cases {
		br, err := breaker.New("bench", c.cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := br.Do(ctx, nop); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := br.Do(ctx, nop); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkDoOpen measures a call refused by an OPEN breaker.
func BenchmarkDoOpen(b *testing.B) {
	br, err := breaker.New("bench", breaker.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	br.ForceOpen()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := br.Do(ctx, nop); !errors.Is(err, breaker.ErrOpen) {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAllow measures the two-phase form through a CLOSED breaker.
func BenchmarkAllow(b *testing.B) {
	br, err := breaker.New("bench", breaker.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		done, err := br.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(nil)
	}
}

// BenchmarkClock is the clock read Do makes once per call (twice with
// slow-call tracking), for reading the figures above: on a virtual machine
// without a fast clock source it dominates them.
func BenchmarkClock(b *testing.B) {
	start := time.Now()
	var d time.Duration
	for b.Loop() {
		d += time.Since(start)
	}
	_ = d
}
