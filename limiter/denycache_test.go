package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// countingStore counts the calls that reach the store behind the cache.
type countingStore struct {
	limiter.Store
	calls atomic.Int64
}

func (s *countingStore) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	s.calls.Add(1)
	return s.Store.Apply(ctx, reqs, res)
}

// TestDenyCacheContract runs the store contract through the cache.
func TestDenyCacheContract(t *testing.T) {
	limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
		c := limitertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 123456, time.UTC).UnixMicro())
		s := memory.New(c.Now)
		return limitertest.Harness{Store: limiter.NewDenyCache(s, limiter.DenyCacheConfig{Now: c.Now}),
			Advance: c.Advance, Now: c.Now, TTL: s.TTL}
	})
}

// TestDenyCacheExact drives a cached store and a plain one with the same
// random calls at the same times: every decision must agree, bucket by
// bucket. A bucket the cache answers reports from its bound: Remaining
// never below the store's, retry-after never above.
//
// With limit changes too: the cache forgets a bucket when a call brings
// another rate, and the store reads a bucket written under the old rate
// consistently under the new one (its debt falls at the new rate between
// writes), so a bound learned after the change holds as long as it says.
func TestDenyCacheExact(t *testing.T) {
	t.Run("fixed limits", func(t *testing.T) { testDenyCacheExact(t, false) })
	t.Run("limit changes", func(t *testing.T) { testDenyCacheExact(t, true) })
}

func testDenyCacheExact(t *testing.T, changes bool) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SLUICE_TEST_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	c := limitertest.NewClock(1_000_000_000)
	behind := &countingStore{Store: memory.New(c.Now)}
	cached := limiter.NewDenyCache(behind, limiter.DenyCacheConfig{Now: c.Now, Size: 64})
	plain := memory.New(c.Now)

	rates := []limiter.Rate{}
	for _, rl := range []limiter.RateLimit{
		{RequestsPerUnit: 10, Unit: limiter.Second, Burst: 5},
		{RequestsPerUnit: 3, Unit: limiter.Second, Burst: 3},
		{RequestsPerUnit: 100, Unit: limiter.Minute, Burst: 20},
		{RequestsPerUnit: 7, Unit: limiter.Second, Burst: 1},
	} {
		r, err := rl.Rate()
		if err != nil {
			t.Fatal(err)
		}
		rates = append(rates, r)
	}
	keys := []string{"a", "b", "c", "d", "e"}
	ctx := context.Background()
	const calls = 20000
	inexact := 0
	for n := 0; n < calls; n++ {
		c.Advance(time.Duration(rng.IntN(40_000)) * time.Microsecond)
		nb := 1 + rng.IntN(3)
		if rng.IntN(3) > 0 {
			nb = 1 // mostly single buckets, the common request
		}
		reqs := make([]limiter.BucketRequest, nb)
		for i := range reqs {
			k := rng.IntN(len(keys))
			r := rates[k%len(rates)]
			if changes && rng.IntN(50) == 0 {
				r = rates[rng.IntN(len(rates))] // a limit change
			}
			op := limiter.OpTake
			switch x := rng.IntN(40); {
			case x == 0:
				op = limiter.OpRefund
			case x == 1:
				op = limiter.OpPeek
			case x < 5:
				op = limiter.OpShadowTake
			}
			reqs[i] = limiter.BucketRequest{Key: keys[k], Rate: r, Cost: uint64(1 + rng.IntN(3)), Op: op}
			if rng.IntN(200) == 0 {
				reqs[i].Cost = r.Cap + 1
			}
		}
		got := make([]limiter.BucketResult, nb)
		want := make([]limiter.BucketResult, nb)
		okGot, err := cached.Apply(ctx, reqs, got)
		if err != nil {
			t.Fatal(err)
		}
		okWant, _ := plain.Apply(ctx, reqs, want)
		if os.Getenv("DEBUG_DENY") != "" {
			t.Logf("%d t=%d %+v -> %v %+v (store %v %+v) %+v", n, c.Now(), reqs, okGot, got, okWant, want, cached.Stats())
		}
		if okGot != okWant {
			t.Fatalf("call %d %+v: cached allowed=%v, store %v (%+v vs %+v)", n, reqs, okGot, okWant, got, want)
		}
		for i := range reqs {
			g, w := got[i], want[i]
			if g.OK != w.OK || g.Remaining < w.Remaining || g.ResetMicros > w.ResetMicros {
				t.Fatalf("call %d bucket %d %+v: cached %+v, store %+v", n, i, reqs[i], g, w)
			}
			if g != w {
				inexact++
			}
		}
	}
	st := cached.Stats()
	t.Logf("%d calls: %d reached the store, %d denied by the cache (%d without the store), %d entries; %d bucket statuses from a bound not exact",
		calls, behind.calls.Load(), st.Hits, st.Local, st.Entries, inexact)
	if st.Local == 0 || st.Hits == 0 {
		t.Fatalf("the cache answered nothing: %+v", st)
	}
}

