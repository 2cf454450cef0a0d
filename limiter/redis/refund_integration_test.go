//go:build integration

package redis

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/lua"
)

// TestScriptRecordRefund drives random calls through the script in record
// mode ('t') and wants the answers of limiter.Decide, as without a record;
// then refunds some of them ('r', twice) and wants every bucket as if the
// call's takes and shadow takes had never been made, while its usage
// charges and refunds stay. A refund finds its record only once, and a
// call that paid nothing leaves no record.
func TestScriptRecordRefund(t *testing.T) {
	addr := limitertest.StartRedis(t)
	rc := rawClient(t, addr)
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	if v := testingSeed(); v != 0 {
		seed = v
	}
	t.Logf("seed %d (set SLUICE_TEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 3))

	adm := []limiter.Rate{mustRate(t, 1, limiter.Hour, 3), mustRate(t, 7, limiter.Hour, 5), mustRate(t, 2, limiter.Day, 4)}
	use := mustRate(t, 10, limiter.Hour, 0)
	use.MaxDebt = 20
	var keys []string
	var m model
	newKeys := func() {
		keys = []string{uniqueKey("a"), uniqueKey("b"), uniqueKey("c"), uniqueKey("u")}
		m = model{}
	}
	newKeys()
	rateOf := func(k int) limiter.Rate {
		if k == 3 {
			return use
		}
		return adm[k]
	}
	script := func(reqs []limiter.BucketRequest, rec, mode string) []int64 {
		t.Helper()
		ks := make([]string, 0, len(reqs)+1)
		args := make([]any, 0, 6*len(reqs)+2)
		for _, r := range reqs {
			ks = append(ks, r.Key)
			args = append(args, uint64(r.Op), r.Rate.Num, r.Rate.Den, r.Rate.Cap, r.Cost, r.Rate.MaxDebt)
		}
		ks = append(ks, rec)
		args = append(args, mode, 5000)
		v, err := rc.Eval(ctx, lua.TokenBucket, ks, args...).Int64Slice()
		if err != nil {
			t.Fatalf("script %s %+v: %v", mode, reqs, err)
		}
		return v
	}
	const rounds = 400
	refunded, paid := 0, 0
	for round := 0; round < rounds; round++ {
		if round%50 == 49 {
			newKeys()
		}
		n := 1 + rng.IntN(4)
		reqs := make([]limiter.BucketRequest, n)
		for i := range reqs {
			if i > 0 && rng.IntN(5) == 0 {
				reqs[i] = reqs[rng.IntN(i)] // the same key again
			} else {
				k := rng.IntN(len(keys))
				reqs[i] = limiter.BucketRequest{Key: keys[k], Rate: rateOf(k)}
			}
			usage := reqs[i].Rate.MaxDebt > 0
			switch x := rng.IntN(10); {
			case usage && x < 6:
				reqs[i].Op = []limiter.Op{limiter.OpCharge, limiter.OpShadowCharge, limiter.OpCheck}[x%3]
			case usage || x == 9:
				reqs[i].Op = limiter.OpRefund
			case x < 5:
				reqs[i].Op = limiter.OpTake
			case x < 7:
				reqs[i].Op = limiter.OpShadowTake
			default:
				reqs[i].Op = limiter.OpPeek
			}
			reqs[i].Cost = 1 + uint64(rng.IntN(int(reqs[i].Rate.Cap)))
			if rng.IntN(15) == 0 {
				reqs[i].Cost = reqs[i].Rate.Cap + 1
			}
		}
		before := maps.Clone(m)
		rec := uniqueKey("rec")
		t0 := redisNow(t, rc)
		v := script(reqs, rec, "t")
		got := make([]limiter.BucketResult, n)
		gotOK, err := parseReply(v, got)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]limiter.BucketResult, n)
		wantOK := m.apply(t0, reqs, want)
		if gotOK != wantOK {
			t.Fatalf("round %d: allowed %v, model %v: %+v", round, gotOK, wantOK, reqs)
		}
		for i := range reqs {
			if got[i].OK != want[i].OK || got[i].Remaining != want[i].Remaining {
				t.Fatalf("round %d bucket %d: script %+v, model %+v: %+v", round, i, got[i], want[i], reqs)
			}
		}
		// A record exactly when a take or shadow take paid.
		pays := false
		for i, r := range reqs {
			pays = pays || (wantOK && want[i].OK && r.Cost > 0 && (r.Op == limiter.OpTake || r.Op == limiter.OpShadowTake))
		}
		if n, _ := rc.Exists(ctx, rec).Result(); (n == 1) != pays {
			t.Fatalf("round %d: record stored %v, paid %v: %+v", round, n == 1, pays, reqs)
		}
		if pays {
			paid++
		}
		if rng.IntN(2) == 0 {
			continue
		}
		refunded++
		// The model of the refund: the call with its takes as peeks.
		m = before
		undone := append([]limiter.BucketRequest(nil), reqs...)
		for i := range undone {
			if undone[i].Op == limiter.OpTake || undone[i].Op == limiter.OpShadowTake {
				undone[i].Op = limiter.OpPeek
			}
		}
		m.apply(t0, undone, want)
		for pass := 0; pass < 2; pass++ {
			after := make([]limiter.BucketResult, n)
			if _, err := parseReply(script(reqs, rec, "r"), after); err != nil {
				t.Fatal(err)
			}
			for i := range reqs {
				if after[i].Remaining != want[i].Remaining {
					t.Fatalf("round %d refund %d bucket %d: %+v, model %+v: %+v", round, pass, i, after[i], want[i], reqs)
				}
			}
		}
		if n, _ := rc.Exists(ctx, rec).Result(); n != 0 {
			t.Fatalf("round %d: record left after its refund", round)
		}
	}
	t.Logf("%d calls, %d paid, %d refunded", rounds, paid, refunded)
	if paid == 0 || refunded == 0 {
		t.Fatal("the random calls did not pay and refund")
	}
}

