// Package limitertest holds what the tests of every store share: the
// contract suite RunStore, which checks a limiter.Store against DESIGN
// section 2 through limiter.Limiter, and helpers that start real backends.
package limitertest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
)

// Harness is one store under test.
type Harness struct {
	Store limiter.Store
	// Advance moves the store's clock; nil when the store keeps real time,
	// in which case the suite sleeps and bounds its expectations by the
	// time it measured.
	Advance func(time.Duration)
	// Now is the store's clock in microseconds (the wall clock when
	// Advance is nil).
	Now func() int64
	// TTL is the time until the bucket at key is full, and whether the
	// store holds the key at all.
	TTL func(key string) (time.Duration, bool)
}

var prefixes atomic.Int64

// env is one case's limiter over a fresh key space.
type env struct {
	t      *testing.T
	h      Harness
	lim    *limiter.Limiter
	prefix string
	shadow bool
	quota  bool // global quota mode
}

func newEnv(t *testing.T, h Harness, domains ...limiter.DomainConfig) *env {
	t.Helper()
	e := &env{t: t, h: h, prefix: fmt.Sprintf("t%d.%d:", time.Now().UnixNano(), prefixes.Add(1))}
	e.lim = limiter.New(h.Store, limiter.Config{KeyPrefix: e.prefix})
	e.load(domains...)
	return e
}

func (e *env) load(domains ...limiter.DomainConfig) {
	e.t.Helper()
	l, err := limiter.Compile(domains, limiter.CompileOptions{ShadowMode: e.shadow, QuotaMode: e.quota})
	if err != nil {
		e.t.Fatalf("compile: %v", err)
	}
	e.lim.SetLimits(l)
}

func (e *env) decide(req *limiter.Request) *limiter.Response {
	e.t.Helper()
	var resp limiter.Response
	if err := e.lim.Decide(context.Background(), req, &resp); err != nil {
		e.t.Fatalf("decide %+v: %v", req, err)
	}
	return &resp
}

// mark reads the store's clock, so a case can bound the time that passed
// between two decisions: exact on a fake clock, measured otherwise.
func (e *env) mark() int64 { return e.h.Now() }

// wait lets d pass on the store's clock.
func (e *env) wait(d time.Duration) {
	if e.h.Advance != nil {
		e.h.Advance(d)
		return
	}
	time.Sleep(d)
}

func rl(rpu uint32, unit limiter.Unit, burst uint32) *limiter.RateLimit {
	return &limiter.RateLimit{RequestsPerUnit: rpu, Unit: unit, Burst: burst}
}

func one(key, value string) []limiter.Entry { return []limiter.Entry{{Key: key, Value: value}} }

func req(domain string, ds ...limiter.Descriptor) *limiter.Request {
	return &limiter.Request{Domain: domain, Descriptors: ds}
}

func desc(entries []limiter.Entry) limiter.Descriptor { return limiter.Descriptor{Entries: entries} }

func cost(entries []limiter.Entry, c uint64) limiter.Descriptor {
	return limiter.Descriptor{Entries: entries, Cost: c, HasCost: true}
}

func refund(entries []limiter.Entry, c uint64) limiter.Descriptor {
	return limiter.Descriptor{Entries: entries, Cost: c, HasCost: true, Refund: true}
}

func domain(name string, ds ...limiter.DescriptorConfig) limiter.DomainConfig {
	return limiter.DomainConfig{Domain: name, Descriptors: ds, File: "test.yaml"}
}

func node(key, value string, r *limiter.RateLimit, children ...limiter.DescriptorConfig) limiter.DescriptorConfig {
	return limiter.DescriptorConfig{Key: key, Value: value, RateLimit: r, Descriptors: children}
}

func (e *env) expect(resp *limiter.Response, i int, code limiter.Code, remaining uint32) {
	e.t.Helper()
	st := resp.Statuses[i]
	if st.Code != code || st.Remaining != remaining {
		e.t.Fatalf("status[%d] = %v remaining %d, want %v remaining %d (reset %dus)", i, st.Code, st.Remaining, code, remaining, st.ResetMicros)
	}
}

