package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
)

func TestContract(t *testing.T) {
	limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
		clock := limitertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 123456, time.UTC).UnixMicro())
		s := memory.New(clock.Now)
		return limitertest.Harness{Store: s, Advance: clock.Advance, Now: clock.Now, TTL: s.TTL}
	})
}

func TestContractWallClock(t *testing.T) {
	// The same suite with real time, as the Redis store sees it.
	limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
		s := memory.New(nil)
		return limitertest.Harness{Store: s, Now: func() int64 { return time.Now().UnixMicro() }, TTL: s.TTL}
	})
}

// TestUsageScenario runs the LLM-token budget scenario on a fake clock.
func TestUsageScenario(t *testing.T) {
	clock := limitertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	s := memory.New(clock.Now)
	limitertest.RunUsageScenario(t, limitertest.Harness{Store: s, Advance: clock.Advance, Now: clock.Now, TTL: s.TTL})
}

// TestStatsCountCut: tokens the debt floor cuts off usage charges are
// counted in the store's stats.
func TestStatsCountCut(t *testing.T) {
	s := memory.New(limitertest.NewClock(1_000_000_000).Now)
	rl := limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour, Charge: limiter.ChargeUsage, MaxDebt: 5}
	rt, err := rl.Rate()
	if err != nil {
		t.Fatal(err)
	}
	res := make([]limiter.BucketResult, 1)
	for _, c := range []uint64{30, 3} { // 10-30 = -20 floored at -5: 15 cut; then 3
		if _, err := s.Apply(context.Background(), []limiter.BucketRequest{{Key: "u", Rate: rt, Cost: c, Op: limiter.OpCharge}}, res); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Cut; got != 18 {
		t.Fatalf("stats cut = %d tokens, want 18", got)
	}
}
