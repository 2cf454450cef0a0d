package limiter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// fakeStore is a Store whose Apply is a func field.
type fakeStore struct {
	apply func(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error)
	calls atomic.Int64
}

func (f *fakeStore) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	f.calls.Add(1)
	return f.apply(ctx, reqs, res)
}

var errDown = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

func failing() *fakeStore {
	return &fakeStore{apply: func(context.Context, []limiter.BucketRequest, []limiter.BucketResult) (bool, error) {
		return false, errDown
	}}
}

func healthy() *fakeStore {
	return &fakeStore{apply: func(_ context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
		for i := range reqs {
			res[i] = limiter.BucketResult{OK: true, Remaining: 42}
		}
		return true, nil
	}}
}

func perSecond(t *testing.T, n, burst uint32) limiter.Rate {
	t.Helper()
	rl := limiter.RateLimit{RequestsPerUnit: n, Unit: limiter.Second, Burst: burst}
	r, err := rl.Rate()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// clock is a fake microsecond clock for the local store.
type clock struct{ us atomic.Int64 }

func (c *clock) now() int64              { return c.us.Load() }
func (c *clock) advance(d time.Duration) { c.us.Add(d.Microseconds()) }

func TestFailoverPrimaryAnswers(t *testing.T) {
	for _, mode := range []limiter.FailureMode{limiter.FailLocal, limiter.FailAllow, limiter.FailError} {
		t.Run(mode.String(), func(t *testing.T) {
			local := failing() // must not be asked
			f, err := limiter.NewFailover(healthy(), limiter.FailoverConfig{Mode: mode, Local: local})
			if err != nil {
				t.Fatal(err)
			}
			reqs := []limiter.BucketRequest{{Key: "k", Rate: perSecond(t, 10, 0), Cost: 1}}
			res := make([]limiter.BucketResult, 1)
			ok, err := f.Apply(context.Background(), reqs, res)
			if err != nil || !ok || res[0].Remaining != 42 {
				t.Fatalf("Apply = %v, %v, %+v; want the primary's answer", ok, err, res[0])
			}
			if local.calls.Load() != 0 {
				t.Errorf("local store asked while the primary answers")
			}
			if c := f.Counts(); c != (limiter.FailoverCounts{Primary: 1}) {
				t.Errorf("counts = %+v", c)
			}
		})
	}
}

func TestFailoverModes(t *testing.T) {
	rate := perSecond(t, 10, 20)
	cases := []struct {
		name     string
		mode     limiter.FailureMode
		fraction float64
		takes    int // takes of cost 1 in a row
		wantOK   int // how many of them are allowed
		wantErr  bool
		counts   limiter.FailoverCounts
	}{
		{name: "local full", mode: limiter.FailLocal, fraction: 1, takes: 25, wantOK: 20, counts: limiter.FailoverCounts{Local: 25}},
		{name: "local default fraction", mode: limiter.FailLocal, takes: 25, wantOK: 20, counts: limiter.FailoverCounts{Local: 25}},
		{name: "local half", mode: limiter.FailLocal, fraction: 0.5, takes: 25, wantOK: 10, counts: limiter.FailoverCounts{Local: 25}},
		{name: "local tiny keeps one", mode: limiter.FailLocal, fraction: 0.001, takes: 5, wantOK: 1, counts: limiter.FailoverCounts{Local: 5}},
		{name: "allow", mode: limiter.FailAllow, takes: 25, wantOK: 25, counts: limiter.FailoverCounts{Allowed: 25}},
		{name: "error", mode: limiter.FailError, takes: 3, wantErr: true, counts: limiter.FailoverCounts{Errors: 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hooked atomic.Int64
			clk := &clock{}
			f, err := limiter.NewFailover(failing(), limiter.FailoverConfig{
				Mode: c.mode, LocalFraction: c.fraction, Local: memory.New(clk.now),
				OnFailover: func(m limiter.FailureMode, err error) {
					if m != c.mode || !errors.Is(err, errDown) {
						t.Errorf("hook(%v, %v)", m, err)
					}
					hooked.Add(1)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			ok := 0
			for i := 0; i < c.takes; i++ {
				reqs := []limiter.BucketRequest{{Key: "k", Rate: rate, Cost: 1}}
				res := make([]limiter.BucketResult, 1)
				allowed, err := f.Apply(context.Background(), reqs, res)
				if c.wantErr {
					if !errors.Is(err, errDown) {
						t.Fatalf("take %d: err = %v, want the primary's error", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("take %d: %v", i, err)
				}
				if allowed != res[0].OK {
					t.Fatalf("take %d: allowed %v but result %+v", i, allowed, res[0])
				}
				if allowed {
					ok++
				}
				if c.mode == limiter.FailAllow && res[0].Remaining != rate.Cap {
					t.Errorf("allow: remaining = %d, want the capacity %d", res[0].Remaining, rate.Cap)
				}
			}
			if ok != c.wantOK {
				t.Errorf("allowed %d of %d, want %d", ok, c.takes, c.wantOK)
			}
			if got := f.Counts(); got != c.counts {
				t.Errorf("counts = %+v, want %+v", got, c.counts)
			}
			if hooked.Load() != int64(c.takes) {
				t.Errorf("hook called %d times, want %d", hooked.Load(), c.takes)
			}
		})
	}
}

// TestFailoverLocalRefillScaled checks that the refill rate is scaled too:
// at half of 10/s a drained bucket regains 5 tokens a second.
func TestFailoverLocalRefillScaled(t *testing.T) {
	clk := &clock{}
	f, err := limiter.NewFailover(failing(), limiter.FailoverConfig{Mode: limiter.FailLocal, LocalFraction: 0.5, Local: memory.New(clk.now)})
	if err != nil {
		t.Fatal(err)
	}
	rate := perSecond(t, 10, 0)
	take := func() bool {
		res := make([]limiter.BucketResult, 1)
		ok, err := f.Apply(context.Background(), []limiter.BucketRequest{{Key: "k", Rate: rate, Cost: 1}}, res)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	n := 0
	for take() {
		n++
	}
	if n != 5 {
		t.Fatalf("drained after %d takes, want 5", n)
	}
	clk.advance(time.Second)
	n = 0
	for take() {
		n++
	}
	if n != 5 {
		t.Errorf("%d tokens after 1s at half of 10/s, want 5", n)
	}
}

func TestFailoverCallerGone(t *testing.T) {
	local := healthy()
	f, err := limiter.NewFailover(failing(), limiter.FailoverConfig{Mode: limiter.FailLocal, Local: local})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := make([]limiter.BucketResult, 1)
	if _, err := f.Apply(ctx, []limiter.BucketRequest{{Key: "k", Rate: perSecond(t, 1, 0), Cost: 1}}, res); err == nil {
		t.Fatal("a cancelled call got an answer")
	}
	if local.calls.Load() != 0 {
		t.Errorf("local store asked for a caller that left")
	}
}

func TestFailoverRecovers(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	primary := &fakeStore{apply: func(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
		if down.Load() {
			return false, errDown
		}
		return healthy().apply(ctx, reqs, res)
	}}
	f, _ := limiter.NewFailover(primary, limiter.FailoverConfig{Mode: limiter.FailError})
	res := make([]limiter.BucketResult, 1)
	reqs := []limiter.BucketRequest{{Key: "k", Rate: perSecond(t, 1, 0), Cost: 1}}
	if _, err := f.Apply(context.Background(), reqs, res); err == nil {
		t.Fatal("no error while down")
	}
	down.Store(false)
	if ok, err := f.Apply(context.Background(), reqs, res); err != nil || !ok {
		t.Fatalf("after recovery: %v, %v", ok, err)
	}
}

func TestFailoverConfigValidate(t *testing.T) {
	for _, c := range []limiter.FailoverConfig{
		{Mode: limiter.FailLocal},                              // no local store
		{Mode: limiter.FailAllow, LocalFraction: 1.5},          // fraction above 1
		{Mode: limiter.FailAllow, LocalFraction: -0.1},         // negative
		{Mode: limiter.FailureMode(9), Local: memory.New(nil)}, // unknown mode
	} {
		if _, err := limiter.NewFailover(healthy(), c); err == nil {
			t.Errorf("NewFailover(%+v) accepted", c)
		}
	}
	for _, s := range []string{"local", "allow", "error"} {
		m, err := limiter.ParseFailureMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseFailureMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := limiter.ParseFailureMode("deny"); err == nil {
		t.Error(`ParseFailureMode("deny") accepted`)
	}
}

func TestScaleRate(t *testing.T) {
	cases := []struct {
		name    string
		rl      limiter.RateLimit
		frac    float64
		wantCap uint64
		// tokens per second after scaling
		wantPerSec float64
	}{
		{"half of 10/s", limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second}, 0.5, 5, 5},
		{"third of 100/min burst 30", limiter.RateLimit{RequestsPerUnit: 100, Unit: limiter.Minute, Burst: 30}, 1.0 / 3, 10, 100.0 / 60 / 3},
		{"one", limiter.RateLimit{RequestsPerUnit: 7, Unit: limiter.Hour}, 1, 7, 7.0 / 3600},
		{"1 per year", limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Year}, 0.25, 1, 1.0 / (365 * 86400) / 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := c.rl.Rate()
			if err != nil {
				t.Fatal(err)
			}
			s := limiter.ScaleRate(r, c.frac)
			if s.Cap != c.wantCap {
				t.Errorf("cap = %d, want %d", s.Cap, c.wantCap)
			}
			got := float64(s.Num) / float64(s.Den) * 1e6
			if d := got/c.wantPerSec - 1; d > 1e-5 || d < -1e-3 {
				t.Errorf("rate = %g/s, want %g/s (%+v)", got, c.wantPerSec, s)
			}
			if s.Cap*s.Den+1000*s.Num >= 1<<53 {
				t.Errorf("scaled rate out of the exact range: %+v", s)
			}
		})
	}
}