// TestRefundNeverOverfills: a refund that comes after the bucket refilled
// gives back no more than the refill left to give: the bucket ends no
// fuller than without the take, even when others took meanwhile.
func TestRefundNeverOverfills(t *testing.T) {
	addr := limitertest.StartRedis(t)
	rc := rawClient(t, addr)
	ctx := context.Background()
	// 100 tokens a second, capacity 10: a token every 10 ms.
	rt := mustRate(t, 100, limiter.Second, 10)
	key, rec := uniqueKey("overfill"), uniqueKey("rec")
	run := func(op limiter.Op, cost uint64, mode string) int64 {
		t.Helper()
		ks := []string{key}
		args := []any{uint64(op), rt.Num, rt.Den, rt.Cap, cost, 0}
		if mode != "" {
			ks = append(ks, rec)
			args = append(args, mode, 5000)
		}
		v, err := rc.Eval(ctx, lua.TokenBucket, ks, args...).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return v[2]
	}
	// Full; the call takes 5 (5 left), the bucket refills to full, and
	// another call takes 3 (7 left). Without the take it would hold 7 too:
	// the refund must give nothing back.
	if got := run(limiter.OpTake, 5, "t"); got != 5 {
		t.Fatalf("take: %d left", got)
	}
	limitertest.Eventually(t, 5*time.Second, "the bucket to refill", func() bool {
		return run(limiter.OpPeek, 0, "") == 10
	})
	run(limiter.OpTake, 3, "")
	if got := run(limiter.OpPeek, 0, "r"); got > 7 {
		t.Fatalf("after a late refund the bucket holds %d, more than the 7 it would without the take", got)
	}
}