// TestDenyCacheHotKey hammers one bucket that is over its limit from many
// goroutines: the store behind sees about two calls per token refilled,
// the rest are answered by the cache, and exactly the allowance passes.
func TestDenyCacheHotKey(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	behind := &countingStore{Store: memory.New(c.Now)}
	cached := limiter.NewDenyCache(behind, limiter.DenyCacheConfig{Now: c.Now})
	rl := limiter.RateLimit{RequestsPerUnit: 100, Unit: limiter.Second, Burst: 10}
	rt, _ := rl.Rate()
	var admitted, denied atomic.Int64
	const steps, workers, perStep = 200, 8, 50
	for step := 0; step < steps; step++ {
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := make([]limiter.BucketResult, 1)
				reqs := []limiter.BucketRequest{{Key: "hot", Rate: rt, Cost: 1}}
				for i := 0; i < perStep; i++ {
					ok, err := cached.Apply(context.Background(), reqs, res)
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
		wg.Wait()
		c.Advance(time.Millisecond) // 0.1 token per step
	}
	// 10 to start with, then 100/s over 200 ms (the last step's refill
	// comes after the last call).
	want := int64(10 + 100*(steps-1)/1000)
	calls := behind.calls.Load()
	t.Logf("%d admitted (want %d), %d denied, %d calls reached the store (%d requests)",
		admitted.Load(), want, denied.Load(), calls, admitted.Load()+denied.Load())
	if admitted.Load() != want {
		t.Fatalf("admitted %d, want exactly %d", admitted.Load(), want)
	}
	// Each step at most: one probe when a token may have come, plus the
	// calls that raced it before anything was remembered.
	if calls > int64(steps*2+workers*2) {
		t.Fatalf("%d calls reached the store for %d requests", calls, admitted.Load()+denied.Load())
	}
}

// heldStore holds each call while hold is set, until the test releases
// that call (by arrival order).
type heldStore struct {
	limiter.Store
	mu     sync.Mutex
	hold   bool
	gates  []chan struct{}
	closed []bool
}

func (h *heldStore) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	h.mu.Lock()
	var gate chan struct{}
	if h.hold {
		gate = make(chan struct{})
		h.gates = append(h.gates, gate)
		h.closed = append(h.closed, false)
	}
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return h.Store.Apply(ctx, reqs, res)
}

func (h *heldStore) setHold(on bool) { h.mu.Lock(); h.hold = on; h.mu.Unlock() }
func (h *heldStore) calls() int      { h.mu.Lock(); defer h.mu.Unlock(); return len(h.gates) }

// release lets call i through; -1: every call still held, and no more holds.
func (h *heldStore) release(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i < 0 {
		h.hold = false
	}
	for j := range h.gates {
		if (j == i || i < 0) && !h.closed[j] {
			close(h.gates[j])
			h.closed[j] = true
		}
	}
}

