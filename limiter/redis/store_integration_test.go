//go:build integration

package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestScriptMatchesDecide drives random calls through the script and
// through limiter.Decide and wants the same answers. Rates are slow (a
// token takes minutes or more), so the few milliseconds between the
// model's clock and the script's cannot change whole-token results; reset
// times may differ by about that much. The usage case adds usage charges
// and checks, buckets whose rate changes between admission and usage (a
// reload), and debt floors low enough to cut charges.
func TestScriptMatchesDecide(t *testing.T) {
	t.Run("admission", func(t *testing.T) { testScriptMatchesDecide(t, false, false) })
	t.Run("usage", func(t *testing.T) { testScriptMatchesDecide(t, true, false) })
	t.Run("quota", func(t *testing.T) { testScriptMatchesDecide(t, false, true) })
}

// testScriptMatchesDecide runs random calls through the script and the Go
// model; with usage they mix in usage ops, with quota quota takes.
func testScriptMatchesDecide(t *testing.T, usage, quota bool) {
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr)
	rc := rawClient(t, addr)

	type keyRate struct {
		key  string
		rpu  uint32
		unit limiter.Unit
		caps []uint32 // capacities a call may use (a limit that changed)
	}
	seed := uint64(time.Now().UnixNano())
	if v := testingSeed(); v != 0 {
		seed = v
	}
	t.Logf("seed %d (set SLUICE_TEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	calls := 3000
	if testing.Short() {
		calls = 500
	}
	var m model
	var maxWindow int64
	// Keys persist across rounds of one epoch so buckets accumulate debt.
	var pool []keyRate
	newPool := func() {
		pool = []keyRate{
			{uniqueKey("a"), 1, limiter.Hour, []uint32{3, 3, 3, 1}},
			{uniqueKey("b"), 7, limiter.Hour, []uint32{5, 5, 2}},
			{uniqueKey("c"), 2, limiter.Day, []uint32{4}},
			{uniqueKey("d"), 1, limiter.Day, []uint32{1}},
			{uniqueKey("e"), 10, limiter.Week, []uint32{6, 6, 6, 3}},
		}
		m = model{}
	}
	newPool()
	var denied, allowedN, refunds, single, cuts, charges int
	var quotaCalls, quotaDenied int // calls with quota takes; denied by them alone
	var history []string
	defer func() {
		if t.Failed() {
			for _, h := range history[max(0, len(history)-12):] {
				t.Log(h)
			}
		}
	}()
	for round := 0; round < calls; round++ {
		if round%100 == 99 {
			newPool()
		}
		n := 1 + rng.IntN(5)
		reqs := make([]limiter.BucketRequest, n)
		for i := range reqs {
			kr := pool[rng.IntN(len(pool))]
			if i > 0 && rng.IntN(4) == 0 {
				// the same key again in this call
				reqs[i] = reqs[rng.IntN(i)]
			} else {
				rt := mustRate(t, kr.rpu, kr.unit, kr.caps[rng.IntN(len(kr.caps))])
				if usage {
					// Rates this slow hold any of these floors exactly.
					// Admission ops get theirs cleared below: a limit
					// has one mode at a time.
					rt.MaxDebt = []uint64{1, rt.Cap, 3 * rt.Cap, 1000 * rt.Cap}[rng.IntN(4)]
				}
				reqs[i] = limiter.BucketRequest{Key: kr.key, Rate: rt}
			}
			x := rng.IntN(10)
			if usage && rng.IntN(2) == 0 {
				x = 10 + rng.IntN(4)
			}
			switch {
			case x < 5 && quota && rng.IntN(2) == 0:
				reqs[i].Op = limiter.OpQuotaTake
			case x < 5:
				reqs[i].Op = limiter.OpTake
			case x < 7:
				reqs[i].Op = limiter.OpShadowTake
			case x < 8:
				reqs[i].Op = limiter.OpPeek
			case x < 10:
				reqs[i].Op = limiter.OpRefund
				refunds++
			default:
				reqs[i].Op = []limiter.Op{limiter.OpCharge, limiter.OpShadowCharge, limiter.OpCheck, limiter.OpShadowCheck}[x-10]
				charges++
			}
			if op := reqs[i].Op; !op.Usage() && (op != limiter.OpRefund || rng.IntN(2) == 0) {
				reqs[i].Rate.MaxDebt = 0
			}
			switch rng.IntN(20) {
			case 0:
				reqs[i].Cost = 0
			case 1:
				reqs[i].Cost = reqs[i].Rate.Cap + 1 + uint64(rng.IntN(3))
			case 2:
				reqs[i].Cost = 1 << 40
			default:
				reqs[i].Cost = 1 + uint64(rng.IntN(int(reqs[i].Rate.Cap)))
			}
		}
		if rng.IntN(4) == 0 {
			// one enforced take: the script's table-free path
			n, reqs = 1, reqs[:1]
			reqs[0].Op = limiter.OpTake
			reqs[0].Rate.MaxDebt = 0
			single++
		}

		t0 := redisNow(t, rc)
		got := make([]limiter.BucketResult, n)
		gotOK, err := s.Apply(context.Background(), reqs, got)
		if err != nil {
			t.Fatalf("round %d: Apply(%+v): %v", round, reqs, err)
		}
		t1 := redisNow(t, rc)
		maxWindow = max(maxWindow, t1-t0)

		want := make([]limiter.BucketResult, n)
		wantOK := m.apply(t0, reqs, want)
		history = append(history, fmt.Sprintf("round %d at %d: reqs %+v\n  got %v %+v\n  want %v %+v", round, t0, reqs, gotOK, got, wantOK, want))
		if gotOK != wantOK {
			t.Fatalf("round %d: allowed = %v, model %v\nreqs %+v\ngot  %+v\nwant %+v", round, gotOK, wantOK, reqs, got, want)
		}
		if gotOK {
			allowedN++
		} else {
			denied++
		}
		if hasOp(reqs, limiter.OpQuotaTake) {
			quotaCalls++
			if !gotOK && !hasOp(reqs, limiter.OpTake) {
				quotaDenied++
			}
		}
		tol := 3*maxWindow + 10
		for i := range reqs {
			g, w := got[i], want[i]
			if w.Cut > 0 {
				cuts++
			}
			if g.OK != w.OK || g.Remaining != w.Remaining || g.Cut != w.Cut || abs(g.ResetMicros-w.ResetMicros) > tol {
				t.Fatalf("round %d: bucket %d: script %+v, model %+v (reset tolerance %dµs)\nreqs %+v\ngot  %+v\nwant %+v",
					round, i, g, w, tol, reqs, got, want)
			}
		}
	}
	t.Logf("%d calls (%d single takes): %d allowed, %d denied, %d refunds, %d usage ops, %d cut; widest TIME window %dµs",
		calls, single, allowedN, denied, refunds, charges, cuts, maxWindow)
	if allowedN == 0 || denied == 0 {
		t.Fatalf("the random calls did not exercise both outcomes")
	}
	if quota {
		if quotaCalls == 0 || quotaDenied == 0 || quotaDenied == quotaCalls {
			t.Fatalf("the random calls did not exercise quota takes both ways (%d calls, %d denied by quotas)", quotaCalls, quotaDenied)
		}
		t.Logf("%d calls with quota takes, %d denied by quotas alone", quotaCalls, quotaDenied)
	}
	if usage && (charges == 0 || cuts == 0) {
		t.Fatalf("the random calls did not exercise usage charges (%d) and the debt floor (%d)", charges, cuts)
	}
}