// TestMemoryPerRecord measures the Redis memory a record holds while it
// lives (an allowed request across slots leaves one per group until it
// expires): the growth of used_memory over takes with a record, less that
// over the same takes without one and the unsettled markers', per record;
// and a marker's: what deleting them frees, per marker.
func TestMemoryPerRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 30,000 buckets")
	}
	const n = 10_000
	addr := limitertest.NewRedisServer(t).Addr
	rc := rawClient(t, addr)
	ctx := context.Background()
	rt := mustRate(t, 1, limiter.Hour, 0)
	r := &refunder{id: "AbCdEfGhIjKl"} // the length of a real id
	grow := func(round string, record bool) int64 {
		before := usedMemory(t, rc)
		pipe := rc.Pipeline()
		for i := 0; i < n; i++ {
			k := string(limiter.AppendKey(nil, "sl:", "edge", []limiter.KeyPart{{Key: "remote_address", Value: fmt.Sprintf("10.%s.%d.%d", round, i>>8, i&255)}}, nil))
			ks := []string{k}
			args := []any{0, rt.Num, rt.Den, rt.Cap, 1, 0}
			if record {
				rec, _ := r.recordKey(k)
				ks = append(ks, rec)
				args = append(args, "t", 60_000)
			}
			pipe.Eval(ctx, lua.TokenBucket, ks, args...)
			if i%500 == 499 {
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		return usedMemory(t, rc) - before
	}
	grow("0", false) // warm up: the script, the tables' first growth
	plain, with := grow("1", false), grow("2", true)
	// A take with a record also leaves the bucket's unsettled marker:
	// what deleting them frees is their share.
	before := usedMemory(t, rc)
	pipe := rc.Pipeline()
	for i := 0; i < n; i++ {
		k := string(limiter.AppendKey(nil, "sl:", "edge", []limiter.KeyPart{{Key: "remote_address", Value: fmt.Sprintf("10.2.%d.%d", i>>8, i&255)}}, nil))
		pipe.Del(ctx, k+"~u")
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if c.(*goredis.IntCmd).Val() != 1 {
			t.Fatal("a take with a record left no marker")
		}
	}
	markers := before - usedMemory(t, rc)
	perMarker := float64(markers) / n
	per := float64(with-plain-markers) / n
	t.Logf("%d takes: used_memory +%d without records, +%d with: %.1f bytes per record, %.1f per unsettled marker",
		n, plain, with, per, perMarker)
	if per <= 0 || perMarker <= 0 {
		t.Fatalf("records cost nothing: %.1f bytes, markers %.1f", per, perMarker)
	}
}

// TestScriptUnsettled: a take with a record adds what each bucket paid to
// its unsettled marker, which lives at least as long as the record, and a
// refund takes it off. The Cluster form of the script reports the marker
// of every bucket short after the call (a denied take, a take or peek that
// leaves less than its cost, the single-take fast path too), after the
// cut list; the plain script, as one node runs it, never does.
func TestScriptUnsettled(t *testing.T) {
	addr := limitertest.StartRedis(t)
	rc := rawClient(t, addr)
	ctx := context.Background()
	one, ten := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 10, limiter.Hour, 0)
	x, y, rec := uniqueKey("x"), uniqueKey("y"), uniqueKey("rec")
	args := func(reqs ...limiter.BucketRequest) ([]string, []any) {
		var ks []string
		var a []any
		for _, r := range reqs {
			ks = append(ks, r.Key)
			a = append(a, uint64(r.Op), r.Rate.Num, r.Rate.Den, r.Rate.Cap, r.Cost, r.Rate.MaxDebt)
		}
		return ks, a
	}
	run := func(src string, reqs ...limiter.BucketRequest) []int64 {
		t.Helper()
		ks, a := args(reqs...)
		v, err := rc.Eval(ctx, src, ks, a...).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// x's only token and 2 of y's, taken with a record.
	ks, a := args(limiter.BucketRequest{Key: x, Rate: one, Cost: 1}, limiter.BucketRequest{Key: y, Rate: ten, Cost: 2})
	ks, a = append(ks, rec), append(a, "t", 5000)
	if v, err := rc.Eval(ctx, lua.TokenBucket, ks, a...).Int64Slice(); err != nil || v[0] != 1 {
		t.Fatalf("take with a record: %v %v", v, err)
	}
	for k, want := range map[string]string{x: "1", y: "2"} {
		got, err := rc.Get(ctx, k+"~u").Result()
		ttl := rc.PTTL(ctx, k+"~u").Val()
		recTTL := rc.PTTL(ctx, rec).Val()
		if err != nil || got != want || ttl < recTTL || ttl > 5*time.Second {
			t.Fatalf("marker of %s: %q (%v), ttl %v, want %s living as long as the record (%v)", k, got, err, ttl, want, recTTL)
		}
	}
	takeX := limiter.BucketRequest{Key: x, Rate: one, Cost: 1}
	cases := []struct {
		name string
		reqs []limiter.BucketRequest
		want []int64 // the Cluster script's reply, less reset times
	}{
		{"one take", []limiter.BucketRequest{takeX}, []int64{0, 0, 0, 0, 1}},
		{"two takes", []limiter.BucketRequest{takeX, {Key: y, Rate: ten, Cost: 1}}, []int64{0, 0, 0, 1, 8, 0, 0, 1, 0}},
		{"peek", []limiter.BucketRequest{{Key: x, Rate: one, Op: limiter.OpPeek}, {Key: y, Rate: ten, Op: limiter.OpPeek}},
			[]int64{1, 1, 0, 1, 8, 0, 0, 1, 0}},
		{"leaves y short", []limiter.BucketRequest{{Key: y, Rate: ten, Cost: 8, Op: limiter.OpShadowTake}, {Key: y, Rate: ten, Op: limiter.OpPeek}},
			[]int64{1, 1, 0, 1, 0, 0, 0, 2, 2}},
	}
	resets := func(v []int64, n int) []int64 { // v without its reset times
		out := []int64{v[0]}
		for i := 1; i < len(v); i++ {
			if i > 3*n || i%3 != 0 {
				out = append(out, v[i])
			}
		}
		return out
	}
	for _, tc := range cases {
		got := resets(run(lua.TokenBucketCluster, tc.reqs...), len(tc.reqs))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: Cluster script replied %v (reset times left out), want %v", tc.name, got, tc.want)
		}
		// (the same call again, y short now for the shadow take as well)
		if plain := run(lua.TokenBucket, tc.reqs...); len(plain) != 1+3*len(tc.reqs) {
			t.Errorf("%s: one node's script replied %v: markers read", tc.name, plain)
		}
	}
	// The refund takes the record's tokens off the markers (the shadow
	// take above had no record): both go.
	ks[len(ks)-1], a[len(a)-2] = rec, "r"
	if _, err := rc.Eval(ctx, lua.TokenBucket, ks, a...).Int64Slice(); err != nil {
		t.Fatal(err)
	}
	if n := rc.Exists(ctx, x+"~u", y+"~u").Val(); n != 0 {
		t.Fatalf("%d markers left after the refund", n)
	}
}