// TestDenyCacheWaitersFollowProbes: a probe that reaches the store just
// before the refill brings back a bound already run out; the next caller
// probes again and the other waiters wait for that probe rather than all
// go to the store. Its answer (the token taken) denies them.
func TestDenyCacheWaitersFollowProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const second = 1_000_000
		c := limitertest.NewClock(1_000_000_000)
		h := &heldStore{Store: memory.New(c.Now)}
		cached := limiter.NewDenyCache(h, limiter.DenyCacheConfig{Now: c.Now})
		_, take := oneTokenPerSecond()
		results := make(chan bool, 8)
		apply := func() {
			res := make([]limiter.BucketResult, 1)
			ok, err := cached.Apply(context.Background(), take, res)
			if err != nil {
				t.Error(err)
			}
			results <- ok
		}
		defer h.release(-1) // a failing check leaves no call held
		refill := c.Now() + second
		if res := make([]limiter.BucketResult, 1); !must(cached.Apply(context.Background(), take, res)) {
			t.Fatal("the first take was denied")
		}
		// A denial answered 100us after it was sent: the bound it leaves
		// runs out 100us before the refill.
		h.setHold(true)
		go apply()
		synctest.Wait()
		c.Advance(100 * time.Microsecond)
		h.release(0)
		if <-results {
			t.Fatal("the second take was admitted")
		}
		c.Advance(time.Duration(refill-99-c.Now()) * time.Microsecond)
		go apply() // the probe
		synctest.Wait()
		for range 3 {
			go apply() // waiters
		}
		synctest.Wait()
		if n := h.calls(); n != 2 {
			t.Fatalf("%d calls reached the store, want 2: the waiters did not wait", n)
		}
		// The probe is answered 10us before the refill: short, with a
		// bound that has already run out.
		c.Advance(89 * time.Microsecond)
		h.release(1)
		if <-results {
			t.Fatal("the probe was admitted before the refill")
		}
		synctest.Wait()
		if n := h.calls(); n != 3 {
			t.Fatalf("%d calls reached the store, want 3: one new probe, the others waiting for it", n)
		}
		c.Advance(11 * time.Microsecond)
		h.release(2)
		synctest.Wait()
		if n := h.calls(); n != 3 {
			t.Fatalf("%d calls reached the store after the second probe's answer, want 3", n)
		}
		admitted := 0
		for range 3 {
			if <-results {
				admitted++
			}
		}
		if admitted != 1 {
			t.Fatalf("%d of the 3 waiters admitted, want the one token", admitted)
		}
	})
}

// failingStore answers from the store behind until failing is set, then
// fails every call after a delay.
type failingStore struct {
	limiter.Store
	failing atomic.Bool
}

func (f *failingStore) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	if !f.failing.Load() {
		return f.Store.Apply(ctx, reqs, res)
	}
	time.Sleep(10 * time.Millisecond)
	return false, errors.New("connection refused")
}

// TestDenyCacheFailedProbeReleasesWaiters: a probe whose store call fails
// learned nothing, so its waiters go on by themselves at once instead of
// waiting for one failing probe after another.
func TestDenyCacheFailedProbeReleasesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := limitertest.NewClock(1_000_000_000)
		f := &failingStore{Store: memory.New(c.Now)}
		cached := limiter.NewDenyCache(f, limiter.DenyCacheConfig{Now: c.Now})
		_, take := oneTokenPerSecond()
		res := make([]limiter.BucketResult, 1)
		must(cached.Apply(context.Background(), take, res))
		if must(cached.Apply(context.Background(), take, res)) {
			t.Fatal("the second take was admitted")
		}
		c.Advance(time.Second + time.Millisecond) // the bound has run out
		f.failing.Store(true)
		var wg sync.WaitGroup
		var slowest atomic.Int64
		var errs atomic.Int64
		for range 8 {
			wg.Go(func() {
				start := time.Now()
				res := make([]limiter.BucketResult, 1)
				if _, err := cached.Apply(context.Background(), take, res); err != nil {
					errs.Add(1)
				}
				d := int64(time.Since(start))
				for {
					cur := slowest.Load()
					if d <= cur || slowest.CompareAndSwap(cur, d) {
						break
					}
				}
			})
		}
		wg.Wait()
		if errs.Load() != 8 {
			t.Fatalf("%d of 8 calls failed, want all: the store is down", errs.Load())
		}
		// One probe's failure, then the call's own.
		if d := time.Duration(slowest.Load()); d > 20*time.Millisecond {
			t.Fatalf("slowest call took %v: waiters queued behind failing probes", d)
		}
	})
}

