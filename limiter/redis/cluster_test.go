//go:build integration

package redis

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
			// Through two replicas, each call to the next: all or nothing
			// must hold across hash slots as every replica sees them.
			limitertest.RunStore(t, func(t *testing.T) limitertest.Harness {
				a, b := newURLStore(t, c.URL(), batching), newURLStore(t, c.URL(), batching)
				if a.Mode() != ModeCluster {
					t.Fatalf("Mode = %s", a.Mode())
				}
				h := ttlHarness(t, a, rc)
				h.Store = &replicas{stores: []*Store{a, b}}
				return h
			})
		})
		t.Run("slots", func(t *testing.T) { testClusterSlots(t, newURLStore(t, c.URL(), batching), rc) })
		t.Run("refund", func(t *testing.T) { testClusterRefund(t, c, batching, rc) })
		t.Run("quota across slots", func(t *testing.T) { testClusterQuota(t, c, batching, rc) })
	})
	t.Run("partial failure", func(t *testing.T) { testClusterPartialFailure(t, c, rc) })
	t.Run("refund retried", func(t *testing.T) { testClusterRefundRetried(t, c, rc) })
	t.Run("deny cache peeks", func(t *testing.T) { testClusterDenyCachePeeks(t, c) })
	t.Run("deny cache across replicas", func(t *testing.T) { testClusterUnsettled(t, c, rc) })
	t.Run("caller gone", func(t *testing.T) { testClusterCallerGone(t, c, rc) })
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
// nodes: one script call per slot group, all-or-nothing within a group and
// across groups.
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
	// Across groups too: others[2] took, and was refunded when a1's group
	// denied; it reports its state after the refund, as a bucket of a
	// denied single-slot call does.
	ok, res = apply(t, s, limiter.BucketRequest{Key: a1, Rate: rt, Cost: 1}, limiter.BucketRequest{Key: others[2], Rate: rt, Cost: 1})
	if ok || res[0].OK || !res[1].OK || res[1].Remaining != 2 {
		t.Fatalf("cross-slot: allowed=%v %+v", ok, res)
	}
	_, res = apply(t, s, limiter.BucketRequest{Key: others[2], Rate: rt, Cost: 1, Op: limiter.OpPeek})
	if res[0].Remaining != 2 {
		t.Fatalf("the other group paid: %+v", res[0])
	}
	if st := s.RefundStats(); st.Calls != 1 || st.Retried != 0 {
		t.Fatalf("refund stats %+v, want one call refunded at once", st)
	}
}

// replicas is Sluice replicas on one cluster: each call goes to the next
// store in turn.
type replicas struct {
	stores []*Store
	n      atomic.Uint64
}

func (r *replicas) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	return r.stores[r.n.Add(1)%uint64(len(r.stores))].Apply(ctx, reqs, res)
}

// crossNodes returns an ip and a global bucket key whose slots are served
// by different masters, so no script can see both.
func crossNodes(t testing.TB, rc *goredis.ClusterClient) (ip, global string) {
	t.Helper()
	ctx := context.Background()
	base := uniqueKey("cross")
	key := func(k, v string) string {
		return string(limiter.AppendKey(nil, base+":", "edge", []limiter.KeyPart{{Key: k, Value: v}}, nil))
	}
	global = key("global", "all")
	gm, err := rc.MasterForKey(ctx, global)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		ip = key("ip", "10.1.0."+strconv.Itoa(i))
		im, err := rc.MasterForKey(ctx, ip)
		if err != nil {
			t.Fatal(err)
		}
		if im.Options().Addr != gm.Options().Addr {
			return ip, global
		}
	}
	t.Fatal("no ip key on another master")
	return "", ""
}