// expectReset checks a reset time against want, allowing for the store
// time that passed since the bucket state want was computed from: drift
// is 0 on a fake clock.
func (e *env) expectReset(resp *limiter.Response, i int, want time.Duration, drift time.Duration) {
	e.t.Helper()
	got := time.Duration(resp.Statuses[i].ResetMicros) * time.Microsecond
	if got > want || got < want-drift-time.Millisecond*time.Duration(b2i(e.h.Advance == nil)) {
		e.t.Fatalf("status[%d] reset = %v, want %v (drift allowance %v)", i, got, want, drift)
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// RunStore runs the contract suite. newHarness must return a store with
// no buckets of its own in the way (each case uses a fresh key prefix).
func RunStore(t *testing.T, newHarness func(t *testing.T) Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"StepByStep", testStepByStep},
		{"Refill", testRefill},
		{"Burst", testBurst},
		{"Cost", testCost},
		{"Peek", testPeek},
		{"Refund", testRefund},
		{"AllOrNothing", testAllOrNothing},
		{"Ban", testBan},
		{"CostOverCapacity", testCostOverCapacity},
		{"Unlimited", testUnlimited},
		{"Shadow", testShadow},
		{"GlobalShadow", testGlobalShadow},
		{"Replaces", testReplaces},
		{"RequestOverride", testRequestOverride},
		{"SameBucketTwice", testSameBucketTwice},
		{"CapacityChange", testCapacityChange},
		{"KeyCollisions", testKeyCollisions},
		{"SharedWildcard", testSharedWildcard},
		{"TTL", testTTL},
		{"Concurrent", testConcurrent},
		{"UsageDebt", testUsageDebt},
		{"UsageMixed", testUsageMixed},
		{"UsageShadow", testUsageShadow},
		{"UsageRefund", testUsageRefund},
		{"UsageFloor", testUsageFloor},
		{"UsageModeChange", testUsageModeChange},
		{"UsageRequestOverride", testUsageRequestOverride},
		{"QuotaSelection", testQuotaSelection},
		{"QuotaPlainOver", testQuotaPlainOver},
		{"QuotaBan", testQuotaBan},
		{"GlobalQuota", testGlobalQuota},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newHarness(t)) })
	}
}

func testStepByStep(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("user", "", rl(5, limiter.Hour, 0))))
	r := req("d", desc(one("user", "alice")))
	start := e.mark()
	for i := 1; i <= 5; i++ {
		resp := e.decide(r)
		e.expect(resp, 0, limiter.OK, uint32(5-i))
		if resp.Code != limiter.OK {
			t.Fatalf("call %d: overall %v", i, resp.Code)
		}
		// Time to full: i tokens at 12 minutes each.
		drift := time.Duration(e.mark()-start) * time.Microsecond
		e.expectReset(resp, 0, time.Duration(i)*12*time.Minute, drift)
	}
	resp := e.decide(r)
	e.expect(resp, 0, limiter.OverLimit, 0)
	if resp.Code != limiter.OverLimit {
		t.Fatalf("overall = %v, want OVER_LIMIT", resp.Code)
	}
	if st := resp.Statuses[0]; st.Limit == nil || st.Limit.RequestsPerUnit != 5 || st.Limit.Unit != limiter.Hour {
		t.Fatalf("current limit = %+v", st.Limit)
	}
	// Retry after: one token, 12 minutes after the first take.
	drift := time.Duration(e.mark()-start) * time.Microsecond
	e.expectReset(resp, 0, 12*time.Minute, drift)
	// Another user has a bucket of its own.
	e.expect(e.decide(req("d", desc(one("user", "bob")))), 0, limiter.OK, 4)
}

