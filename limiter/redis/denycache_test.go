//go:build integration

package redis

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// countingStore counts the calls that reach Redis.
type countingStore struct {
	limiter.Store
	calls atomic.Int64
}

func (s *countingStore) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	s.calls.Add(1)
	return s.Store.Apply(ctx, reqs, res)
}

// TestDenyCacheReplicasHotKey is the deny cache's accuracy test: one hot
// bucket over its limit, hammered through three replicas (each its own
// Redis store and deny cache) on one Redis, must admit exactly what the
// bucket allows over the run, with Redis calls near the refill rate rather
// than the request rate.
func TestDenyCacheReplicasHotKey(t *testing.T) {
	addr := limitertest.StartRedis(t)
	rc := rawClient(t, addr)
	const replicas, workers = 3, 16
	const rate, burst = 200, 20
	rt := mustRate(t, rate, limiter.Second, burst)
	key := uniqueKey("hot")
	type replica struct {
		cache *limiter.DenyCache
		redis *countingStore
	}
	var reps []replica
	for i := 0; i < replicas; i++ {
		cfg := DefaultConfig()
		cfg.URL = "redis://" + addr
		cfg.ReadTimeout = 2 * time.Second
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		cs := &countingStore{Store: s}
		reps = append(reps, replica{cache: limiter.NewDenyCache(cs, limiter.DenyCacheConfig{}), redis: cs})
	}
	duration := 2 * time.Second
	if testing.Short() {
		duration = 500 * time.Millisecond
	}
	var admitted, denied atomic.Int64
	start := redisNow(t, rc)
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for _, r := range reps {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reqs := []limiter.BucketRequest{{Key: key, Rate: rt, Cost: 1}}
				res := make([]limiter.BucketResult, 1)
				for time.Now().Before(stop) {
					ok, err := r.cache.Apply(context.Background(), reqs, res)
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						admitted.Add(1)
					} else {
						denied.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	end := redisNow(t, rc)
	elapsed := end - start
	// The bucket starts full: burst, then rate per second of Redis time
	// between the first and the last decision (both within [start, end]).
	allowance := burst + rate*elapsed/1_000_000
	var calls, hits, local int64
	for _, r := range reps {
		calls += r.redis.calls.Load()
		st := r.cache.Stats()
		hits += int64(st.Hits)
		local += int64(st.Local)
	}
	secs := float64(elapsed) / 1e6
	total := admitted.Load() + denied.Load()
	t.Logf("%.2fs: %d requests (%.0f/s), %d admitted, allowance %d; Redis calls %d (%.0f/s, refill %d/s); cache hits %d (%d without Redis)",
		secs, total, float64(total)/secs, admitted.Load(), allowance, calls, float64(calls)/secs, rate, hits, local)
	if admitted.Load() > allowance {
		t.Fatalf("over-admission: %d admitted, the bucket allows %d", admitted.Load(), allowance)
	}
	// Tokens that refilled in the last moments may not have been taken.
	if admitted.Load() < allowance*95/100-5 {
		t.Fatalf("under-admission: %d admitted, the bucket allows %d", admitted.Load(), allowance)
	}
	if perSec := float64(calls) / secs; perSec > 10*rate*replicas {
		t.Errorf("%.0f Redis calls per second for a refill of %d/s", perSec, rate)
	}
}