// testClusterQuota: quota-mode takes whose buckets live on different
// masters are decided as one request. A slot group whose only quota take is
// short still pays its plain take when a quota take of another group fits
// (the request is allowed); when every quota take is short, nothing pays,
// as seen from another replica.
func testClusterQuota(t *testing.T, c *limitertest.RedisCluster, batching string, rc *goredis.ClusterClient) {
	a, b := newURLStore(t, c.URL(), batching), newURLStore(t, c.URL(), batching)
	ip, global := crossNodes(t, rc)
	below := func(key, v string) string { // a key in key's slot
		return key + ":" + v
	}
	qa, p := below(ip, "quota"), below(ip, "plain")
	qb, q2 := below(global, "quota"), below(global, "plain")
	if keySlot(qa) != keySlot(ip) || keySlot(qb) != keySlot(global) || keySlot(qa) == keySlot(qb) {
		t.Fatalf("slots: qa %d ip %d qb %d global %d", keySlot(qa), keySlot(ip), keySlot(qb), keySlot(global))
	}
	quota, plain := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 10, limiter.Hour, 0)
	if ok, _ := apply(t, a, limiter.BucketRequest{Key: qa, Rate: quota, Cost: 1, Op: limiter.OpQuotaTake}); !ok {
		t.Fatal("first quota take denied")
	}
	req := []limiter.BucketRequest{
		{Key: qa, Rate: quota, Cost: 1, Op: limiter.OpQuotaTake},
		{Key: p, Rate: plain, Cost: 1},
		{Key: qb, Rate: quota, Cost: 1, Op: limiter.OpQuotaTake},
		{Key: q2, Rate: plain, Cost: 1},
	}
	ok, res := apply(t, a, req...)
	if !ok || res[0].OK || !res[1].OK || !res[2].OK || !res[3].OK {
		t.Fatalf("one quota left, on the other master: allowed=%v %+v", ok, res)
	}
	peek := func(key string, rt limiter.Rate) uint64 {
		_, res := apply(t, b, limiter.BucketRequest{Key: key, Rate: rt, Op: limiter.OpPeek})
		return res[0].Remaining
	}
	if got := peek(p, plain); got != 9 {
		t.Fatalf("the plain take beside the short quota left %d, want 9: the allowed request did not pay it", got)
	}
	if got := peek(qb, quota); got != 0 {
		t.Fatalf("the quota that fitted left %d, want 0", got)
	}
	// Now every quota is short: denied, and nothing pays in either group.
	ok, res = apply(t, a, req...)
	if ok || res[0].OK || res[2].OK {
		t.Fatalf("every quota short: allowed=%v %+v", ok, res)
	}
	if got, got2 := peek(p, plain), peek(q2, plain); got != 9 || got2 != 9 {
		t.Fatalf("the denied request paid: plain buckets at %d and %d, want 9 and 9", got, got2)
	}
}

// testClusterRefund: a request denied by its ip bucket on replica A leaves
// the global bucket, on another master, as it was when seen from replica
// B, and leaves no record behind; shadow takes are refunded too, usage
// charges never.
func testClusterRefund(t *testing.T, c *limitertest.RedisCluster, batching string, rc *goredis.ClusterClient) {
	ctx := context.Background()
	a, b := newURLStore(t, c.URL(), batching), newURLStore(t, c.URL(), batching)
	ip, global := crossNodes(t, rc)
	ipRate, globalRate := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 10, limiter.Hour, 0)
	take := []limiter.BucketRequest{{Key: ip, Rate: ipRate, Cost: 1}, {Key: global, Rate: globalRate, Cost: 1}}
	if ok, res := apply(t, a, take...); !ok || res[1].Remaining != 9 {
		t.Fatalf("first request: allowed=%v %+v", ok, res)
	}
	for i := 0; i < 3; i++ {
		ok, res := apply(t, a, take...)
		if ok || res[0].OK || !res[1].OK || res[1].Remaining != 9 {
			t.Fatalf("ip over: allowed=%v %+v", ok, res)
		}
	}
	peek := func() uint64 {
		_, res := apply(t, b, limiter.BucketRequest{Key: global, Rate: globalRate, Op: limiter.OpPeek})
		return res[0].Remaining
	}
	if got := peek(); got != 9 {
		t.Fatalf("replica B sees %d left in the global bucket, want 9: the denied requests paid", got)
	}
	// A shadow take that paid is refunded; a usage charge is not.
	usage := mustRate(t, 100, limiter.Hour, 0)
	usage.MaxDebt = 1000
	charge := uniqueKey("charge") // no hash tag: a slot of its own
	ok, res := apply(t, a, limiter.BucketRequest{Key: ip, Rate: ipRate, Cost: 1},
		limiter.BucketRequest{Key: global, Rate: globalRate, Cost: 2, Op: limiter.OpShadowTake},
		limiter.BucketRequest{Key: charge, Rate: usage, Cost: 30, Op: limiter.OpCharge})
	if ok || !res[1].OK || res[1].Remaining != 9 || !res[2].OK || res[2].Remaining != 70 {
		t.Fatalf("shadow and usage: allowed=%v %+v", ok, res)
	}
	if got := peek(); got != 9 {
		t.Fatalf("the shadow take was not refunded: %d left", got)
	}
	// No record is left behind by the refunded calls.
	var mu sync.Mutex // ForEachMaster runs the masters at once
	var left []string
	err := rc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error {
		keys, err := n.Keys(ctx, "*~"+a.refunds.id+"*").Result()
		mu.Lock()
		left = append(left, keys...)
		mu.Unlock()
		return err
	})
	if err != nil || len(left) != 2 { // the allowed first request's two live on
		t.Fatalf("records left: %q (%v)", left, err)
	}
}

