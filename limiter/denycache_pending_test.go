package limiter_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestDenyCachePendingNotLearned: a bucket whose answer holds tokens that
// a refund still being retried will give back (Pending) teaches the deny
// cache no bound: the next call for it goes to the store.
func TestDenyCachePendingNotLearned(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	rt, err := (&limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, Burst: 5}).Rate()
	if err != nil {
		t.Fatal(err)
	}
	var answer []limiter.BucketResult
	store := &fakeStore{apply: func(_ context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
		copy(res, answer)
		for i := range reqs {
			if !res[i].OK {
				return false, nil
			}
		}
		return true, nil
	}}
	cache := limiter.NewDenyCache(store, limiter.DenyCacheConfig{Now: c.Now})
	x := limiter.BucketRequest{Key: "x", Rate: rt, Cost: 1}
	y := limiter.BucketRequest{Key: "y", Rate: rt, Cost: 1}
	res := make([]limiter.BucketResult, 2)

	// x is short for 100 ms: remembered.
	answer = []limiter.BucketResult{{OK: false, ResetMicros: 100_000}}
	if ok, _ := cache.Apply(context.Background(), []limiter.BucketRequest{x}, res); ok {
		t.Fatal("short x allowed")
	}
	// Once the bound has run out, a call with x and y goes to the store:
	// y is short, and x paid, its refund pending (its bucket looks empty,
	// full again in 500 ms).
	c.Advance(200 * time.Millisecond)
	answer = []limiter.BucketResult{{OK: true, ResetMicros: 500_000, Pending: true}, {OK: false, ResetMicros: 100_000}}
	if ok, _ := cache.Apply(context.Background(), []limiter.BucketRequest{x, y}, res); ok {
		t.Fatal("short y allowed")
	}
	// x alone: the cache knows no bound that denies it.
	before := store.calls.Load()
	answer = []limiter.BucketResult{{OK: true, Remaining: 4, ResetMicros: 100_000}}
	if ok, _ := cache.Apply(context.Background(), []limiter.BucketRequest{x}, res); !ok {
		t.Fatalf("x denied by the cache from a pending answer: %+v, stats %+v", res[0], cache.Stats())
	}
	if store.calls.Load() != before+1 {
		t.Fatal("x did not reach the store")
	}
}

// TestDenyCacheRefundedInvalidates: a call whose bucket the store took and
// gave back (Refunded) is a refund: a call in flight meanwhile, which may
// have seen the payment, learns no bound from its answer.
func TestDenyCacheRefundedInvalidates(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	rt, err := (&limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, Burst: 5}).Rate()
	if err != nil {
		t.Fatal(err)
	}
	inFlight, release := make(chan struct{}), make(chan struct{})
	var wCalls atomic.Int32
	store := &fakeStore{apply: func(_ context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
		switch reqs[0].Key {
		case "w": // short, maybe for the tokens the other call took
			if wCalls.Add(1) == 1 {
				close(inFlight)
				<-release
			}
			res[0] = limiter.BucketResult{OK: false, ResetMicros: 300_000}
			return false, nil
		default: // x took and was refunded: y denied
			res[0] = limiter.BucketResult{OK: true, Remaining: 3, ResetMicros: 200_000, Refunded: true}
			res[1] = limiter.BucketResult{OK: false, ResetMicros: 100_000}
			return false, nil
		}
	}}
	cache := limiter.NewDenyCache(store, limiter.DenyCacheConfig{Now: c.Now})
	w := limiter.BucketRequest{Key: "w", Rate: rt, Cost: 1}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = cache.Apply(context.Background(), []limiter.BucketRequest{w}, make([]limiter.BucketResult, 1))
	}()
	<-inFlight
	xy := []limiter.BucketRequest{{Key: "x", Rate: rt, Cost: 1}, {Key: "y", Rate: rt, Cost: 1}}
	if ok, _ := cache.Apply(context.Background(), xy, make([]limiter.BucketResult, 2)); ok {
		t.Fatal("denied call allowed")
	}
	close(release)
	<-done
	// w's answer came back after the refund: not learned, so w goes to
	// the store again.
	before := store.calls.Load()
	_, _ = cache.Apply(context.Background(), []limiter.BucketRequest{w}, make([]limiter.BucketResult, 1))
	if store.calls.Load() != before+1 {
		t.Fatalf("w denied by the cache from an answer made while a refund was under way: %+v", cache.Stats())
	}
}