func TestScriptFlush(t *testing.T) { bothModes(t, testScriptFlush) }

func testScriptFlush(t *testing.T, batching string) {
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr, batching)
	rc := rawClient(t, addr)
	rt := mustRate(t, 10, limiter.Minute, 10)
	key := uniqueKey("flush")
	take := limiter.BucketRequest{Key: key, Rate: rt, Cost: 1}

	if _, res := apply(t, s, take); res[0].Remaining != 9 {
		t.Fatalf("first take: %+v", res[0])
	}
	for i := 0; i < 2; i++ {
		if err := rc.ScriptFlush(context.Background()).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		ok, res := apply(t, s, take)
		if !ok || res[0].Remaining != uint64(8-i) {
			t.Fatalf("take %d after SCRIPT FLUSH: allowed=%v %+v", i, ok, res[0])
		}
		// The fallback reloaded the script: EVALSHA works again.
		exists, err := rc.ScriptExists(context.Background(), s.sha.(string)).Result()
		if err != nil || !exists[0] {
			t.Fatalf("script not reloaded after fallback: %v %v", exists, err)
		}
	}
}

func TestRedisRestart(t *testing.T) { bothModes(t, testRedisRestart) }

func testRedisRestart(t *testing.T, batching string) {
	srv := limitertest.NewRedisServer(t)
	s := newTestStore(t, srv.Addr, batching)
	rt := mustRate(t, 10, limiter.Minute, 10)
	take := limiter.BucketRequest{Key: uniqueKey("restart"), Rate: rt, Cost: 1}
	apply(t, s, take)
	apply(t, s, take)

	// Restarted while idle: the next call reconnects and reloads the
	// script. The restarted server is empty, so the bucket is full.
	srv.Stop()
	srv.Start()
	ok, res := apply(t, s, take)
	if !ok || res[0].Remaining != 9 {
		t.Fatalf("after restart: allowed=%v %+v", ok, res[0])
	}

	// Down: calls fail with an error, quickly.
	srv.Stop()
	start := time.Now()
	_, err := s.Apply(context.Background(), []limiter.BucketRequest{take}, make([]limiter.BucketResult, 1))
	if err == nil {
		t.Fatalf("Apply with Redis down succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Apply with Redis down took %v", d)
	}
	if err := s.Ping(context.Background()); err == nil {
		t.Errorf("Ping with Redis down succeeded")
	}
	t.Logf("down: %v", err)

	// Back: the next call succeeds.
	srv.Start()
	ok, res = apply(t, s, take)
	if !ok || res[0].Remaining != 9 {
		t.Fatalf("after coming back: allowed=%v %+v", ok, res[0])
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestTTL(t *testing.T) {
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr)
	rc := rawClient(t, addr)
	ctx := context.Background()

	t.Run("time to full", func(t *testing.T) {
		// 10 per minute: a token every 6 s; three tokens take 18 s.
		rt := mustRate(t, 10, limiter.Minute, 10)
		key := uniqueKey("ttl")
		_, res := apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Cost: 3})
		if res[0].ResetMicros != 18_000_000 {
			t.Fatalf("reset = %dµs, want 18s", res[0].ResetMicros)
		}
		pttl, err := rc.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		want := time.Duration(res[0].ResetMicros) * time.Microsecond
		// PTTL counts down from the take; allow for a slow machine.
		if pttl > want+time.Millisecond || pttl < want-250*time.Millisecond {
			t.Fatalf("PTTL = %v, want about %v", pttl, want)
		}
		// A peek does not move the expiry.
		apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Op: limiter.OpPeek})
		if p2, _ := rc.PTTL(ctx, key).Result(); p2 > pttl {
			t.Fatalf("PTTL after peek = %v, was %v", p2, pttl)
		}
		// A refund of everything deletes the key: the bucket is full.
		apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Cost: 3, Op: limiter.OpRefund})
		if n, _ := rc.Exists(ctx, key).Result(); n != 0 {
			t.Fatalf("key still present after a full refund")
		}
	})

	t.Run("expires when full", func(t *testing.T) {
		// 1000 per second, burst 1: full again 1 ms after a take.
		rt := mustRate(t, 1000, limiter.Second, 1)
		key := uniqueKey("fast")
		ok, res := apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Cost: 1})
		if !ok || res[0].ResetMicros != 1000 {
			t.Fatalf("take: allowed=%v %+v", ok, res[0])
		}
		if pttl, _ := rc.PTTL(ctx, key).Result(); pttl > 2*time.Millisecond {
			t.Fatalf("PTTL = %v, want at most 2ms", pttl)
		}
		time.Sleep(50 * time.Millisecond)
		if n, _ := rc.Exists(ctx, key).Result(); n != 0 {
			t.Fatalf("key still present 50ms after the bucket was full")
		}
		ok, res = apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Cost: 1})
		if !ok || res[0].Remaining != 0 {
			t.Fatalf("take after refill: allowed=%v %+v", ok, res[0])
		}
	})

	t.Run("no write for peek or denial", func(t *testing.T) {
		rt := mustRate(t, 1, limiter.Hour, 1)
		key := uniqueKey("peek")
		apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Op: limiter.OpPeek, Cost: 1})
		if n, _ := rc.Exists(ctx, key).Result(); n != 0 {
			t.Fatalf("a peek at a full bucket created its key")
		}
		apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Cost: 2})
		if n, _ := rc.Exists(ctx, key).Result(); n != 0 {
			t.Fatalf("a denied take created its key")
		}
	})
}

