package limiter_test

import (
	"context"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// TestDenyCacheNeverAnswersUsage checks that usage charges and checks
// always reach the store behind the cache, even for a bucket deep in debt
// and in a call whose admission take the cache knows is short: a report
// answered locally would be a charge lost.
func TestDenyCacheNeverAnswersUsage(t *testing.T) {
	c := limitertest.NewClock(1_000_000_000)
	next := &countingStore{Store: memory.New(c.Now)}
	cached := limiter.NewDenyCache(next, limiter.DenyCacheConfig{Now: c.Now})
	ctx := context.Background()
	ul := limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour, Charge: limiter.ChargeUsage}
	urt, err := ul.Rate()
	if err != nil {
		t.Fatal(err)
	}
	al := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Hour}
	art, _ := al.Rate()
	charge := limiter.BucketRequest{Key: "u", Rate: urt, Cost: 7, Op: limiter.OpCharge}
	check := limiter.BucketRequest{Key: "u", Rate: urt, Op: limiter.OpCheck}
	take := limiter.BucketRequest{Key: "a", Rate: art, Cost: 1}
	res := make([]limiter.BucketResult, 2)

	// Drain the admission bucket and let the cache learn it is short.
	for i := 0; i < 3; i++ {
		_, _ = cached.Apply(ctx, []limiter.BucketRequest{take}, res)
	}
	if ok, _ := cached.Apply(ctx, []limiter.BucketRequest{take}, res); ok || cached.Stats().Local == 0 {
		t.Fatalf("admission bucket not known short: %v %+v", ok, cached.Stats())
	}

	before := next.calls.Load()
	const n = 20
	for i := 0; i < n; i++ {
		reqs := []limiter.BucketRequest{charge}
		switch i % 3 {
		case 1:
			reqs = []limiter.BucketRequest{check}
		case 2:
			reqs = []limiter.BucketRequest{take, charge} // the take is known short
		}
		if _, err := cached.Apply(ctx, reqs, res[:len(reqs)]); err != nil {
			t.Fatal(err)
		}
	}
	if got := next.calls.Load() - before; got != n {
		t.Fatalf("%d of %d usage calls reached the store", got, n)
	}
	// 13 charges of 7 tokens on a balance of 10: -81. A refund of 81
	// leaves 0 (a check fails), one more leaves 1 (it passes).
	refund := limiter.BucketRequest{Key: "u", Rate: urt, Cost: 81, Op: limiter.OpRefund}
	_, _ = cached.Apply(ctx, []limiter.BucketRequest{refund}, res[:1])
	if ok, _ := cached.Apply(ctx, []limiter.BucketRequest{check}, res[:1]); ok {
		t.Fatalf("check at a balance of 0 passed: %+v (charges were lost)", res[0])
	}
	refund.Cost = 1
	_, _ = cached.Apply(ctx, []limiter.BucketRequest{refund}, res[:1])
	if ok, _ := cached.Apply(ctx, []limiter.BucketRequest{check}, res[:1]); !ok || res[0].Remaining != 1 {
		t.Fatalf("check at a balance of 1: %v %+v", ok, res[0])
	}
}
