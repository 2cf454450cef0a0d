//go:build integration

package redis

import (
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestUsageScenario runs the LLM-token budget scenario against a real
// redis-server for 3 s of real time.
func TestUsageScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s of real time")
	}
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr)
	limitertest.RunUsageScenario(t, limitertest.Harness{Store: s, Now: func() int64 { return time.Now().UnixMicro() }})
}