// TestSlackUnderAnotherRate: a bucket written under a rate with a large Num
// keeps a slack of up to a millisecond in that rate's units; read under a
// rate with a smaller Num (a limit change) it must still stand for under a
// millisecond, as in limiter.Stored.Debt, not for up to a second.
func TestSlackUnderAnotherRate(t *testing.T) {
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr)
	rc := rawClient(t, addr)
	ctx := context.Background()
	key := uniqueKey("slack")
	// As written under 1000003 per hour (Num 1000003, slack below 1000*Num):
	// full in 300 ms, the exact full time 999999/1000003 µs before that.
	full := redisNow(t, rc)/1000 + 300
	if err := rc.Do(ctx, "SET", key, "999999", "PXAT", full).Err(); err != nil {
		t.Fatal(err)
	}
	rt := mustRate(t, 10, limiter.Second, 5) // Num 1: 100000 per token
	t0 := redisNow(t, rc)
	_, res := apply(t, s, limiter.BucketRequest{Key: key, Rate: rt, Op: limiter.OpPeek})
	t1 := redisNow(t, rc)
	// Read under Num 1 the slack is capped at 999: the debt is the time
	// to full less under a millisecond, about three tokens.
	lo, hi := full*1000-t1-999, full*1000-t0-999
	if res[0].ResetMicros < lo || res[0].ResetMicros > hi || res[0].Remaining != uint64(5-(res[0].ResetMicros+99_999)/100_000) {
		t.Fatalf("peek under the new rate: %+v, want a reset in [%d, %d] µs", res[0], lo, hi)
	}
}