// testClusterPartialFailure: one group takes, another fails: the taken
// group is refunded, and the error is returned.
func testClusterPartialFailure(t *testing.T, c *limitertest.RedisCluster, rc *goredis.ClusterClient) {
	ctx := context.Background()
	a, b := newURLStore(t, c.URL(), "on"), newURLStore(t, c.URL(), "off")
	ip, global := crossNodes(t, rc)
	// A list where the ip bucket should be: its script fails (WRONGTYPE).
	if err := rc.RPush(ctx, ip, "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.PExpire(ctx, ip, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	globalRate := mustRate(t, 10, limiter.Hour, 0)
	for _, s := range []*Store{a, b} {
		res := make([]limiter.BucketResult, 2)
		_, err := s.Apply(ctx, []limiter.BucketRequest{{Key: ip, Rate: globalRate, Cost: 1}, {Key: global, Rate: globalRate, Cost: 1}}, res)
		if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Fatalf("Apply = %v, want the failed group's error", err)
		}
	}
	_, res := apply(t, b, limiter.BucketRequest{Key: global, Rate: globalRate, Op: limiter.OpPeek})
	if res[0].Remaining != 10 {
		t.Fatalf("the global bucket kept %d of 10 after partial failures", res[0].Remaining)
	}
}

// testClusterRefundRetried: a refund that cannot be sent within the call
// timeout (its master is paused) leaves the call's answer marked pending,
// and is retried in the background until it lands.
func testClusterRefundRetried(t *testing.T, c *limitertest.RedisCluster, rc *goredis.ClusterClient) {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.URL = c.URL()
	cfg.ReadTimeout = 200 * time.Millisecond
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := newURLStore(t, c.URL(), "on")
	ip, global := crossNodes(t, rc)
	gm, err := rc.MasterForKey(ctx, global)
	if err != nil {
		t.Fatal(err)
	}
	ipRate, globalRate := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 10, limiter.Hour, 0)
	apply(t, a, limiter.BucketRequest{Key: ip, Rate: ipRate, Cost: 1})
	a.beforeRefund = func() {
		if err := gm.Do(ctx, "CLIENT", "PAUSE", "500", "WRITE").Err(); err != nil {
			t.Error(err)
		}
	}
	ok, res := apply(t, a, limiter.BucketRequest{Key: ip, Rate: ipRate, Cost: 1}, limiter.BucketRequest{Key: global, Rate: globalRate, Cost: 1})
	if ok || !res[1].OK || !res[1].Pending || res[0].Pending {
		t.Fatalf("refund under pause: allowed=%v %+v, want global pending", ok, res)
	}
	if st := a.RefundStats(); st.Retried != 1 {
		t.Fatalf("refund stats %+v, want one retried", st)
	}
	limitertest.Eventually(t, 5*time.Second, "the background refund", func() bool {
		_, res := apply(t, b, limiter.BucketRequest{Key: global, Rate: globalRate, Op: limiter.OpPeek})
		return res[0].Remaining == 10
	})
	if st := a.RefundStats(); st.Failed != 0 || st.Dropped != 0 {
		t.Fatalf("refund stats %+v", st)
	}
}

// testClusterCallerGone: a caller that gives up while one group is held
// up (its master paused) and the other has taken leaves the call to the
// refunder, which waits for the held group and, as it denied, refunds the
// other.
func testClusterCallerGone(t *testing.T, c *limitertest.RedisCluster, rc *goredis.ClusterClient) {
	ctx := context.Background()
	a, b := newURLStore(t, c.URL(), "on"), newURLStore(t, c.URL(), "on")
	ip, global := crossNodes(t, rc)
	ipRate, globalRate := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 10, limiter.Hour, 0)
	apply(t, a, limiter.BucketRequest{Key: ip, Rate: ipRate, Cost: 1})
	im, err := rc.MasterForKey(ctx, ip)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Do(ctx, "CLIENT", "PAUSE", "300", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = a.Apply(cctx, []limiter.BucketRequest{{Key: ip, Rate: ipRate, Cost: 1}, {Key: global, Rate: globalRate, Cost: 1}},
		make([]limiter.BucketResult, 2))
	if err == nil {
		t.Fatal("Apply answered while the ip master was paused")
	}
	limitertest.Eventually(t, 5*time.Second, "the abandoned call's refund", func() bool {
		_, res := apply(t, b, limiter.BucketRequest{Key: global, Rate: globalRate, Op: limiter.OpPeek})
		return res[0].Remaining == 10 && a.RefundStats().Calls == 1
	})
	if st := a.RefundStats(); st.Failed != 0 || st.Dropped != 0 {
		t.Fatalf("refund stats %+v", st)
	}
}

