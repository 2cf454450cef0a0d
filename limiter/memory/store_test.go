package memory_test

import (
	"testing"
	"time"

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
