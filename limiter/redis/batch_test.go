//go:build integration

package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestBatchingUnderLoad runs many concurrent callers against one bucket
// while the script cache is flushed again and again: every call must get
// an answer (NOSCRIPT inside a pipeline is retried as EVAL), exactly the
// bucket's capacity must be admitted, and calls must have shared pipelines.
func TestBatchingUnderLoad(t *testing.T) {
	addr := limitertest.StartRedis(t)
	var sizes sync.Map // batch size -> *atomic.Int64
	cfg := DefaultConfig()
	cfg.URL = "redis://" + addr
	cfg.ReadTimeout = 2 * time.Second // a loaded machine must not fail the test
	s, err := New(cfg, WithBatchObserver(func(n int) {
		v, _ := sizes.LoadOrStore(n, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc := rawClient(t, addr)

	const callers, perCaller, capacity = 64, 60, 1000
	rt := mustRate(t, 1, limiter.Hour, capacity) // no refill within the test
	key := uniqueKey("load")
	var admitted, denied atomic.Int64
	stop := make(chan struct{})
	var flushes atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if rc.ScriptFlush(context.Background()).Err() == nil {
					flushes.Add(1)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Two buckets per call, one of them shared, so all-or-nothing
			// is exercised through the pipelines too.
			own := fmt.Sprintf("%s:own:%d", key, c)
			reqs := []limiter.BucketRequest{{Key: key, Rate: rt, Cost: 1}, {Key: own, Rate: rt, Cost: 1}}
			res := make([]limiter.BucketResult, 2)
			for i := 0; i < perCaller; i++ {
				ok, err := s.Apply(context.Background(), reqs, res)
				if err != nil {
					errs <- err
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
	close(stop)
	close(errs)
	for err := range errs {
		t.Fatalf("Apply under load: %v", err)
	}
	if admitted.Load() != capacity {
		t.Fatalf("admitted %d, want exactly the capacity %d (denied %d)", admitted.Load(), capacity, denied.Load())
	}
	st := s.BatchStats()
	hist := ""
	var biggest int
	sizes.Range(func(k, v any) bool {
		biggest = max(biggest, k.(int))
		return true
	})
	for n := 1; n <= biggest; n++ {
		if v, ok := sizes.Load(n); ok {
			hist += fmt.Sprintf(" %d:%d", n, v.(*atomic.Int64).Load())
		}
	}
	t.Logf("%d calls in %d pipelines (mean %.1f, largest %d), %d SCRIPT FLUSHes; sizes:%s",
		st.Calls, st.Pipelines, float64(st.Calls)/float64(st.Pipelines), biggest, flushes.Load(), hist)
	if st.Calls != callers*perCaller {
		t.Errorf("BatchStats counted %d calls, want %d", st.Calls, callers*perCaller)
	}
	if st.Pipelines >= st.Calls {
		t.Errorf("no call shared a pipeline: %d pipelines for %d calls", st.Pipelines, st.Calls)
	}
}

// TestBatchCallerGone checks that a caller whose context ends while its
// call waits gets its context's error at once, and that calls after it are
// unaffected.
func TestBatchCallerGone(t *testing.T) {
	srv := limitertest.NewRedisServer(t)
	s := newTestStore(t, srv.Addr)
	rt := mustRate(t, 1, limiter.Hour, 10)
	reqs := []limiter.BucketRequest{{Key: uniqueKey("gone"), Rate: rt, Cost: 1}}
	apply(t, s, reqs...)
	srv.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	start := time.Now()
	_, err := s.Apply(ctx, reqs, make([]limiter.BucketResult, 1))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply with a 20ms context against a frozen Redis: %v", err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("Apply returned after %v, want about 20ms", d)
	}
	srv.Resume()
	var ok bool
	res := make([]limiter.BucketResult, 1)
	limitertest.Eventually(t, 5*time.Second, "Apply to work after resume", func() (err error) {
		ok, err = s.Apply(context.Background(), reqs, res)
		return err
	})
	// The abandoned call may or may not have been paid; never twice.
	if !ok || (res[0].Remaining != 8 && res[0].Remaining != 7) {
		t.Fatalf("after resume: ok=%v %+v", ok, res[0])
	}
}

// TestClosedStore checks that Apply fails after Close, without hanging.
func TestClosedStore(t *testing.T) {
	addr := limitertest.StartRedis(t)
	cfg := DefaultConfig()
	cfg.URL = "redis://" + addr
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	rt := mustRate(t, 1, limiter.Hour, 10)
	_, err = s.Apply(context.Background(), []limiter.BucketRequest{{Key: uniqueKey("closed"), Rate: rt, Cost: 1}}, make([]limiter.BucketResult, 1))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v, want ErrClosed", err)
	}
}

// BenchmarkCoalescer measures Apply with many concurrent callers, batching
// off and on, and reports the mean pipeline size seen.
func BenchmarkCoalescer(b *testing.B) {
	addr := limitertest.StartRedis(b)
	rt := mustRate(b, 1000, limiter.Second, 1_000_000)
	for _, batching := range []string{"off", "on"} {
		for _, callers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("batching=%s/callers=%d", batching, callers), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.URL = "redis://" + addr
				cfg.Batching = batching
				cfg.ReadTimeout = 5 * time.Second
				s, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				base := uniqueKey("coalesce")
				var seq atomic.Int64
				b.ReportAllocs()
				b.SetParallelism((callers + 1) / 2) // 2 CPUs here; SetParallelism is per GOMAXPROCS
				b.RunParallel(func(pb *testing.PB) {
					reqs := []limiter.BucketRequest{{Key: fmt.Sprintf("%s:%d", base, seq.Add(1)), Rate: rt, Cost: 1}}
					res := make([]limiter.BucketResult, 1)
					for pb.Next() {
						if _, err := s.Apply(context.Background(), reqs, res); err != nil {
							b.Error(err)
							return
						}
					}
				})
				if st := s.BatchStats(); st.Pipelines > 0 {
					b.ReportMetric(float64(st.Calls)/float64(st.Pipelines), "calls/pipeline")
				}
			})
		}
	}
}
