package memory_test

import (
	"sync"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now int64
}

func (c *fakeClock) Now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now += d.Microseconds()
	c.mu.Unlock()
}

func TestContract(t *testing.T) {
	limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
		clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 123456, time.UTC).UnixMicro()}
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