// TestBadReply runs scripts with the wrong reply shape under the Store:
// each must give an error, never a panic or a made-up decision.
func TestBadReply(t *testing.T) {
	addr := limitertest.StartRedis(t)
	rt := mustRate(t, 1, limiter.Hour, 1)
	reqs := []limiter.BucketRequest{{Key: uniqueKey("bad"), Rate: rt, Cost: 1}, {Key: uniqueKey("bad"), Rate: rt, Cost: 1}}
	cases := []struct{ name, script, want string }{
		{"integer", "return 1", "redis token bucket script"},
		{"nil", "return nil", "redis token bucket script"},
		{"string", "return 'ok'", "redis token bucket script"},
		{"short", "return {1, 1, 1, 1}", "4 integers for 2 keys, want 7"},
		{"long", "return {1, 1, 1, 1, 1, 1, 1, 1}", "8 integers for 2 keys"},
		{"strings", "return {1, 1, 'x', 1, 1, 1, 1}", "redis token bucket script"},
		{"allowed out of range", "return {2, 1, 1, 1, 1, 1, 1}", "allowed = 2"},
		{"ok out of range", "return {1, 1, 1, 1, 7, 1, 1}", "key 1: ok=7"},
		{"negative remaining", "return {1, 1, -1, 1, 1, 1, 1}", "remaining=-1"},
		{"negative reset", "return {1, 1, 1, 1, 1, 1, -5}", "reset=-5"},
		{"error", "return redis.error_reply('BOOM broken')", "BOOM broken"},
		{"runtime error", "return nosuch.call()", "redis token bucket script"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.URL = "redis://" + addr
			s, err := newStore(cfg, tc.script)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			res := make([]limiter.BucketResult, len(reqs))
			ok, err := s.Apply(context.Background(), reqs, res)
			if err == nil || ok {
				t.Fatalf("Apply = %v, %v; want an error", ok, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply error %q, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("too few results", func(t *testing.T) {
		s := newTestStore(t, addr)
		if _, err := s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1)); err == nil {
			t.Fatal("Apply with a short result slice succeeded")
		}
	})
	t.Run("no requests", func(t *testing.T) {
		s := newTestStore(t, addr)
		if ok, err := s.Apply(context.Background(), nil, nil); !ok || err != nil {
			t.Fatalf("Apply(nil) = %v, %v", ok, err)
		}
	})
}

// TestUnavailable checks that a Redis that is gone or hangs costs a call
// at most about its timeout, and gives an error.
func TestUnavailable(t *testing.T) { bothModes(t, testUnavailable) }

func testUnavailable(t *testing.T, batching string) {
	rt := mustRate(t, 1, limiter.Hour, 1)
	reqs := []limiter.BucketRequest{{Key: uniqueKey("down"), Rate: rt, Cost: 1}}

	t.Run("nothing listening", func(t *testing.T) {
		srv := limitertest.NewRedisServer(t)
		addr := srv.Addr
		srv.Stop()
		s := newTestStore(t, addr, batching) // New does not dial
		for i := 0; i < 3; i++ {
			start := time.Now()
			_, err := s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1))
			if err == nil {
				t.Fatal("Apply succeeded with nothing listening")
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("call %d took %v", i, d)
			}
			if i == 0 {
				t.Logf("error: %v", err)
			}
		}
	})

	t.Run("hung server", func(t *testing.T) {
		srv := limitertest.NewRedisServer(t)
		cfg := DefaultConfig()
		cfg.Batching = batching
		cfg.URL = "redis://" + srv.Addr
		cfg.ReadTimeout = 200 * time.Millisecond
		cfg.DialTimeout = 200 * time.Millisecond
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		apply(t, s, reqs...) // connected
		srv.Pause()
		defer srv.Resume()
		start := time.Now()
		_, err = s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1))
		d := time.Since(start)
		if err == nil {
			t.Fatal("Apply succeeded against a stopped server")
		}
		if d > cfg.ReadTimeout+500*time.Millisecond {
			t.Fatalf("Apply took %v with read timeout %v", d, cfg.ReadTimeout)
		}
		t.Logf("after %v: %v", d.Round(time.Millisecond), err)

		// A shorter context deadline wins over the read timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		start = time.Now()
		if _, err := s.Apply(ctx, reqs, make([]limiter.BucketResult, 1)); err == nil {
			t.Fatal("Apply succeeded against a stopped server")
		}
		if d := time.Since(start); d > 30*time.Millisecond+300*time.Millisecond {
			t.Fatalf("Apply took %v with a 30ms context", d)
		}

		srv.Resume()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := s.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Apply still failing after the server resumed: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestKeyBytes checks that keys differing in any byte are distinct buckets.
func TestKeyBytes(t *testing.T) {
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr)
	rc := rawClient(t, addr)
	base := uniqueKey("bytes")
	suffixes := []string{"", "\x00", "\x00\x00", "a\x00b", "a", "a\n", "a\r\n", "{a}", "{a", "a}", "{}", ":", "|",
		"é", "e\u0301", "日本", "\xff\xfe", " ", "\t", "🙂"}
	rt := mustRate(t, 1, limiter.Hour, 2)
	reqs := make([]limiter.BucketRequest, len(suffixes))
	for i, sfx := range suffixes {
		reqs[i] = limiter.BucketRequest{Key: base + sfx, Rate: rt, Cost: 1}
	}
	// One call: a repeated key would share a bucket and show Remaining 0.
	ok, res := apply(t, s, reqs...)
	if !ok {
		t.Fatalf("denied: %+v", res)
	}
	for i := range res {
		if res[i].Remaining != 1 {
			t.Errorf("key %q: remaining %d, want 1", reqs[i].Key, res[i].Remaining)
		}
	}
	// One call each: each bucket now holds one token.
	for i := range reqs {
		_, res := apply(t, s, reqs[i])
		if res[0].Remaining != 0 {
			t.Errorf("key %q second take: remaining %d, want 0", reqs[i].Key, res[0].Remaining)
		}
		n, err := rc.Exists(context.Background(), reqs[i].Key).Result()
		if err != nil || n != 1 {
			t.Errorf("key %q not stored under its exact bytes: %d %v", reqs[i].Key, n, err)
		}
	}
	keys, err := rc.Keys(context.Background(), base+"*").Result()
	if err != nil || len(keys) != len(suffixes) {
		t.Fatalf("%d keys under %q, want %d: %v", len(keys), base, len(suffixes), err)
	}
}

