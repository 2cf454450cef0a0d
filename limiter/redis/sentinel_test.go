//go:build integration

package redis

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestSentinel runs the store contract through a Sentinel-managed master in
// both batching modes.
func TestSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Sentinel setup")
	}
	sn := limitertest.StartRedisSentinel(t)
	rc := goredis.NewFailoverClient(&goredis.FailoverOptions{MasterName: sn.MasterName, SentinelAddrs: []string{sn.SentinelAddr}})
	t.Cleanup(func() { _ = rc.Close() })
	bothModes(t, func(t *testing.T, batching string) {
		limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
			s := newURLStore(t, sn.URL(), batching)
			if s.Mode() != ModeSentinel {
				t.Fatalf("Mode = %s", s.Mode())
			}
			return ttlHarness(t, s, rc)
		})
	})
}

// TestSentinelFailoverUnderLoad kills the master while callers take from
// buckets through the store: calls fail for a while, none hangs past the
// timeout, the store follows the promoted replica without a restart, and
// over-admission is limited to the takes the replica had not yet received
// (measured and logged).
func TestSentinelFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Sentinel setup and fails it over")
	}
	for _, batching := range []string{"on", "off"} {
		t.Run("batching="+batching, func(t *testing.T) { testSentinelFailover(t, batching) })
	}
}

func testSentinelFailover(t *testing.T, batching string) {
	sn := limitertest.StartRedisSentinel(t)
	cfg := DefaultConfig()
	cfg.URL = sn.URL()
	cfg.Batching = batching
	cfg.ReadTimeout = 200 * time.Millisecond
	cfg.DialTimeout = 200 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Buckets that never refill within the test: every admission is
	// counted against a fixed capacity, so over-admission is exact.
	const buckets, capacity, callers = 8, 200, 16
	rt := mustRate(t, 1, limiter.Hour, capacity)
	base := uniqueKey("failover")
	keys := make([]string, buckets)
	for i := range keys {
		keys[i] = base + ":" + string(rune('a'+i))
	}
	var admitted [buckets]atomic.Int64
	var failed, ok atomic.Int64
	var slowest atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := make([]limiter.BucketResult, 1)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b := (c + i) % buckets
				start := time.Now()
				allowed, err := s.Apply(context.Background(), []limiter.BucketRequest{{Key: keys[b], Rate: rt, Cost: 1}}, res)
				d := time.Since(start)
				for {
					old := slowest.Load()
					if int64(d) <= old || slowest.CompareAndSwap(old, int64(d)) {
						break
					}
				}
				switch {
				case err != nil:
					failed.Add(1)
					time.Sleep(5 * time.Millisecond)
				case allowed:
					ok.Add(1)
					admitted[b].Add(1)
				default:
					ok.Add(1)
					// Slow down once empty: the test is about the
					// buckets being drained across the failover.
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	// Let about half of every bucket be taken, then kill the master.
	sum := func() int64 {
		var n int64
		for i := range admitted {
			n += admitted[i].Load()
		}
		return n
	}
	for sum() < buckets*capacity/2 {
		time.Sleep(time.Millisecond)
	}
	killedAt := time.Now()
	old := sn.KillMaster(t)
	// Every take admitted so far was paid on the old master: the most a
	// replica that received none of them could grant again.
	beforeKill := sum()
	promoted := sn.WaitFailover(t, old, 20*time.Second)
	failoverTook := time.Since(killedAt)
	// Calls succeed again, through the same store.
	okBefore := ok.Load()
	limitertest.Eventually(t, 10*time.Second, "100 successful calls after the failover to "+promoted, func() bool {
		return ok.Load() >= okBefore+100
	})
	recovered := time.Since(killedAt)
	// Drain the buckets completely.
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	var total, over int64
	for i := range admitted {
		n := admitted[i].Load()
		total += n
		over += max(n-capacity, 0)
	}
	t.Logf("master %s killed, %s promoted after %v; calls succeed again after %v; %d calls failed meanwhile; slowest call %v (timeout %v)",
		old, promoted, failoverTook.Round(time.Millisecond), recovered.Round(time.Millisecond), failed.Load(),
		time.Duration(slowest.Load()).Round(time.Millisecond), cfg.ReadTimeout)
	if d := time.Duration(slowest.Load()); d > cfg.ReadTimeout+cfg.DialTimeout+300*time.Millisecond {
		t.Errorf("a call took %v: hung past the timeout", d)
	}
	// Asynchronous replication loses the writes the replica had not
	// received when the master died: on loopback usually none or a few, on
	// a loaded machine (or under -race) up to its replication lag's worth,
	// and never more than was paid on the old master.
	if over > beforeKill {
		t.Errorf("over-admission %d, more than the %d takes paid on the old master", over, beforeKill)
	}
	// A take in flight when the master died may have been paid and
	// replicated with its reply lost: at most one per caller.
	var short int64
	for i := range admitted {
		short += max(capacity-admitted[i].Load(), 0)
	}
	t.Logf("admitted %d across %d buckets of %d: over-admission %d (takes the replica had not received), %d paid takes with lost replies", total, buckets, capacity, over, short)
	if short > callers {
		t.Errorf("%d tokens never admitted, more than the %d calls that can be in flight", short, callers)
	}
}
