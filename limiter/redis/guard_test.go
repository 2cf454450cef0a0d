//go:build integration

package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// fakeGuard is a Guard whose Do is a func field.
type fakeGuard struct {
	do    func(ctx context.Context, fn func(context.Context) error) error
	calls atomic.Int64
}

func (g *fakeGuard) Do(ctx context.Context, fn func(context.Context) error) error {
	g.calls.Add(1)
	return g.do(ctx, fn)
}

type ctxKey struct{}

func TestGuard(t *testing.T) { bothModes(t, testGuard) }

func testGuard(t *testing.T, batching string) {
	addr := limitertest.StartRedis(t)
	cfg := DefaultConfig()
	cfg.Batching = batching
	cfg.URL = "redis://" + addr
	errRefused := errors.New("circuit breaker is open")
	var refuse atomic.Bool
	var sawCaller atomic.Bool
	var fnErr atomic.Value
	g := &fakeGuard{do: func(ctx context.Context, fn func(context.Context) error) error {
		if refuse.Load() {
			return errRefused
		}
		if ctx.Value(ctxKey{}) == "caller" {
			sawCaller.Store(true)
		}
		err := fn(ctx)
		if err != nil {
			fnErr.Store(err)
		}
		return err
	}}
	s, err := New(cfg, WithGuard(g))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := rawClient(t, addr)
	key := uniqueKey("guard")
	reqs := []limiter.BucketRequest{{Key: key, Rate: mustRate(t, 1, limiter.Hour, 5), Cost: 1}}
	ctx := context.WithValue(context.Background(), ctxKey{}, "caller")

	res := make([]limiter.BucketResult, 1)
	ok, err := s.Apply(ctx, reqs, res)
	if err != nil || !ok || res[0].Remaining != 4 {
		t.Fatalf("Apply through the guard = %v, %v, %+v", ok, err, res[0])
	}
	if g.calls.Load() != 1 || !sawCaller.Load() {
		t.Errorf("guard calls = %d, saw the caller's context = %v", g.calls.Load(), sawCaller.Load())
	}

	refuse.Store(true)
	raw.Del(context.Background(), key)
	_, err = s.Apply(ctx, reqs, res)
	if !errors.Is(err, errRefused) {
		t.Fatalf("refused call: err = %v, want the guard's error", err)
	}
	if n := raw.Exists(context.Background(), key).Val(); n != 0 {
		t.Errorf("a refused call reached Redis")
	}
	// Ping does not go through the guard: health checks see Redis itself.
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping with the guard refusing: %v", err)
	}

	// A Redis error reaches the guard as fn's error.
	refuse.Store(false)
	bad, err := newStore(cfg, `return redis.error_reply("ERR boom")`, WithGuard(g))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Apply(ctx, reqs, res); err == nil {
		t.Fatal("Apply of a failing script succeeded")
	}
	if e, _ := fnErr.Load().(error); e == nil || !strings.Contains(e.Error(), "boom") {
		t.Errorf("the guard saw %v, want the script's error", e)
	}
}

// TestHungServerBoundsEveryWait freezes Redis with more callers than
// connections: queueing for the pool, dialing into a full backlog and
// waiting for the reply all fit in the read timeout, so no caller without
// a deadline of its own waits for long.
func TestHungServerBoundsEveryWait(t *testing.T) { bothModes(t, testHungServerBoundsEveryWait) }

func testHungServerBoundsEveryWait(t *testing.T, batching string) {
	srv := limitertest.NewRedisServer(t)
	cfg := DefaultConfig()
	cfg.Batching = batching
	cfg.URL = "redis://" + srv.Addr
	cfg.PoolSize = 2
	cfg.ReadTimeout = 200 * time.Millisecond
	cfg.DialTimeout = 3 * time.Second // longer than the read timeout on purpose
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rt := mustRate(t, 1000, limiter.Second, 1000)
	reqs := []limiter.BucketRequest{{Key: uniqueKey("hung"), Rate: rt, Cost: 1}}
	apply(t, s, reqs...)
	srv.Pause()
	defer srv.Resume()

	const callers, rounds = 16, 3
	var mu sync.Mutex
	var slowest time.Duration
	var errs []error
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				start := time.Now()
				_, err := s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1))
				d := time.Since(start)
				mu.Lock()
				slowest = max(slowest, d)
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("slowest of %d calls to a frozen Redis: %v (read timeout %v)", callers*rounds, slowest.Round(time.Millisecond), cfg.ReadTimeout)
	for _, err := range errs {
		if err == nil {
			t.Fatal("a call to a frozen Redis succeeded")
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("store timeout reported as a context error: %v", err)
		}
	}
	if slowest > cfg.ReadTimeout+400*time.Millisecond {
		t.Errorf("slowest call took %v, want about the read timeout %v", slowest, cfg.ReadTimeout)
	}
}

func TestApplyAllocsGuarded(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race or -short")
	}
	addr := limitertest.StartRedis(t)
	cfg := DefaultConfig()
	cfg.URL = "redis://" + addr
	// The caller-deadline saving is the unbatched path's; batched calls
	// share one deadline per pipeline.
	cfg.Batching = "off"
	pass := &fakeGuard{do: func(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) }}
	guarded, err := New(cfg, WithGuard(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer guarded.Close()
	plain, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	rt := mustRate(t, 1000, limiter.Second, 1_000_000)
	reqs := []limiter.BucketRequest{{Key: uniqueKey("allocs"), Rate: rt, Cost: 1}}
	res := make([]limiter.BucketResult, 1)
	// A caller deadline shorter than the read timeout, as Envoy sends.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	count := func(s *Store, ctx context.Context) float64 {
		return testing.AllocsPerRun(200, func() {
			if _, err := s.Apply(ctx, reqs, res); err != nil {
				t.Fatal(err)
			}
		})
	}
	base, withGuard, withShort := count(plain, ctx), count(guarded, ctx), count(guarded, short)
	t.Logf("allocs per Apply: plain %.1f, guarded %.1f, guarded with a short caller deadline %.1f", base, withGuard, withShort)
	if withGuard > base {
		t.Errorf("the guard adds %.1f allocations per Apply", withGuard-base)
	}
	if withShort >= base {
		t.Errorf("a caller deadline shorter than the read timeout still allocates the store's own (%.1f vs %.1f)", withShort, base)
	}
}