// TestMemoryPerBucket measures Redis memory per live bucket against the
// DESIGN target of 140 bytes, for buckets keyed by an IPv4 remote_address.
// IPv6 keys, and IPv4 keys under an LRU maxmemory policy, are measured and
// logged only: they do not meet the target (see the log lines for why).
func TestMemoryPerBucket(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 100,000 buckets")
	}
	t.Run("ipv4", func(t *testing.T) {
		per := measureBuckets(t, func(i int) string {
			return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		})
		if per > 140 {
			t.Fatalf("%.1f bytes per bucket, want at most 140", per)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		measureBuckets(t, func(i int) string {
			return fmt.Sprintf("2001:db8:85a3:1200:8a2e:370:%x:%x", i>>16&0xffff, i&0xffff)
		})
	})
	t.Run("ipv4 allkeys-lru", func(t *testing.T) {
		// An LRU or LFU maxmemory policy turns off Redis's shared
		// integers, so each value costs a 16-byte object of its own.
		measureBuckets(t, func(i int) string {
			return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		}, "maxmemory", "1gb", "maxmemory-policy", "allkeys-lru")
	})
}

// measureBuckets creates 100,000 buckets keyed by remote_address values
// from value, in batches of 50 per Apply, on a server of its own, and
// returns the growth of used_memory per bucket.
func measureBuckets(t *testing.T, value func(int) string, config ...string) float64 {
	const buckets = 100_000
	const batch = 50
	addr := limitertest.NewRedisServer(t).Addr // used_memory counts only these
	s := newTestStore(t, addr)
	rc := rawClient(t, addr)
	ctx := context.Background()
	for i := 0; i+1 < len(config); i += 2 {
		if err := rc.ConfigSet(ctx, config[i], config[i+1]).Err(); err != nil {
			t.Fatalf("CONFIG SET %s %s: %v", config[i], config[i+1], err)
		}
	}
	rate := limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Hour}
	rt, err := rate.Rate()
	if err != nil {
		t.Fatal(err)
	}
	keyOf := func(i int) string {
		return string(limiter.AppendKey(nil, "sl:", "edge", []limiter.KeyPart{{Key: "remote_address", Value: value(i)}}, nil))
	}
	// Warm up: the script, a connection, the first allocations.
	apply(t, s, limiter.BucketRequest{Key: "warmup", Rate: rt, Cost: 1})
	before := usedMemory(t, rc)
	reqs := make([]limiter.BucketRequest, batch)
	res := make([]limiter.BucketResult, batch)
	for i := 0; i < buckets; i += batch {
		for j := range reqs {
			reqs[j] = limiter.BucketRequest{Key: keyOf(i + j), Rate: rt, Cost: 1}
		}
		if ok, err := s.Apply(ctx, reqs, res); err != nil || !ok {
			t.Fatalf("batch %d: %v %v", i/batch, ok, err)
		}
	}
	n, err := rc.DBSize(ctx).Result()
	if err != nil || n != buckets+1 {
		t.Fatalf("DBSIZE = %d (%v), want %d", n, err, buckets+1)
	}
	after := usedMemory(t, rc)
	per := float64(after-before) / buckets
	k := keyOf(12345)
	usage, _ := rc.MemoryUsage(ctx, k).Result()
	enc, _ := rc.ObjectEncoding(ctx, k).Result()
	val, _ := rc.Get(ctx, k).Result()
	t.Logf("%d buckets: used_memory %d -> %d, %.1f bytes per bucket; key %q (%d bytes): MEMORY USAGE %d, value %q encoded %s",
		buckets, before, after, per, k, len(k), usage, val, enc)
	t.Logf("per bucket: two dict entries (keyspace, expires) of 32 bytes each, about 21 bytes of hash-table slots, "+
		"and the key's sds (%d-byte key in a %d-byte allocation); the value is a shared integer and costs nothing "+
		"unless a maxmemory LRU/LFU policy is set (then 16 bytes)",
		len(k), sdsAlloc(len(k)))
	return per
}