// TestDenyCacheProbeEndsOnlyItsOwn: a probe whose bucket was forgotten (a
// refund) and remembered again while it was out must not end the new
// entry's probe, whose waiters wait for that probe's own answer.
func TestDenyCacheProbeEndsOnlyItsOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := limitertest.NewClock(1_000_000_000)
		h := &heldStore{Store: memory.New(c.Now)}
		cached := limiter.NewDenyCache(h, limiter.DenyCacheConfig{Now: c.Now})
		rt, take := oneTokenPerSecond()
		refund := []limiter.BucketRequest{{Key: "k", Rate: rt, Cost: 1, Op: limiter.OpRefund}}
		apply := func(reqs []limiter.BucketRequest) bool {
			return must(cached.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1)))
		}
		done := make(chan string, 4)
		defer h.release(-1) // a failing check leaves no call held
		apply(take)
		if apply(take) {
			t.Fatal("a take of an empty bucket was admitted")
		}
		c.Advance(time.Second + time.Millisecond)
		h.setHold(true)
		go func() { apply(take); done <- "first probe" }()
		synctest.Wait()
		h.setHold(false)
		apply(refund) // forgets the bucket
		apply(take)   // takes the token the bucket refilled
		if apply(take) {
			t.Fatal("a take of an empty bucket was admitted")
		} // remembered again
		c.Advance(time.Second + time.Millisecond)
		h.setHold(true)
		go func() { apply(take); done <- "second probe" }()
		synctest.Wait()
		go func() { apply(take); done <- "waiter" }()
		synctest.Wait()
		h.release(0) // the first probe ends
		synctest.Wait()
		if n := h.calls(); n != 2 {
			t.Fatalf("%d calls reached the store, want 2: the waiter went on without the second probe's answer", n)
		}
		if got := <-done; got != "first probe" {
			t.Fatalf("%s returned first", got)
		}
		select {
		case got := <-done:
			t.Fatalf("%s returned before the second probe's answer", got)
		default:
		}
		h.release(1)
		synctest.Wait()
		if a, b := <-done, <-done; a != "second probe" || b != "waiter" {
			t.Fatalf("returned in order %s, %s", a, b)
		}
	})
}

// oneTokenPerSecond is the rate of a bucket of one token refilled every
// second, and a take of that token from bucket "k".
func oneTokenPerSecond() (limiter.Rate, []limiter.BucketRequest) {
	rl := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Second, Burst: 1}
	rt, err := rl.Rate()
	if err != nil {
		panic(err)
	}
	return rt, []limiter.BucketRequest{{Key: "k", Rate: rt, Cost: 1}}
}

func must(ok bool, err error) bool {
	if err != nil {
		panic(err)
	}
	return ok
}

// TestDenyCacheRefundForgets checks that a refund through the cache makes
// the refunded bucket available at once.
func TestDenyCacheRefundForgets(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	cached := limiter.NewDenyCache(memory.New(c.Now), limiter.DenyCacheConfig{Now: c.Now})
	rl := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Hour, Burst: 2}
	rt, _ := rl.Rate()
	take := []limiter.BucketRequest{{Key: "k", Rate: rt, Cost: 1}}
	res := make([]limiter.BucketResult, 1)
	for i := 0; i < 3; i++ {
		if _, err := cached.Apply(context.Background(), take, res); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := cached.Apply(context.Background(), take, res); ok || cached.Stats().Local == 0 {
		t.Fatalf("empty bucket not answered by the cache: %v %+v", ok, cached.Stats())
	}
	refund := []limiter.BucketRequest{{Key: "k", Rate: rt, Cost: 1, Op: limiter.OpRefund}}
	if _, err := cached.Apply(context.Background(), refund, res); err != nil {
		t.Fatal(err)
	}
	if ok, _ := cached.Apply(context.Background(), take, res); !ok {
		t.Fatalf("take after a refund denied: %+v", res[0])
	}
}

