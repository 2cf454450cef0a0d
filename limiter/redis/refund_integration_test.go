//go:build integration

package redis

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

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
// over the same takes without one, per record.
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
	per := float64(with-plain) / n
	t.Logf("%d takes: used_memory +%d without records, +%d with: %.1f bytes per record", n, plain, with, per)
	if per <= 0 {
		t.Fatalf("records cost nothing: %.1f bytes", per)
	}
}