// testClusterDenyCachePeeks: with the ip bucket known short, a deny cache
// sends the global bucket as a peek: nothing to take, nothing to refund.
func testClusterDenyCachePeeks(t *testing.T, c *limitertest.RedisCluster) {
	s := newURLStore(t, c.URL(), "on")
	rc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs})
	defer rc.Close()
	ip, global := crossNodes(t, rc)
	cache := limiter.NewDenyCache(s, limiter.DenyCacheConfig{})
	ipRate, globalRate := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 10, limiter.Hour, 0)
	// The ip bucket drained alone: a take across slots that is allowed
	// leaves its buckets unsettled (it might have been refunded) until its
	// record expires, and the cache learns nothing from them meanwhile.
	if ok, _ := apply(t, s, limiter.BucketRequest{Key: ip, Rate: ipRate, Cost: 1}); !ok {
		t.Fatal("the ip bucket's only token was denied")
	}
	take := []limiter.BucketRequest{{Key: ip, Rate: ipRate, Cost: 1}, {Key: global, Rate: globalRate, Cost: 1}}
	res := make([]limiter.BucketResult, 2)
	for i := 0; i < 4; i++ {
		ok, err := cache.Apply(context.Background(), take, res)
		if err != nil || ok || res[1].Remaining != 10 {
			t.Fatalf("request %d: allowed=%v %+v (%v)", i, ok, res, err)
		}
	}
	if st := cache.Stats(); st.Hits != 3 {
		t.Fatalf("deny cache %+v, want 3 hits", st)
	}
	if st := s.RefundStats(); st.Calls != 1 {
		t.Fatalf("refund stats %+v: the cache's denials took and refunded", st)
	}
}

// testClusterUnsettled: replica A's request takes the ip bucket's last
// token and is refunded, since the global bucket, on another master,
// denies it. Replica B, behind its own deny cache, is denied on the ip
// bucket before the refund lands, and must learn no bound from it: its
// next request, after the refund, reaches Redis and is admitted.
func testClusterUnsettled(t *testing.T, c *limitertest.RedisCluster, rc *goredis.ClusterClient) {
	ctx := context.Background()
	a, b := newURLStore(t, c.URL(), "on"), newURLStore(t, c.URL(), "off")
	cache := limiter.NewDenyCache(b, limiter.DenyCacheConfig{})
	ip, global := crossNodes(t, rc)
	ipRate, globalRate := mustRate(t, 1, limiter.Hour, 0), mustRate(t, 1, limiter.Hour, 0)
	if ok, _ := apply(t, a, limiter.BucketRequest{Key: global, Rate: globalRate, Cost: 1}); !ok {
		t.Fatal("the global bucket's only token was denied")
	}
	takeIP := []limiter.BucketRequest{{Key: ip, Rate: ipRate, Cost: 1}}
	res := make([]limiter.BucketResult, 1)
	var inWindow []limiter.BucketResult
	var windowOK bool
	var windowErr error
	a.beforeRefund = func() {
		windowOK, windowErr = cache.Apply(ctx, takeIP, res)
		inWindow = slices.Clone(res)
		if ttl, err := rc.PTTL(ctx, ip+"~u").Result(); err != nil || ttl <= 0 || ttl > a.refunds.ttl {
			t.Errorf("the unsettled marker's ttl is %v (%v), want in (0, %v]", ttl, err, a.refunds.ttl)
		}
	}
	ok, resA := apply(t, a, limiter.BucketRequest{Key: ip, Rate: ipRate, Cost: 1}, limiter.BucketRequest{Key: global, Rate: globalRate, Cost: 1})
	a.beforeRefund = nil
	if ok || !resA[0].Refunded || resA[1].OK {
		t.Fatalf("replica A: allowed=%v %+v, want denied by the global bucket, the ip bucket refunded", ok, resA)
	}
	if n, err := rc.Exists(ctx, ip+"~u").Result(); err != nil || n != 0 {
		t.Errorf("the unsettled marker outlived the refund (%d, %v)", n, err)
	}
	if windowErr != nil || windowOK || inWindow[0].OK || inWindow[0].Unsettled != 1 {
		t.Errorf("replica B before the refund: allowed=%v %+v (%v), want denied with 1 token unsettled",
			windowOK, inWindow, windowErr)
	}
	ok, err := cache.Apply(ctx, takeIP, res)
	if err != nil || !ok {
		t.Fatalf("replica B after the refund: allowed=%v %+v (%v), stats %+v: denied from a bound the refund undid",
			ok, res[0], err, cache.Stats())
	}
	if st := cache.Stats(); st.Hits != 0 {
		t.Fatalf("deny cache %+v, want no hits", st)
	}
}