// TestDenyCacheBounded checks that the cache keeps no more than its size.
func TestDenyCacheBounded(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	cached := limiter.NewDenyCache(memory.New(c.Now), limiter.DenyCacheConfig{Now: c.Now, Size: 128})
	rl := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Hour, Burst: 1}
	rt, _ := rl.Rate()
	res := make([]limiter.BucketResult, 1)
	for i := 0; i < 5000; i++ {
		take := []limiter.BucketRequest{{Key: fmt.Sprint("k", i), Rate: rt, Cost: 1}}
		if _, err := cached.Apply(context.Background(), take, res); err != nil {
			t.Fatal(err)
		}
		if _, err := cached.Apply(context.Background(), take, res); err != nil { // denied: remembered
			t.Fatal(err)
		}
	}
	if n := cached.Stats().Entries; n > 128 || n < 64 {
		t.Fatalf("%d entries for a size of 128", n)
	}
}

func BenchmarkDenyCache(b *testing.B) {
	rl := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Hour, Burst: 1}
	rt, _ := rl.Rate()
	for _, name := range []string{"hit", "miss"} {
		b.Run(name, func(b *testing.B) {
			cached := limiter.NewDenyCache(memory.New(nil), limiter.DenyCacheConfig{})
			res := make([]limiter.BucketResult, 1)
			hot := []limiter.BucketRequest{{Key: "hot", Rate: rt, Cost: 1}}
			for range 2 { // the second is denied and remembered
				if _, err := cached.Apply(context.Background(), hot, res); err != nil {
					b.Fatal(err)
				}
			}
			reqs := hot
			if name == "miss" {
				big := limiter.RateLimit{RequestsPerUnit: 1000000, Unit: limiter.Second}
				r, _ := big.Rate()
				reqs = []limiter.BucketRequest{{Key: "other", Rate: r, Cost: 1}}
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				res := make([]limiter.BucketResult, 1)
				for pb.Next() {
					_, _ = cached.Apply(context.Background(), reqs, res) // a memory store never fails
				}
			})
		})
	}
}

// urgencyStore records whether each call reaching the store was marked
// urgent.
type urgencyStore struct {
	limiter.Store
	urgent []bool
}

func (s *urgencyStore) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	s.urgent = append(s.urgent, limiter.Urgent(ctx))
	return s.Store.Apply(ctx, reqs, res)
}

// TestDenyCacheProbeIsUrgent checks that a probe of a remembered bucket,
// which other calls wait on, reaches the store marked urgent, and that
// other calls do not.
func TestDenyCacheProbeIsUrgent(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	behind := &urgencyStore{Store: memory.New(c.Now)}
	cached := limiter.NewDenyCache(behind, limiter.DenyCacheConfig{Now: c.Now})
	rl := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Second, Burst: 1}
	rt, _ := rl.Rate()
	take := []limiter.BucketRequest{{Key: "k", Rate: rt, Cost: 1}}
	other := []limiter.BucketRequest{{Key: "other", Rate: rt, Cost: 1}}
	res := make([]limiter.BucketResult, 1)
	apply := func(reqs []limiter.BucketRequest) bool {
		ok, err := cached.Apply(context.Background(), reqs, res)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	apply(take) // admitted: nothing learned
	apply(take) // denied by the store: bound learned
	apply(take) // denied by the cache: no call
	apply(other)
	c.Advance(time.Second) // the bound runs out
	if !apply(take) {      // the probe
		t.Fatal("probe after the refill denied")
	}
	want := []bool{false, false, false, true}
	if !slices.Equal(behind.urgent, want) {
		t.Fatalf("calls reaching the store marked urgent %v, want %v", behind.urgent, want)
	}
	if limiter.Urgent(context.Background()) || !limiter.Urgent(limiter.WithUrgent(context.Background())) {
		t.Fatal("Urgent does not report WithUrgent")
	}
}

