package limiter_test

import (
	"context"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// TestFailoverCountsLostUsage: a usage report that no store charges,
// because Redis is down in allow or error mode, is counted; in local mode
// the local store charges it, and that is counted apart, since Redis never
// learns of it.
func TestFailoverCountsLostUsage(t *testing.T) {
	ul := limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, Charge: limiter.ChargeUsage}
	urt, err := ul.Rate()
	if err != nil {
		t.Fatal(err)
	}
	reqs := []limiter.BucketRequest{
		{Key: "u", Rate: urt, Cost: 300, Op: limiter.OpCharge},
		{Key: "s", Rate: urt, Cost: 20, Op: limiter.OpShadowCharge},
		{Key: "c", Rate: urt, Op: limiter.OpCheck},
		{Key: "a", Rate: perSecond(t, 10, 10), Cost: 1},
	}
	for _, c := range []struct {
		mode        limiter.FailureMode
		lost, local uint64
	}{{limiter.FailAllow, 2 * 320, 0}, {limiter.FailError, 2 * 320, 0}, {limiter.FailLocal, 0, 2 * 320}} {
		t.Run(c.mode.String(), func(t *testing.T) {
			f, err := limiter.NewFailover(failing(), limiter.FailoverConfig{Mode: c.mode, Local: memory.New(nil)})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				_, _ = f.Apply(context.Background(), reqs, make([]limiter.BucketResult, len(reqs)))
			}
			if got := f.Counts().LostUsage; got != c.lost {
				t.Fatalf("lost usage = %d tokens, want %d", got, c.lost)
			}
			if got := f.Counts().LocalUsage; got != c.local {
				t.Fatalf("local usage = %d tokens, want %d", got, c.local)
			}
		})
	}
}

// TestScaleRateUsage: a scaled usage limit keeps a floor that the bucket
// maths holds exactly.
func TestScaleRateUsage(t *testing.T) {
	for _, rl := range []limiter.RateLimit{
		{RequestsPerUnit: 1, Unit: limiter.Year, Burst: 100, Charge: limiter.ChargeUsage},
		{RequestsPerUnit: 1000, Unit: limiter.Second, Burst: 2000, Charge: limiter.ChargeUsage},
	} {
		r, err := rl.Rate()
		if err != nil {
			t.Fatal(err)
		}
		for _, frac := range []float64{0.9, 0.5, 0.25, 0.001} {
			s := limiter.ScaleRate(r, frac)
			if s.MaxDebt == 0 || (s.Cap+s.MaxDebt)*s.Den+1000*s.Num >= 1<<53 {
				t.Errorf("%+v scaled by %g: %+v, out of the exact range or no floor", r, frac, s)
			}
		}
	}
}