func testRefill(t *testing.T, h Harness) {
	// 10 per second, capacity 10: drain, let 300ms pass, expect about 3.
	e := newEnv(t, h, domain("d", node("k", "", rl(10, limiter.Second, 0))))
	r := req("d", cost(one("k", "v"), 10))
	start := e.mark()
	e.expect(e.decide(r), 0, limiter.OK, 0)
	end1 := e.mark()
	e.wait(300 * time.Millisecond)
	start2 := e.mark()
	resp := e.decide(req("d", cost(one("k", "v"), 0)))
	end2 := e.mark()
	lo := time.Duration(start2-end1) * time.Microsecond
	hi := time.Duration(end2-start) * time.Microsecond
	got := resp.Statuses[0].Remaining
	min, max := uint32(lo/(100*time.Millisecond)), uint32(hi/(100*time.Millisecond))
	if max > 10 {
		max = 10
	}
	if got < min || got > max {
		t.Fatalf("after %v..%v remaining = %d, want %d..%d", lo, hi, got, min, max)
	}
	if h.Advance != nil && got != 3 {
		t.Fatalf("fake clock: remaining = %d, want exactly 3", got)
	}
	// Refill never exceeds capacity.
	e.wait(time.Second)
	e.expect(e.decide(req("d", cost(one("k", "v"), 0))), 0, limiter.OK, 10)
}

func testBurst(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(1, limiter.Hour, 5))))
	r := req("d", desc(one("k", "v")))
	for i := 1; i <= 5; i++ {
		e.expect(e.decide(r), 0, limiter.OK, uint32(5-i))
	}
	e.expect(e.decide(r), 0, limiter.OverLimit, 0)
}

func testCost(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(10, limiter.Hour, 0))))
	r := req("d", desc(one("k", "v")))
	r.HitsAddend = 3
	e.expect(e.decide(r), 0, limiter.OK, 7)
	// The descriptor's own cost wins over the request's.
	r2 := req("d", cost(one("k", "v"), 5))
	r2.HitsAddend = 3
	e.expect(e.decide(r2), 0, limiter.OK, 2)
	// Too much: denied, nothing paid.
	e.expect(e.decide(r), 0, limiter.OverLimit, 2)
	r.HitsAddend = 0 // means 1
	e.expect(e.decide(r), 0, limiter.OK, 1)
}

func testPeek(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(2, limiter.Hour, 0))))
	peek := req("d", cost(one("k", "v"), 0))
	peek.HitsAddend = 7 // the descriptor's explicit 0 wins
	e.expect(e.decide(peek), 0, limiter.OK, 2)
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 1)
	e.expect(e.decide(peek), 0, limiter.OK, 1)
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 0)
	e.expect(e.decide(peek), 0, limiter.OK, 0)
}

func testRefund(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(10, limiter.Hour, 0))))
	e.expect(e.decide(req("d", cost(one("k", "v"), 6))), 0, limiter.OK, 4)
	e.expect(e.decide(req("d", refund(one("k", "v"), 2))), 0, limiter.OK, 6)
	// A refund never fills past capacity.
	e.expect(e.decide(req("d", refund(one("k", "v"), 100))), 0, limiter.OK, 10)
	// Refund of an empty bucket makes room.
	e.expect(e.decide(req("d", cost(one("k", "v"), 10))), 0, limiter.OK, 0)
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OverLimit, 0)
	e.expect(e.decide(req("d", refund(one("k", "v"), 1))), 0, limiter.OK, 1)
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 0)
}

func testAllOrNothing(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d",
		node("tenant", "", rl(10, limiter.Hour, 0)),
		node("client", "", rl(1, limiter.Hour, 0))))
	both := req("d", desc(one("tenant", "acme")), desc(one("client", "c1")))
	resp := e.decide(both)
	e.expect(resp, 0, limiter.OK, 9)
	e.expect(resp, 1, limiter.OK, 0)
	// The client is out: the request is denied and the tenant pays nothing.
	for i := 0; i < 5; i++ {
		resp = e.decide(both)
		if resp.Code != limiter.OverLimit {
			t.Fatalf("overall = %v, want OVER_LIMIT", resp.Code)
		}
		e.expect(resp, 0, limiter.OK, 9)
		e.expect(resp, 1, limiter.OverLimit, 0)
	}
	e.expect(e.decide(req("d", cost(one("tenant", "acme"), 0))), 0, limiter.OK, 9)
}