// TestHungRedisOpensBreakerBehindShortDeadlines freezes Redis while every
// caller gives up before the read timeout, as Envoy's 20 ms deadline
// does: the callers' own context errors do not count, yet the breaker must
// still open, so calls stop waiting on Redis at all. With batching the
// failed pipelines are reported; without, the store's PING probe is.
func TestHungRedisOpensBreakerBehindShortDeadlines(t *testing.T) {
	for _, batching := range []string{"on", "off"} {
		for _, cancelled := range []bool{false, true} {
			name := "batching=" + batching + "/deadline"
			if cancelled {
				// A caller that cancels (no deadline the connection can
				// read) leaves only its context error, which the breaker
				// ignores: only the store's own probe can tell.
				name = "batching=" + batching + "/cancel"
			}
			t.Run(name, func(t *testing.T) { testHungRedisShortDeadlines(t, batching, cancelled) })
		}
	}
}

func testHungRedisShortDeadlines(t *testing.T, batching string, cancelled bool) {
	rs := limitertest.NewRedisServer(t)
	cfg := DefaultConfig()
	cfg.URL = "redis://" + rs.Addr
	cfg.ReadTimeout, cfg.WriteTimeout = 150*time.Millisecond, 150*time.Millisecond
	cfg.Batching = batching
	bcfg := breaker.DefaultConfig()
	bcfg.ConsecutiveFailures = 3
	bcfg.OpenDuration = time.Minute
	br, err := breaker.New("redis", bcfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, WithGuard(br))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reqs := []limiter.BucketRequest{{Key: uniqueKey("hung"), Rate: mustRate(t, 1, limiter.Hour, 5), Cost: 1}}
	if _, err := s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1)); err != nil {
		t.Fatal(err)
	}
	rs.Pause()
	defer rs.Resume()
	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := make([]limiter.BucketResult, 1)
			for br.State() != breaker.StateOpen && time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				if cancelled {
					ctx, cancel = context.WithCancel(context.Background())
					time.AfterFunc(20*time.Millisecond, cancel)
				}
				_, _ = s.Apply(ctx, reqs, res) // failures are the point: they open the breaker
				cancel()
			}
		}()
	}
	wg.Wait()
	if st := br.State(); st != breaker.StateOpen {
		t.Fatalf("breaker %v after 5s of a frozen Redis behind 20ms callers, want open", st)
	}
	// Open: calls are refused at once instead of waiting for Redis.
	start := time.Now()
	_, err = s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1))
	if !errors.Is(err, breaker.ErrOpen) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("call with the breaker open: %v after %v", err, time.Since(start))
	}
}

// TestCallerInputNotABreakerFailure: nothing a caller controls counts
// against the Redis breaker. A caller that has gone away (its context
// cancelled, before or during the call) counts as neither success nor
// failure, and the widest numbers a request can carry (the largest rate,
// capacity and cost, refunds included) are answered by the script, not
// refused with a script error.
func TestCallerInputNotABreakerFailure(t *testing.T) { bothModes(t, testCallerInputNotABreakerFailure) }

func testCallerInputNotABreakerFailure(t *testing.T, batching string) {
	addr := limitertest.StartRedis(t)
	cfg := DefaultConfig()
	cfg.Batching = batching
	cfg.URL = "redis://" + addr
	bcfg := breaker.DefaultConfig()
	bcfg.ConsecutiveFailures = 1
	br, err := breaker.New("redis", bcfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, WithGuard(br))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res := make([]limiter.BucketResult, 2)

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 5; i++ {
		reqs := []limiter.BucketRequest{{Key: uniqueKey("gone"), Rate: mustRate(t, 5, limiter.Hour, 5), Cost: 1}}
		if _, err := s.Apply(gone, reqs, res); !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply with a cancelled context = %v, want context.Canceled", err)
		}
	}

	wide := mustRate(t, ^uint32(0), limiter.Second, ^uint32(0))
	narrow := mustRate(t, 1, limiter.Year, 1)
	for _, c := range []limiter.BucketRequest{
		{Rate: wide, Cost: uint64(^uint32(0))},
		{Rate: wide, Cost: uint64(^uint32(0)), Op: limiter.OpRefund},
		{Rate: narrow, Cost: uint64(^uint32(0))},
		{Rate: narrow, Cost: 0},
		{Rate: wide, Cost: ^uint64(0)}, // a descriptor's hits_addend is 64 bits
		{Rate: narrow, Cost: ^uint64(0), Op: limiter.OpRefund},
	} {
		c.Key = uniqueKey("wide")
		reqs := []limiter.BucketRequest{c, {Key: uniqueKey("wide2"), Rate: wide, Cost: 1}}
		if _, err := s.Apply(context.Background(), reqs, res); err != nil {
			t.Fatalf("Apply %+v: %v", c, err)
		}
	}
	if sn := br.Snapshot(); sn.State != breaker.StateClosed || sn.WindowFailures != 0 || sn.ConsecutiveFailures != 0 {
		t.Fatalf("breaker after caller-side input: %+v", sn)
	}
}
