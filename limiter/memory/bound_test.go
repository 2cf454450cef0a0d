package memory_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
)

func yearRate(t *testing.T, perYear uint32) limiter.Rate {
	t.Helper()
	rl := limiter.RateLimit{Unit: limiter.Year, RequestsPerUnit: perYear}
	r, err := rl.Rate()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func take(t *testing.T, s *memory.Store, key string, r limiter.Rate, cost uint64) bool {
	t.Helper()
	res := make([]limiter.BucketResult, 1)
	ok, err := s.Apply(context.Background(), []limiter.BucketRequest{{Key: key, Rate: r, Cost: cost, Op: limiter.OpTake}}, res)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A flood of distinct keys, each a nearly full bucket under a yearly
// limit (which never refills in time to be dropped), stays within the
// bound in count and heap; it evicts its own nearly full buckets, never
// the heavily indebted one, and the debt it forgets is what the stats say.
func TestFloodStaysBoundedAndKeepsIndebtedBucket(t *testing.T) {
	const max = 64 * 200
	clock := limitertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	s, err := memory.NewWithConfig(clock.Now, memory.Config{MaxBuckets: max})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.MaxBuckets(); got != max {
		t.Fatalf("MaxBuckets() = %d, want %d", got, max)
	}
	r := yearRate(t, 100)
	// The legitimate client has spent 90 of its 100 tokens for the year.
	if !take(t, s, "victim", r, 90) {
		t.Fatal("first take of 90 denied")
	}

	base := heapInUse()
	key := func(i int) string { return "flood/" + strconv.Itoa(i) }
	for i := range max {
		if !take(t, s, key(i), r, 1) {
			t.Fatalf("flood key %d refused", i)
		}
	}
	full := heapInUse()
	const flood = 20 * max
	for i := max; i < flood; i++ {
		// New keys always get their decision, evicting someone else.
		if !take(t, s, key(i), r, 1) {
			t.Fatalf("flood key %d refused", i)
		}
		if i%1000 == 0 {
			if n := s.Stats().Buckets; n > max {
				t.Fatalf("after %d keys the store holds %d buckets, over its bound %d", i, n, max)
			}
		}
	}
	end := heapInUse()
	st := s.Stats()
	if st.Buckets > max {
		t.Fatalf("the store holds %d buckets, over its bound %d", st.Buckets, max)
	}
	// Twenty times the keys: the heap may not grow past 2.5 times what the
	// first max buckets took. Churn leaves tombstones in Go's maps, so each
	// shard's table doubles once (1.8 times measured) and then holds.
	if grown, filled := int64(end)-int64(base), int64(full)-int64(base); grown*2 > 5*filled {
		t.Errorf("heap grew %d bytes over %d keys, against %d for the first %d", grown, flood, filled, max)
	}
	t.Logf("heap: %d bytes for %d buckets (%d per bucket); %d after %d keys", full-base, max, int64(full-base)/max, int64(end)-int64(base), flood)

	// Nothing refilled (the clock stood still) or was dropped as full, so
	// every bucket beyond those held was evicted.
	if want := uint64(flood + 1 - st.Buckets); st.Evictions != want {
		t.Errorf("evictions = %d, want %d", st.Evictions, want)
	}
	// Every evicted bucket owed exactly one token: the victim's 90 were
	// never forgotten.
	if st.EvictedDebt != float64(st.Evictions) {
		t.Errorf("evicted debt = %v tokens, want %d (one per eviction)", st.EvictedDebt, st.Evictions)
	}
	if take(t, s, "victim", r, 11) {
		t.Error("the victim's debt was forgiven: 11 more tokens admitted where 10 were left")
	}
	if !take(t, s, "victim", r, 10) {
		t.Error("the victim's last 10 tokens were refused")
	}
}

// Flood buckets that owe more than a legitimate one push it out first:
// the forgotten debt is then the legitimate bucket's, and the stats count
// exactly it.
func TestEvictedDebtIsCounted(t *testing.T) {
	clock := limitertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	s, err := memory.NewWithConfig(clock.Now, memory.Config{MaxBuckets: memory.MinBuckets})
	if err != nil {
		t.Fatal(err)
	}
	r := yearRate(t, 100)
	// One bucket per shard: every insert into an occupied shard evicts its
	// bucket, whatever it owes.
	var spent float64
	for i := range 1000 {
		cost := uint64(1 + i%7)
		if !take(t, s, "k"+strconv.Itoa(i), r, cost) {
			t.Fatalf("key %d refused", i)
		}
		spent += float64(cost)
	}
	st := s.Stats()
	if st.Buckets > memory.MinBuckets {
		t.Fatalf("holds %d buckets, over %d", st.Buckets, memory.MinBuckets)
	}
	if want := uint64(1000 - st.Buckets); st.Evictions != want {
		t.Errorf("evictions = %d, want %d", st.Evictions, want)
	}
	// The debt held plus the debt forgotten is all that was spent.
	var held float64
	res := make([]limiter.BucketResult, 1)
	for i := range 1000 {
		k := "k" + strconv.Itoa(i)
		if _, ok := s.TTL(k); !ok {
			continue
		}
		if _, err := s.Apply(context.Background(), []limiter.BucketRequest{{Key: k, Rate: r, Op: limiter.OpPeek}}, res); err != nil {
			t.Fatal(err)
		}
		held += float64(r.Cap - res[0].Remaining)
	}
	if got := held + st.EvictedDebt; got != spent {
		t.Errorf("held %v + forgotten %v = %v tokens, want the %v spent", held, st.EvictedDebt, got, spent)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, n := range []int{-1, 0, memory.MinBuckets - 1} {
		if _, err := memory.NewWithConfig(nil, memory.Config{MaxBuckets: n}); err == nil {
			t.Errorf("max_buckets %d accepted", n)
		}
	}
	if err := memory.DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}