func testBan(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d",
		node("k", "", rl(10, limiter.Hour, 0)),
		node("bad", "", rl(0, limiter.Second, 0))))
	resp := e.decide(req("d", desc(one("k", "v")), desc(one("bad", "x"))))
	if resp.Code != limiter.OverLimit {
		t.Fatalf("overall = %v, want OVER_LIMIT", resp.Code)
	}
	e.expect(resp, 0, limiter.OK, 10) // reported, not paid
	e.expect(resp, 1, limiter.OverLimit, 0)
	if resp.Statuses[1].ResetMicros != 0 || resp.Statuses[1].Limit == nil {
		t.Fatalf("ban status = %+v, want a limit and no retry time", resp.Statuses[1])
	}
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 9)
}

func testCostOverCapacity(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d",
		node("k", "", rl(10, limiter.Hour, 0)),
		node("j", "", rl(10, limiter.Hour, 0))))
	resp := e.decide(req("d", cost(one("k", "v"), 11), desc(one("j", "v"))))
	if resp.Code != limiter.OverLimit {
		t.Fatalf("overall = %v", resp.Code)
	}
	e.expect(resp, 0, limiter.OverLimit, 10)
	if resp.Statuses[0].ResetMicros != 0 {
		t.Fatalf("cost over capacity promised a retry in %dus", resp.Statuses[0].ResetMicros)
	}
	e.expect(resp, 1, limiter.OK, 10)
}

func testUnlimited(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("internal", "", &limiter.RateLimit{Unlimited: true})))
	for i := 0; i < 3; i++ {
		resp := e.decide(req("d", cost(one("internal", "x"), 1000)))
		e.expect(resp, 0, limiter.OK, limiter.Unlimited)
		if resp.Statuses[0].Limit != nil {
			t.Fatalf("unlimited reported a current limit")
		}
	}
}

func testShadow(t *testing.T, h Harness) {
	shadowed := node("k", "", rl(1, limiter.Hour, 0))
	shadowed.ShadowMode = true
	e := newEnv(t, h, domain("d", shadowed, node("j", "", rl(10, limiter.Hour, 0))))
	r := req("d", desc(one("k", "v")), desc(one("j", "v")))
	resp := e.decide(r)
	e.expect(resp, 0, limiter.OK, 0)
	e.expect(resp, 1, limiter.OK, 9)
	resp = e.decide(r)
	if resp.Code != limiter.OK || !resp.Statuses[0].ShadowDenied {
		t.Fatalf("shadow denial: overall %v status %+v", resp.Code, resp.Statuses[0])
	}
	e.expect(resp, 0, limiter.OK, 0)
	e.expect(resp, 1, limiter.OK, 8) // the enforced limit still pays
}

func testGlobalShadow(t *testing.T, h Harness) {
	e := &env{t: t, h: h, prefix: fmt.Sprintf("g%d.%d:", time.Now().UnixNano(), prefixes.Add(1)), shadow: true}
	e.lim = limiter.New(h.Store, limiter.Config{KeyPrefix: e.prefix})
	e.load(domain("d", node("k", "", rl(1, limiter.Hour, 0)), node("bad", "", rl(0, limiter.Hour, 0))))
	for i := 0; i < 3; i++ {
		resp := e.decide(req("d", desc(one("k", "v")), desc(one("bad", "v"))))
		if resp.Code != limiter.OK {
			t.Fatalf("call %d: overall %v under global shadow mode", i, resp.Code)
		}
	}
}

func testReplaces(t *testing.T, h Harness) {
	general := rl(1, limiter.Hour, 0)
	general.Name = "general"
	special := rl(5, limiter.Hour, 0)
	special.Name = "special"
	special.Replaces = []string{"general"}
	e := newEnv(t, h, domain("d", node("path", "", general), node("user", "vip", special)))
	r := req("d", desc(one("path", "/x")), desc(one("user", "vip")))
	for i := 0; i < 3; i++ {
		resp := e.decide(r)
		if resp.Code != limiter.OK || resp.Statuses[0].Limit != nil {
			t.Fatalf("call %d: %v %+v: the replaced limit applied", i, resp.Code, resp.Statuses[0])
		}
		e.expect(resp, 1, limiter.OK, uint32(4-i))
	}
	// Alone, the general limit applies and its bucket was never touched.
	e.expect(e.decide(req("d", desc(one("path", "/x")))), 0, limiter.OK, 0)
}