// TestDenyCacheQuota: a call whose quota takes are all known short is
// denied without the next store, and a call with one of them not known
// short goes to the next store and may pass.
func TestDenyCacheQuota(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	behind := &countingStore{Store: memory.New(c.Now)}
	cache := limiter.NewDenyCache(behind, limiter.DenyCacheConfig{Now: c.Now})
	rt, err := (&limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Hour, Burst: 1}).Rate()
	if err != nil {
		t.Fatal(err)
	}
	rt2 := rt
	rt2.Cap = 2
	a := limiter.BucketRequest{Key: "a", Rate: rt, Cost: 1, Op: limiter.OpQuotaTake}
	b := limiter.BucketRequest{Key: "b", Rate: rt2, Cost: 1, Op: limiter.OpQuotaTake}
	res := make([]limiter.BucketResult, 2)
	for i, want := range []bool{true, true, false} { // both, then b alone, then neither fits
		ok, err := cache.Apply(context.Background(), []limiter.BucketRequest{a, b}, res)
		if err != nil || ok != want {
			t.Fatalf("call %d: allowed %v, %v; want %v", i, ok, err, want)
		}
	}
	calls := behind.calls.Load()
	ok, err := cache.Apply(context.Background(), []limiter.BucketRequest{a, b}, res)
	if err != nil || ok || res[0].OK || res[1].OK {
		t.Fatalf("both quotas known short: allowed %v %+v, %v", ok, res, err)
	}
	if behind.calls.Load() != calls || cache.Stats().Local != 1 {
		t.Fatalf("both quotas known short: %d calls reached the store, %d answered locally; want 0 and 1",
			behind.calls.Load()-calls, cache.Stats().Local)
	}
	// A third quota the cache does not know: to the store, which admits it.
	q := limiter.BucketRequest{Key: "q", Rate: rt, Cost: 1, Op: limiter.OpQuotaTake}
	res = make([]limiter.BucketResult, 3)
	ok, err = cache.Apply(context.Background(), []limiter.BucketRequest{a, b, q}, res)
	if err != nil || !ok || res[0].OK || res[1].OK || !res[2].OK {
		t.Fatalf("one quota unknown: allowed %v %+v, %v; want allowed by the third alone", ok, res, err)
	}
}

// TestDenyCacheUnsettled: a short answer whose debt holds tokens that
// other calls across Cluster slots may still refund (Unsettled) teaches
// only the bound left once they are all refunded: none when that leaves
// the bucket holding the cost, a shorter one otherwise.
func TestDenyCacheUnsettled(t *testing.T) {
	rt, err := (&limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, Burst: 5}).Rate()
	if err != nil {
		t.Fatal(err)
	}
	x := []limiter.BucketRequest{{Key: "x", Rate: rt, Cost: 3}}
	// reaches answers a take of 3 tokens short (they are there in reset
	// µs, unsettled tokens of the debt), then reports whether the next
	// take, after wait, reached the store.
	reaches := func(reset int64, unsettled uint64, wait time.Duration) bool {
		c := limitertest.NewClock(1_000_000_000)
		answer := limiter.BucketResult{ResetMicros: reset, Unsettled: unsettled}
		store := &fakeStore{apply: func(_ context.Context, _ []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
			res[0] = answer
			return answer.OK, nil
		}}
		cache := limiter.NewDenyCache(store, limiter.DenyCacheConfig{Now: c.Now})
		res := make([]limiter.BucketResult, 1)
		if ok, _ := cache.Apply(context.Background(), x, res); ok || res[0] != answer {
			t.Fatalf("first call: allowed=%v %+v, want the store's answer %+v", ok, res[0], answer)
		}
		c.Advance(wait)
		before := store.calls.Load()
		answer = limiter.BucketResult{OK: true, ResetMicros: 500_000}
		_, _ = cache.Apply(context.Background(), x, res)
		return store.calls.Load() == before+1
	}
	// Settled: 3 tokens in 300 ms (a token every 100 ms), so the bucket
	// is known short at 50 ms and at 250 ms.
	if reaches(300_000, 0, 50*time.Millisecond) || reaches(300_000, 0, 250*time.Millisecond) {
		t.Fatal("a settled short bucket was not answered by the cache")
	}
	// One token unsettled: short only until 200 ms, whatever is refunded.
	if reaches(300_000, 1, 50*time.Millisecond) {
		t.Fatal("still short once refunded, but not answered by the cache")
	}
	if !reaches(300_000, 1, 250*time.Millisecond) {
		t.Fatal("denied by the cache past the bound that holds after refunds")
	}
	// The whole shortfall unsettled: nothing learned at all.
	if !reaches(300_000, 3, 0) {
		t.Fatal("a bucket that holds the cost once refunded was denied by the cache")
	}
	if !reaches(100_000, 7, 0) {
		t.Fatal("more unsettled than the debt: denied by the cache")
	}
}