// BenchmarkClusterRefundWindow measures the window in which a concurrent
// request can see tokens that a denied request across slots took and then
// gave back: the duration of such a call, from its takes being queued to
// the reply of its refunds, an upper bound of the time the tokens are
// away. It runs under an all-OK load like the bench suite's (one
// descriptor, 10k buckets of 1000/second, 64 callers) on a three-master
// cluster, and reports the p50 and p99 of the denied calls and, for
// comparison, of the all-OK calls.
//
//	go test -tags integration -run '^$' -bench ClusterRefundWindow -benchtime 20000x ./limiter/redis/
func BenchmarkClusterRefundWindow(b *testing.B) {
	c := limitertest.StartRedisCluster(b, 3)
	rc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs})
	defer rc.Close()
	cfg := DefaultConfig()
	cfg.URL = c.URL()
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	okRate := mustRate(b, 1000, limiter.Second, 1000)
	ipRate, globalRate := mustRate(b, 1, limiter.Hour, 0), mustRate(b, 1_000_000, limiter.Second, 1_000_000)
	base := uniqueKey("window")
	ip, global := crossNodes(b, rc)
	if _, err := s.Apply(ctx, []limiter.BucketRequest{{Key: ip, Rate: ipRate, Cost: 1}}, make([]limiter.BucketResult, 1)); err != nil {
		b.Fatal(err)
	}

	const callers, deniers = 64, 4
	var mu sync.Mutex
	var okDur, deniedDur []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < deniers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := []limiter.BucketRequest{{Key: ip, Rate: ipRate, Cost: 1}, {Key: global, Rate: globalRate, Cost: 1}}
			res := make([]limiter.BucketResult, 2)
			var d []time.Duration
			defer func() { mu.Lock(); deniedDur = append(deniedDur, d...); mu.Unlock() }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				ok, err := s.Apply(ctx, reqs, res)
				if err != nil || ok {
					b.Errorf("denied call: allowed=%v %v", ok, err)
					return
				}
				d = append(d, time.Since(t0))
			}
		}()
	}
	var seq atomic.Int64
	b.ResetTimer()
	b.SetParallelism(callers / 2)
	b.RunParallel(func(pb *testing.PB) {
		reqs := []limiter.BucketRequest{{Rate: okRate, Cost: 1}}
		res := make([]limiter.BucketResult, 1)
		var d []time.Duration
		for pb.Next() {
			reqs[0].Key = string(limiter.AppendKey(nil, base+":", "edge", []limiter.KeyPart{{Key: "k", Value: strconv.Itoa(int(seq.Add(1) % 10000))}}, nil))
			t0 := time.Now()
			if _, err := s.Apply(ctx, reqs, res); err != nil {
				b.Error(err)
				return
			}
			d = append(d, time.Since(t0))
		}
		mu.Lock()
		okDur = append(okDur, d...)
		mu.Unlock()
	})
	b.StopTimer()
	close(stop)
	wg.Wait()
	pct := func(d []time.Duration, p float64) float64 {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds())
	}
	b.ReportMetric(pct(deniedDur, 0.50), "window-p50-us")
	b.ReportMetric(pct(deniedDur, 0.99), "window-p99-us")
	b.ReportMetric(pct(okDur, 0.50), "ok-p50-us")
	b.ReportMetric(pct(okDur, 0.99), "ok-p99-us")
	b.ReportMetric(float64(len(deniedDur)), "denied-calls")
	if st := s.RefundStats(); st.Retried != 0 {
		b.Logf("refunds retried in the background: %+v", st)
	}
}