func testRequestOverride(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(100, limiter.Hour, 0))))
	o := &limiter.RateLimit{RequestsPerUnit: 2, Unit: limiter.Second, UnitMultiplier: 30}
	d := desc(one("k", "v"))
	d.Override = o
	resp := e.decide(req("d", d))
	e.expect(resp, 0, limiter.OK, 1)
	if l := resp.Statuses[0].Limit; l == nil || l.UnitMultiplier != 30 {
		t.Fatalf("limit = %+v, want the override", l)
	}
	e.expectReset(resp, 0, 15*time.Second, time.Millisecond)
	e.expect(e.decide(req("d", d)), 0, limiter.OK, 0)
	e.expect(e.decide(req("d", d)), 0, limiter.OverLimit, 0)
	// The configured limit's bucket is a different one.
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 99)
	// A different override is a different bucket too.
	d2 := desc(one("k", "v"))
	d2.Override = &limiter.RateLimit{RequestsPerUnit: 3, Unit: limiter.Second, UnitMultiplier: 30}
	e.expect(e.decide(req("d", d2)), 0, limiter.OK, 2)
}

func testSameBucketTwice(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(3, limiter.Hour, 0))))
	r := req("d", desc(one("k", "v")), desc(one("k", "v")))
	resp := e.decide(r)
	e.expect(resp, 0, limiter.OK, 1)
	e.expect(resp, 1, limiter.OK, 1)
	resp = e.decide(r) // needs 2, holds 1: denied, nothing paid
	if resp.Code != limiter.OverLimit {
		t.Fatalf("overall %v", resp.Code)
	}
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 0)
}

func testCapacityChange(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(10, limiter.Hour, 0))))
	e.expect(e.decide(req("d", cost(one("k", "v"), 3))), 0, limiter.OK, 7)
	// Shrink: the debt (3 tokens) stays, capped at the new capacity.
	e.load(domain("d", node("k", "", rl(10, limiter.Hour, 5))))
	e.expect(e.decide(req("d", cost(one("k", "v"), 0))), 0, limiter.OK, 2)
	e.load(domain("d", node("k", "", rl(10, limiter.Hour, 2))))
	e.expect(e.decide(req("d", cost(one("k", "v"), 0))), 0, limiter.OK, 0)
	// Grow: peeks wrote nothing, so the stored debt is still 3 tokens.
	e.load(domain("d", node("k", "", rl(10, limiter.Hour, 20))))
	e.expect(e.decide(req("d", cost(one("k", "v"), 0))), 0, limiter.OK, 17)
	// A take under the small capacity stores the capped debt.
	e.load(domain("d", node("k", "", rl(10, limiter.Hour, 2))))
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OverLimit, 0)
	e.load(domain("d", node("k", "", rl(10, limiter.Hour, 4))))
	e.expect(e.decide(req("d", desc(one("k", "v")))), 0, limiter.OK, 0)
	e.load(domain("d", node("k", "", rl(10, limiter.Hour, 20))))
	e.expect(e.decide(req("d", cost(one("k", "v"), 0))), 0, limiter.OK, 16)
}

func testKeyCollisions(t *testing.T, h Harness) {
	lim := rl(1, limiter.Hour, 0)
	e := newEnv(t, h,
		domain("d", node("k", "", lim, node("j", "", lim)), node("k:", "", lim), node("a", "", lim)),
		domain("d:k", node("k", "", lim)),
		domain("d1", node("k", "", lim)))
	type rq struct {
		domain  string
		entries []limiter.Entry
	}
	all := []rq{
		{"d", one("k", "a:b")},
		{"d", one("k", "a")},
		{"d", []limiter.Entry{{Key: "k", Value: "a"}, {Key: "j", Value: "b"}}},
		{"d", []limiter.Entry{{Key: "k", Value: "a:j:b"}}},
		{"d", []limiter.Entry{{Key: "k", Value: "1:a"}, {Key: "j", Value: ""}}},
		{"d", one("k", "")},
		{"d", one("k:", "")},
		{"d", one("k:", "k")},
		{"d", one("k", "{x}")},
		{"d", one("k", "{x")},
		{"d", one("k", "a|b")},
		{"d", one("k", "a\nb")},
		{"d", one("k", "a\x00b")},
		{"d", one("k", "a\x00")},
		{"d", one("k", "é")},
		{"d", one("k", "e\u0301")},
		{"d", one("k", "日本")},
		{"d", one("a", "k")},
		{"d:k", one("k", "a")},
		{"d1", one("k", "a")},
		{"d", one("k", string(make([]byte, 300)))},
		{"d", one("k", string(make([]byte, 301)))},
	}
	for i, r := range all {
		resp := e.decide(req(r.domain, desc(r.entries)))
		if resp.Code != limiter.OK {
			t.Fatalf("request %d (%q %q) was denied: its bucket collides with an earlier one", i, r.domain, r.entries)
		}
	}
	for i, r := range all {
		if resp := e.decide(req(r.domain, desc(r.entries))); resp.Code != limiter.OverLimit {
			t.Fatalf("request %d (%q %q) second take allowed", i, r.domain, r.entries)
		}
	}
}

