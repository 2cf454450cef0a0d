//go:build integration

package redis

import (
	"context"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// ttlHarness is the contract suite's harness over a store and a client
// that can read TTLs.
func ttlHarness(t *testing.T, s *Store, rc goredis.UniversalClient) limitertest.Harness {
	return limitertest.Harness{
		Store: s,
		Now:   func() int64 { return time.Now().UnixMicro() },
		TTL: func(key string) (time.Duration, bool) {
			d, err := rc.PTTL(context.Background(), key).Result()
			if err != nil {
				t.Fatalf("PTTL %q: %v", key, err)
			}
			switch {
			case d == -2:
				return 0, false
			case d < 0:
				return 0, true
			}
			return d, true
		},
	}
}

func newURLStore(t testing.TB, url, batching string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.Batching = batching
	cfg.ReadTimeout = time.Second
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestCluster runs the store contract on a three-master Redis Cluster in
// both batching modes, and checks slot grouping.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := limitertest.StartRedisCluster(t, 3)
	rc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = rc.Close() })

	bothModes(t, func(t *testing.T, batching string) {
		t.Run("contract", func(t *testing.T) {
			limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
				s := newURLStore(t, c.URL(), batching)
				if s.Mode() != ModeCluster {
					t.Fatalf("Mode = %s", s.Mode())
				}
				h := ttlHarness(t, s, rc)
				h.PerSlot = true
				return h
			})
		})
		t.Run("slots", func(t *testing.T) { testClusterSlots(t, newURLStore(t, c.URL(), batching), rc) })
	})
	t.Run("keyslot", func(t *testing.T) {
		for _, k := range []string{"a", "sl:{4:edge1:k1:v}rest", "{}x", "{x", "x}{y}", "{a}{b}", "\xff{é}"} {
			want, err := rc.ClusterKeySlot(context.Background(), k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := keySlot(k); int64(got) != want {
				t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
			}
		}
	})
	t.Run("ping", func(t *testing.T) {
		if err := newURLStore(t, c.URL(), "on").Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// testClusterSlots decides requests whose buckets live on different
// nodes: one script call per slot group, all-or-nothing within a group,
// each group on its own across groups.
func testClusterSlots(t *testing.T, s *Store, rc *goredis.ClusterClient) {
	ctx := context.Background()
	rt := mustRate(t, 1, limiter.Hour, 2)
	base := uniqueKey("slots")
	key := func(first, rest string) string {
		return string(limiter.AppendKey(nil, base+":", "edge", []limiter.KeyPart{{Key: "ip", Value: first}, {Key: "path", Value: rest}}, nil))
	}
	// Same first entry: one slot, whatever follows.
	a1, a2 := key("10.0.0.1", "/a"), key("10.0.0.1", "/b")
	if keySlot(a1) != keySlot(a2) {
		t.Fatalf("keys of one first entry on slots %d and %d", keySlot(a1), keySlot(a2))
	}
	// Find first entries on other slots (and so, mostly, other nodes).
	var others []string
	for i := 0; len(others) < 4; i++ {
		k := key("10.0.1."+strconv.Itoa(i), "/a")
		if keySlot(k) != keySlot(a1) {
			others = append(others, k)
		}
	}
	reqs := []limiter.BucketRequest{{Key: a1, Rate: rt, Cost: 1}, {Key: others[0], Rate: rt, Cost: 1},
		{Key: a2, Rate: rt, Cost: 1}, {Key: others[1], Rate: rt, Cost: 1}}
	ok, res := apply(t, s, reqs...)
	if !ok {
		t.Fatalf("first take across slots denied: %+v", res)
	}
	for i, r := range res {
		if !r.OK || r.Remaining != 1 {
			t.Fatalf("bucket %d: %+v", i, r)
		}
	}
	// Within a slot group, all or nothing: a1 short denies a2 too.
	apply(t, s, limiter.BucketRequest{Key: a1, Rate: rt, Cost: 1})
	ok, res = apply(t, s, limiter.BucketRequest{Key: a1, Rate: rt, Cost: 1}, limiter.BucketRequest{Key: a2, Rate: rt, Cost: 1})
	if ok || res[0].OK || !res[1].OK || res[1].Remaining != 1 {
		t.Fatalf("a1 short: allowed=%v %+v", ok, res)
	}
	if n, _ := rc.Get(ctx, a2).Result(); n == "" {
		t.Fatalf("a2 lost its state")
	}
	// Across groups each decides for itself: others[2] pays while a1 is
	// short (documented).
	ok, res = apply(t, s, limiter.BucketRequest{Key: a1, Rate: rt, Cost: 1}, limiter.BucketRequest{Key: others[2], Rate: rt, Cost: 1})
	if ok || res[0].OK || !res[1].OK || res[1].Remaining != 1 {
		t.Fatalf("cross-slot: allowed=%v %+v", ok, res)
	}
	_, res = apply(t, s, limiter.BucketRequest{Key: others[2], Rate: rt, Cost: 1, Op: limiter.OpPeek})
	if res[0].Remaining != 1 {
		t.Fatalf("the other group did not pay: %+v", res[0])
	}
}
