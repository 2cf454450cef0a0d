//go:build integration

package redis

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestContract runs the shared store contract against a real redis-server,
// with batching on and off. Redis keeps its own time, so Advance is nil
// and the suite sleeps.
func TestContract(t *testing.T) {
	addr := limitertest.StartRedis(t)
	bothModes(t, func(t *testing.T, batching string) {
		limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
			s := newTestStore(t, addr, batching)
			rc := rawClient(t, addr)
			return limitertest.Harness{
				Store: s,
				Now:   func() int64 { return time.Now().UnixMicro() },
				TTL: func(key string) (time.Duration, bool) {
					d, err := rc.PTTL(context.Background(), key).Result()
					if err != nil {
						t.Fatalf("PTTL %q: %v", key, err)
					}
					switch {
					case d == -2: // no such key
						return 0, false
					case d < 0: // a key without expiry: present, never full
						return 0, true
					}
					return d, true
				},
			}
		})
	})
}