func testSharedWildcard(t *testing.T, h Harness) {
	shared := node("tenant", "acme*", rl(2, limiter.Hour, 0))
	shared.ShareThreshold = true
	e := newEnv(t, h, domain("d", shared, node("user", "team*", rl(2, limiter.Hour, 0))))
	e.expect(e.decide(req("d", desc(one("tenant", "acme-1")))), 0, limiter.OK, 1)
	e.expect(e.decide(req("d", desc(one("tenant", "acme-2")))), 0, limiter.OK, 0)
	e.expect(e.decide(req("d", desc(one("tenant", "acme*")))), 0, limiter.OverLimit, 0)
	// Without share_threshold every value has its own bucket.
	e.expect(e.decide(req("d", desc(one("user", "team-1")))), 0, limiter.OK, 1)
	e.expect(e.decide(req("d", desc(one("user", "team-2")))), 0, limiter.OK, 1)
}

func testTTL(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d",
		node("slow", "", rl(1, limiter.Hour, 2)),
		node("fast", "", rl(1000, limiter.Second, 1))))
	key := func(k, v string) string {
		return string(limiter.AppendKey(nil, e.prefix, "d", []limiter.KeyPart{{Key: k, Value: v}}, nil))
	}
	if _, ok := h.TTL(key("slow", "v")); ok {
		t.Fatalf("a full bucket is stored")
	}
	resp := e.decide(req("d", desc(one("slow", "v"))))
	ttl, ok := h.TTL(key("slow", "v"))
	reset := time.Duration(resp.Statuses[0].ResetMicros) * time.Microsecond
	if !ok || ttl > reset+time.Millisecond || ttl < reset-time.Second {
		t.Fatalf("TTL = %v (held %v), want about %v", ttl, ok, reset)
	}
	if reset != time.Hour && h.Advance != nil {
		t.Fatalf("time to full = %v, want 1h", reset)
	}
	e.decide(req("d", desc(one("fast", "v"))))
	e.wait(50 * time.Millisecond)
	if ttl, ok := h.TTL(key("fast", "v")); ok {
		t.Fatalf("bucket full for 49ms still stored, TTL %v", ttl)
	}
	// A refund to full removes the key.
	e.decide(req("d", refund(one("slow", "v"), 1)))
	if ttl, ok := h.TTL(key("slow", "v")); ok {
		t.Fatalf("bucket refunded to full still stored, TTL %v", ttl)
	}
}

func testConcurrent(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("k", "", rl(100, limiter.Hour, 0)), node("j", "", rl(1000, limiter.Hour, 0))))
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 30; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				var resp limiter.Response
				r := req("d", desc(one("k", "hot")), desc(one("j", strconv.Itoa(g))))
				if err := e.lim.Decide(context.Background(), r, &resp); err != nil {
					t.Error(err)
					return
				}
				if resp.Code == limiter.OK {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 100 {
		t.Fatalf("admitted %d of 300, want exactly 100", got)
	}
	// The per-goroutine buckets paid only for admitted requests.
	var total uint32
	for g := 0; g < 30; g++ {
		resp := e.decide(req("d", cost(one("j", strconv.Itoa(g)), 0)))
		total += 1000 - resp.Statuses[0].Remaining
	}
	if total != 100 {
		t.Fatalf("secondary buckets paid %d, want 100", total)
	}
}
