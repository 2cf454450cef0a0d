package memory

import (
	"testing"

	"github.com/sluice-rl/sluice/limiter"
)

// The victim is the bucket owing the fewest tokens now, after refill, not
// the one full last nor the one owing most in its own units.
func TestEvictLeastDebtAfterRefill(t *testing.T) {
	const second, hour = 1_000_000, 3600 * 1_000_000
	fast := limiter.Rate{Num: 1, Den: second, Cap: 10} // 1 token a second
	slow := limiter.Rate{Num: 1, Den: hour, Cap: 10}   // 1 token an hour
	put := func(sh *shard, key string, tokens, now int64, r limiter.Rate) {
		sh.buckets[key] = entry{st: limiter.Encode(tokens*int64(r.Den), now, r), num: r.Num, den: r.Den}
	}
	for _, c := range []struct {
		name      string
		after     int64 // microseconds after the writes
		victim    string
		forgotten float64
	}{
		// fast owes 5 tokens, slow 1: slow goes, though it is full later.
		{"before refill", 0, "slow", 1},
		// 4.5 s on, fast owes half a token, slow almost 1.
		{"after refill", 4_500_000, "fast", 0.5},
		// 6 s on, fast is full: forgetting it costs nothing.
		{"full again", 6 * second, "fast", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			sh := &shard{buckets: map[string]entry{}}
			const t0 = 1_700_000_000_000_000
			put(sh, "fast", 5, t0, fast)
			put(sh, "slow", 1, t0, slow)
			sh.evict(t0 + c.after)
			if _, ok := sh.buckets[c.victim]; ok || len(sh.buckets) != 1 {
				t.Fatalf("kept %v, want %s evicted", keys(sh), c.victim)
			}
			if sh.evictions != 1 || sh.evictedDebt != c.forgotten {
				t.Errorf("evictions %d, forgotten %v tokens; want 1, %v", sh.evictions, sh.evictedDebt, c.forgotten)
			}
		})
	}
}

func keys(sh *shard) []string {
	var out []string
	for k := range sh.buckets {
		out = append(out, k)
	}
	return out
}