// usedMemory is the used_memory of rc's server.
func usedMemory(t testing.TB, rc *goredis.Client) int64 {
	t.Helper()
	info, err := rc.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

func BenchmarkApply(b *testing.B) {
	addr := limitertest.StartRedis(b)
	cfg := DefaultConfig()
	cfg.URL = "redis://" + addr
	cfg.ReadTimeout = 5 * time.Second // a busy machine must not fail the benchmark
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rt := mustRate(b, 1000, limiter.Second, 1_000_000)
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("buckets=%d", n), func(b *testing.B) {
			var seq atomic.Int64
			base := uniqueKey("bench")
			b.ReportAllocs()
			b.SetParallelism(4) // 4 callers per CPU: the server overlaps their round trips
			b.RunParallel(func(pb *testing.PB) {
				g := seq.Add(1)
				reqs := make([]limiter.BucketRequest, n)
				for i := range reqs {
					reqs[i] = limiter.BucketRequest{Key: fmt.Sprintf("%s:%d:%d", base, g, i), Rate: rt, Cost: 1}
				}
				res := make([]limiter.BucketResult, n)
				for pb.Next() {
					if _, err := s.Apply(context.Background(), reqs, res); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func TestApplyAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race or -short")
	}
	addr := limitertest.StartRedis(t)
	rt := mustRate(t, 1000, limiter.Second, 1_000_000)
	// One caller at a time: with batching on each call is a pipeline of
	// its own, whose deadline and pipeline bookkeeping load would share.
	for _, mode := range []struct {
		batching           string
		limit, noDeadlineL float64
	}{{"off", 8, 14}, {"on", 16, 16}} {
		cfg := DefaultConfig()
		cfg.URL = "redis://" + addr
		cfg.Batching = mode.batching
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, n := range []int{1, 4} {
			reqs := make([]limiter.BucketRequest, n)
			for i := range reqs {
				reqs[i] = limiter.BucketRequest{Key: uniqueKey("allocs"), Rate: rt, Cost: 1}
			}
			res := make([]limiter.BucketResult, n)
			// Envoy sends a deadline shorter than the read timeout, and
			// then the unbatched store needs no timer of its own.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := s.Apply(ctx, reqs, res); err != nil {
					t.Fatal(err)
				}
			})
			cancel()
			noDeadline := testing.AllocsPerRun(200, func() {
				if _, err := s.Apply(context.Background(), reqs, res); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("batching %s, %d buckets: %.1f allocs per Apply (%.1f without a caller deadline)", mode.batching, n, allocs, noDeadline)
			if allocs > mode.limit {
				t.Errorf("batching %s, %d buckets: %.1f allocs per Apply, want at most %v", mode.batching, n, allocs, mode.limit)
			}
			if noDeadline > mode.noDeadlineL {
				t.Errorf("batching %s, %d buckets: %.1f allocs per Apply without a caller deadline, want at most %v", mode.batching, n, noDeadline, mode.noDeadlineL)
			}
		}
	}
}

func hasOp(reqs []limiter.BucketRequest, op limiter.Op) bool {
	for i := range reqs {
		if reqs[i].Op == op {
			return true
		}
	}
	return false
}
