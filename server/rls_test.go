package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server"
)

const (
	OK        = rlsv3.RateLimitResponse_OK
	OverLimit = rlsv3.RateLimitResponse_OVER_LIMIT
)

// want describes one expected descriptor status. limit "" means no
// current_limit; remaining -1 skips the check; reset -1 skips it.
type want struct {
	code      rlsv3.RateLimitResponse_Code
	limit     string // current_limit name, or "-" for a nameless limit
	remaining int64
	reset     time.Duration
}

func checkStatus(t *testing.T, i int, got *rlsv3.RateLimitResponse_DescriptorStatus, w want) {
	t.Helper()
	if got.GetCode() != w.code {
		t.Errorf("status[%d].code = %v, want %v", i, got.GetCode(), w.code)
	}
	cl := got.GetCurrentLimit()
	switch {
	case w.limit == "" && cl != nil:
		t.Errorf("status[%d].current_limit = %v, want none", i, cl)
	case w.limit != "" && cl == nil:
		t.Errorf("status[%d].current_limit missing, want %q", i, w.limit)
	case w.limit != "" && w.limit != "-" && cl.GetName() != w.limit:
		t.Errorf("status[%d].current_limit.name = %q, want %q", i, cl.GetName(), w.limit)
	}
	if w.remaining >= 0 && int64(got.GetLimitRemaining()) != w.remaining {
		t.Errorf("status[%d].limit_remaining = %d, want %d", i, got.GetLimitRemaining(), w.remaining)
	}
	if w.reset >= 0 {
		d := got.GetDurationUntilReset().AsDuration()
		if got.GetDurationUntilReset() == nil && w.limit != "" {
			t.Errorf("status[%d].duration_until_reset missing", i)
		} else if d != w.reset {
			t.Errorf("status[%d].duration_until_reset = %v, want %v", i, d, w.reset)
		}
	}
}

func check(t *testing.T, resp *rlsv3.RateLimitResponse, overall rlsv3.RateLimitResponse_Code, ws ...want) {
	t.Helper()
	if resp.GetOverallCode() != overall {
		t.Errorf("overall_code = %v, want %v", resp.GetOverallCode(), overall)
	}
	if len(resp.GetStatuses()) != len(ws) {
		t.Fatalf("%d statuses, want %d: %v", len(resp.GetStatuses()), len(ws), resp)
	}
	for i, w := range ws {
		checkStatus(t, i, resp.GetStatuses()[i], w)
	}
}

// edge is the DESIGN.md example domain plus rules for each test.
func edgeDomains() []limiter.DomainConfig {
	login := named(rl(5, limiter.Minute), "login")
	loginNode := node("path", "/login", login)
	loginNode.ShadowMode = true
	return []limiter.DomainConfig{
		domain("edge",
			node("remote_address", "", burst(rl(10, limiter.Second), 20)),
			loginNode,
			node("tenant", "acme*", nil, node("plan", "free", named(rl(1000, limiter.Hour), "acme_free"))),
			node("internal", "", &limiter.RateLimit{Unlimited: true}),
			node("banned", "", rl(0, limiter.Second)),
			node("weekly", "", named(rl(7, limiter.Week), "weekly")),
			node("global", "", named(rl(100, limiter.Minute), "global")),
			node("user", "", named(rl(1, limiter.Minute), "user")),
			node("multi", "", named(&limiter.RateLimit{RequestsPerUnit: 4, Unit: limiter.Minute, UnitMultiplier: 5}, "multi")),
		),
		domain("match",
			node("k", "exact", named(rl(1, limiter.Second), "exact")),
			node("k", "ex*", named(rl(1, limiter.Second), "wild1")),
			node("k", "e*", named(rl(1, limiter.Second), "wild2")),
			node("k", "", named(rl(1, limiter.Second), "any")),
			node("a", "1", named(rl(1, limiter.Second), "a1"),
				node("b", "", named(rl(1, limiter.Second), "ab")),
				node("c", "", nil)),
		),
		domain("rep",
			node("x", "", named(rl(1, limiter.Minute), "xl")),
			node("y", "", &limiter.RateLimit{Name: "yl", RequestsPerUnit: 10, Unit: limiter.Minute, Replaces: []string{"xl"}}),
		),
	}
}

func TestMatchingOrder(t *testing.T) {
	h := start(t, edgeDomains(), false)
	cases := []struct {
		name  string
		d     *ratelimitv3.RateLimitDescriptor
		limit string
	}{
		{"exact beats wildcards", desc(kv{"k", "exact"}), "exact"},
		{"first wildcard in file order", desc(kv{"k", "exfoo"}), "wild1"},
		{"second wildcard", desc(kv{"k", "efoo"}), "wild2"},
		{"key only", desc(kv{"k", "zzz"}), "any"},
		{"key only with empty value", desc(kv{"k", ""}), "any"},
		{"nested parent", desc(kv{"a", "1"}), "a1"},
		{"nested child: last entry's limit", desc(kv{"a", "1"}, kv{"b", "x"}), "ab"},
		{"node without limit", desc(kv{"a", "1"}, kv{"c", "x"}), ""},
		{"no child for entry", desc(kv{"a", "1"}, kv{"zz", "x"}), ""},
		{"no match at top", desc(kv{"a", "2"}), ""},
		{"unknown key", desc(kv{"nope", "x"}), ""},
		{"wildcard then nested", desc(kv{"tenant", "acme-eu"}, kv{"plan", "free"}), "acme_free"},
		{"wildcard not matching", desc(kv{"tenant", "other"}, kv{"plan", "free"}), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := h.mustCall(req(c.d.Entries[0].Key+"-unused", c.d)) // unknown domain first
			check(t, resp, OK, want{OK, "", 0, -1})
			dom := "match"
			if c.d.Entries[0].Key == "tenant" {
				dom = "edge"
			}
			resp = h.mustCall(req(dom, c.d))
			w := want{OK, c.limit, -1, -1}
			if c.limit == "" {
				w.remaining, w.reset = 0, -1
			}
			check(t, resp, OK, w)
			if c.limit == "" && resp.Statuses[0].DurationUntilReset != nil {
				t.Errorf("duration_until_reset set for a descriptor with no limit")
			}
		})
	}
}

func TestMatchedValuesHaveOwnBuckets(t *testing.T) {
	h := start(t, edgeDomains(), false)
	check(t, h.mustCall(req("match", desc(kv{"k", "efoo"}))), OK, want{OK, "wild2", 0, -1})
	check(t, h.mustCall(req("match", desc(kv{"k", "efoo"}))), OverLimit, want{OverLimit, "wild2", 0, time.Second})
	// Another value of the same wildcard has its own bucket.
	check(t, h.mustCall(req("match", desc(kv{"k", "ebar"}))), OK, want{OK, "wild2", 0, time.Second})
}

func TestUnknownDomain(t *testing.T) {
	h := start(t, edgeDomains(), false)
	resp := h.mustCall(req("nowhere", desc(kv{"remote_address", "1.2.3.4"}), desc(kv{"banned", "x"})))
	check(t, resp, OK, want{OK, "", 0, -1}, want{OK, "", 0, -1})
}

func TestReplaces(t *testing.T) {
	h := start(t, edgeDomains(), false)
	for i := 0; i < 3; i++ {
		resp := h.mustCall(req("rep", desc(kv{"x", "1"}), desc(kv{"y", "1"})))
		check(t, resp, OK, want{OK, "", 0, -1}, want{OK, "yl", int64(9 - i), -1})
	}
	// Without y, x's own limit applies.
	check(t, h.mustCall(req("rep", desc(kv{"x", "1"}))), OK, want{OK, "xl", 0, -1})
	check(t, h.mustCall(req("rep", desc(kv{"x", "1"}))), OverLimit, want{OverLimit, "xl", 0, time.Minute})
}

func TestRequestOverride(t *testing.T) {
	h := start(t, edgeDomains(), false)
	over := desc(kv{"remote_address", "10.0.0.1"})
	over.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{
		RequestsPerUnit: 2, Unit: typev3.RateLimitUnit_MINUTE, UnitMultiplier: wrapperspb.UInt32(3),
	}
	resp := h.mustCall(req("edge", over))
	check(t, resp, OK, want{OK, "-", 1, 90 * time.Second})
	cl := resp.Statuses[0].CurrentLimit
	if cl.RequestsPerUnit != 2 || cl.Unit != rlsv3.RateLimitResponse_RateLimit_MINUTE || cl.GetUnitMultiplier().GetValue() != 3 {
		t.Errorf("current_limit = %v, want 2 per 3 minutes", cl)
	}
	check(t, h.mustCall(req("edge", over)), OK, want{OK, "-", 0, 180 * time.Second})
	check(t, h.mustCall(req("edge", over)), OverLimit, want{OverLimit, "-", 0, 90 * time.Second})
	// The configured limit for the same descriptor has its own bucket.
	check(t, h.mustCall(req("edge", desc(kv{"remote_address", "10.0.0.1"}))), OK, want{OK, "-", 19, 100 * time.Millisecond})
	// An override for a descriptor with no configured limit applies too.
	none := desc(kv{"nothing", "here"})
	none.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_HOUR}
	check(t, h.mustCall(req("edge", none)), OK, want{OK, "-", 0, time.Hour})
	check(t, h.mustCall(req("edge", none)), OverLimit, want{OverLimit, "-", 0, time.Hour})
}

func TestTokenBucketBurstAndRefill(t *testing.T) {
	h := start(t, edgeDomains(), false)
	r := req("edge", desc(kv{"remote_address", "1.1.1.1"}))
	for i := 0; i < 20; i++ {
		resp := h.mustCall(r)
		check(t, resp, OK, want{OK, "-", int64(19 - i), time.Duration(i+1) * 100 * time.Millisecond})
	}
	check(t, h.mustCall(r), OverLimit, want{OverLimit, "-", 0, 100 * time.Millisecond})
	h.clock.Advance(99 * time.Millisecond)
	check(t, h.mustCall(r), OverLimit, want{OverLimit, "-", 0, time.Millisecond})
	h.clock.Advance(time.Millisecond)
	check(t, h.mustCall(r), OK, want{OK, "-", 0, 2 * time.Second})
	h.clock.Advance(500 * time.Millisecond) // 5 tokens back
	check(t, h.mustCall(r), OK, want{OK, "-", 4, 1600 * time.Millisecond})
	h.clock.Advance(time.Hour) // full again, capped at burst
	check(t, h.mustCall(r), OK, want{OK, "-", 19, 100 * time.Millisecond})
}

func TestCosts(t *testing.T) {
	h := start(t, edgeDomains(), false)
	d := func() *ratelimitv3.RateLimitDescriptor { return desc(kv{"remote_address", "2.2.2.2"}) }
	r := req("edge", d())
	r.HitsAddend = 5 // request-level cost
	check(t, h.mustCall(r), OK, want{OK, "-", 15, -1})
	r = req("edge", withHits(d(), 3)) // descriptor cost beats request cost
	r.HitsAddend = 5
	check(t, h.mustCall(r), OK, want{OK, "-", 12, -1})
	check(t, h.mustCall(req("edge", withHits(d(), 0))), OK, want{OK, "-", 12, -1}) // peek
	check(t, h.mustCall(req("edge", withHits(d(), 0))), OK, want{OK, "-", 12, -1})
	r = req("edge", d())
	r.HitsAddend = 0 // means 1
	check(t, h.mustCall(r), OK, want{OK, "-", 11, -1})
	// A cost over what is left is denied and pays nothing.
	check(t, h.mustCall(req("edge", withHits(d(), 12))), OverLimit, want{OverLimit, "-", 11, 100 * time.Millisecond})
	check(t, h.mustCall(req("edge", withHits(d(), 11))), OK, want{OK, "-", 0, 2 * time.Second})
	// A peek of an empty bucket is OK.
	check(t, h.mustCall(req("edge", withHits(d(), 0))), OK, want{OK, "-", 0, 2 * time.Second})
}

func TestCostOverCapacity(t *testing.T) {
	h := start(t, edgeDomains(), false)
	resp := h.mustCall(req("edge", withHits(desc(kv{"remote_address", "3.3.3.3"}), 21)))
	check(t, resp, OverLimit, want{OverLimit, "-", 20, 0})
	for _, hv := range resp.ResponseHeadersToAdd {
		if hv.Key == "Retry-After" {
			t.Errorf("Retry-After %q sent for a cost that can never pass", hv.Value)
		}
	}
	// Nothing was paid.
	check(t, h.mustCall(req("edge", desc(kv{"remote_address", "3.3.3.3"}))), OK, want{OK, "-", 19, -1})
}

func TestRefund(t *testing.T) {
	h := start(t, edgeDomains(), false)
	d := func() *ratelimitv3.RateLimitDescriptor { return desc(kv{"remote_address", "4.4.4.4"}) }
	check(t, h.mustCall(req("edge", withHits(d(), 20))), OK, want{OK, "-", 0, -1})
	check(t, h.mustCall(req("edge", d())), OverLimit, want{OverLimit, "-", 0, -1})
	ref := withHits(d(), 5)
	ref.IsNegativeHits = true
	check(t, h.mustCall(req("edge", ref)), OK, want{OK, "-", 5, 1500 * time.Millisecond})
	// Refunds are capped at the burst and are always OK.
	big := withHits(d(), 100)
	big.IsNegativeHits = true
	check(t, h.mustCall(req("edge", big)), OK, want{OK, "-", 20, 0})
	ban := withHits(desc(kv{"banned", "x"}), 1)
	ban.IsNegativeHits = true
	check(t, h.mustCall(req("edge", ban)), OK, want{OK, "-", 0, 0})
}

func TestAllOrNothing(t *testing.T) {
	h := start(t, edgeDomains(), false)
	both := func() *rlsv3.RateLimitRequest {
		return req("edge", desc(kv{"global", "g"}), desc(kv{"user", "bob"}))
	}
	check(t, h.mustCall(both()), OK, want{OK, "global", 99, -1}, want{OK, "user", 0, -1})
	for i := 0; i < 3; i++ {
		check(t, h.mustCall(both()), OverLimit, want{OK, "global", 99, -1}, want{OverLimit, "user", 0, time.Minute})
	}
	// The shared limit paid nothing for the denied requests.
	check(t, h.mustCall(req("edge", withHits(desc(kv{"global", "g"}), 0))), OK, want{OK, "global", 99, -1})
	// A ban denies the request and nothing pays.
	check(t, h.mustCall(req("edge", desc(kv{"global", "g"}), desc(kv{"banned", "b"}))), OverLimit,
		want{OK, "global", 99, -1}, want{OverLimit, "-", 0, 0})
	check(t, h.mustCall(req("edge", withHits(desc(kv{"global", "g"}), 0))), OK, want{OK, "global", 99, -1})
}

func TestShadowPerLimit(t *testing.T) {
	h := start(t, edgeDomains(), false)
	r := req("edge", desc(kv{"path", "/login"}))
	for i := 0; i < 5; i++ {
		check(t, h.mustCall(r), OK, want{OK, "login", int64(4 - i), -1})
	}
	for i := 0; i < 3; i++ {
		resp := h.mustCall(r)
		check(t, resp, OK, want{OK, "login", 0, -1})
		if len(resp.ResponseHeadersToAdd) != 0 {
			t.Errorf("rate-limit headers sent for a shadow limit: %v", resp.ResponseHeadersToAdd)
		}
	}
	// A shadowed denial does not block an enforced limit beside it, and
	// pays nothing itself.
	check(t, h.mustCall(req("edge", desc(kv{"path", "/login"}), desc(kv{"user", "eve"}))), OK,
		want{OK, "login", 0, -1}, want{OK, "user", 0, -1})
}

func TestShadowGlobal(t *testing.T) {
	h := start(t, edgeDomains(), true)
	r := req("edge", desc(kv{"user", "al"}), desc(kv{"banned", "x"}))
	for i := 0; i < 3; i++ {
		check(t, h.mustCall(r), OK, want{OK, "user", 0, -1}, want{OK, "-", 0, -1})
	}
}

func TestUnlimited(t *testing.T) {
	h := start(t, edgeDomains(), false)
	for i := 0; i < 3; i++ {
		resp := h.mustCall(req("edge", withHits(desc(kv{"internal", "svc"}), 1000)))
		check(t, resp, OK, want{OK, "", 4294967295, -1})
		if resp.Statuses[0].DurationUntilReset != nil {
			t.Errorf("duration_until_reset set for unlimited")
		}
	}
}

func TestBan(t *testing.T) {
	h := start(t, edgeDomains(), false)
	resp := h.mustCall(req("edge", desc(kv{"banned", "x"})))
	check(t, resp, OverLimit, want{OverLimit, "-", 0, 0})
	if cl := resp.Statuses[0].CurrentLimit; cl.RequestsPerUnit != 0 || cl.Unit != rlsv3.RateLimitResponse_RateLimit_SECOND {
		t.Errorf("current_limit = %v", cl)
	}
	check(t, h.mustCall(req("edge", withHits(desc(kv{"banned", "x"}), 0))), OK, want{OK, "-", 0, 0})
}

func TestStatusesInOrder(t *testing.T) {
	h := start(t, edgeDomains(), false)
	resp := h.mustCall(req("edge",
		desc(kv{"nothing", "x"}),
		desc(kv{"weekly", "w"}),
		desc(kv{"internal", "i"}),
		desc(kv{"multi", "m"}),
		desc(kv{"remote_address", "5.5.5.5"}),
	))
	check(t, resp, OK,
		want{OK, "", 0, -1},
		want{OK, "weekly", 6, 24 * time.Hour},
		want{OK, "", 4294967295, -1},
		want{OK, "multi", 3, 75 * time.Second},
		want{OK, "-", 19, 100 * time.Millisecond},
	)
	wk := resp.Statuses[1].CurrentLimit
	if wk.Unit != rlsv3.RateLimitResponse_RateLimit_WEEK || wk.RequestsPerUnit != 7 || wk.UnitMultiplier != nil {
		t.Errorf("weekly current_limit = %v", wk)
	}
	m := resp.Statuses[3].CurrentLimit
	if m.Unit != rlsv3.RateLimitResponse_RateLimit_MINUTE || m.GetUnitMultiplier().GetValue() != 5 {
		t.Errorf("multi current_limit = %v", m)
	}
}

func headerMap(resp *rlsv3.RateLimitResponse) map[string]string {
	m := map[string]string{}
	for _, h := range resp.ResponseHeadersToAdd {
		m[h.Key] = h.Value
	}
	return m
}

func TestResponseHeaders(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		h := start(t, edgeDomains(), false)
		r := req("edge", desc(kv{"remote_address", "6.6.6.6"}), desc(kv{"weekly", "w"}), desc(kv{"nothing", "x"}))
		got := headerMap(h.mustCall(r))
		wantH := map[string]string{"X-RateLimit-Limit": "7, 7;w=604800", "X-RateLimit-Remaining": "6", "X-RateLimit-Reset": "86400"}
		if !equalMaps(got, wantH) {
			t.Errorf("headers = %v, want %v", got, wantH)
		}
		// The descriptor with the least remaining wins; over limit adds Retry-After.
		h.clock.Advance(1500 * time.Microsecond)
		got = headerMap(h.mustCall(req("edge", withHits(desc(kv{"remote_address", "6.6.6.6"}), 19))))
		wantH = map[string]string{"X-RateLimit-Limit": "10, 10;w=1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2"}
		if !equalMaps(got, wantH) {
			t.Errorf("headers = %v, want %v", got, wantH)
		}
		got = headerMap(h.mustCall(req("edge", desc(kv{"weekly", "w"}), withHits(desc(kv{"remote_address", "6.6.6.6"}), 3))))
		wantH = map[string]string{"X-RateLimit-Limit": "10, 10;w=1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1", "Retry-After": "1"}
		if !equalMaps(got, wantH) {
			t.Errorf("headers = %v, want %v", got, wantH)
		}
		// No limited descriptor: no headers.
		if got := headerMap(h.mustCall(req("edge", desc(kv{"internal", "x"})))); len(got) != 0 {
			t.Errorf("headers for unlimited = %v", got)
		}
	})
	t.Run("off", func(t *testing.T) {
		h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.ResponseHeaders.Enabled = false }))
		for i := 0; i < 2; i++ {
			if got := h.mustCall(req("edge", desc(kv{"user", "u"}))).ResponseHeadersToAdd; len(got) != 0 {
				t.Errorf("headers = %v, want none", got)
			}
		}
	})
	t.Run("renamed", func(t *testing.T) {
		h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) {
			c.ResponseHeaders.Limit, c.ResponseHeaders.Remaining, c.ResponseHeaders.Reset = "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"
		}))
		got := headerMap(h.mustCall(req("edge", desc(kv{"user", "u"}))))
		wantH := map[string]string{"RateLimit-Limit": "1, 1;w=60", "RateLimit-Remaining": "0", "RateLimit-Reset": "60"}
		if !equalMaps(got, wantH) {
			t.Errorf("headers = %v, want %v", got, wantH)
		}
	})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestInvalidRequests(t *testing.T) {
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.GRPC.MaxRecvMsgBytes = 8192 }))
	many := func(n int, f func(int) *ratelimitv3.RateLimitDescriptor) []*ratelimitv3.RateLimitDescriptor {
		var ds []*ratelimitv3.RateLimitDescriptor
		for i := 0; i < n; i++ {
			ds = append(ds, f(i))
		}
		return ds
	}
	long := func(n int) string { return strings.Repeat("v", n) }
	manyEntries := func(n, size int) *ratelimitv3.RateLimitDescriptor {
		d := desc()
		for i := 0; i < n; i++ {
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: "k", Value: long(size)})
		}
		return d
	}
	noUnit := desc(kv{"user", "x"})
	noUnit.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1}
	cases := []struct {
		name string
		r    *rlsv3.RateLimitRequest
		msg  string
	}{
		{"empty domain", req("", desc(kv{"user", "x"})), "domain: must not be empty"},
		{"no descriptors", req("edge"), "descriptors: must not be empty"},
		{"descriptor without entries", req("edge", desc()), "descriptors[0].entries: must not be empty"},
		{"empty key", req("edge", desc(kv{"user", "x"}), desc(kv{"", "x"})), "descriptors[1].entries[0].key: must not be empty"},
		{"too many descriptors", req("edge", many(65, func(int) *ratelimitv3.RateLimitDescriptor { return desc(kv{"k", "v"}) })...), "bound of 64"},
		{"too many entries", req("edge", manyEntries(17, 1)), "descriptors[0].entries: more than the bound of 16"},
		{"key too long", req("edge", desc(kv{long(257), "x"})), "descriptors[0].entries[0].key: 257 bytes, longer than the bound of 256"},
		{"value too long", req("edge", desc(kv{"k", long(1025)})), "descriptors[0].entries[0].value: 1025 bytes, longer than the bound of 1024"},
		{"descriptor cost too large", req("edge", withHits(desc(kv{"k", "v"}), 1<<40)), "descriptors[0].hits_addend"},
		{"override without unit", req("edge", noUnit), "descriptors[0].limit.unit"},
		{"message too large", req("edge", manyEntries(10, 1000)), "message: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.call(c.r)
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("err = %v, want InvalidArgument containing %q", err, c.msg)
			}
			// The server still answers.
			check(t, h.mustCall(req("edge", desc(kv{"internal", "ok"}))), OK, want{OK, "", 4294967295, -1})
		})
	}
	t.Run("message too large for the transport", func(t *testing.T) {
		big := req("edge", many(6, func(int) *ratelimitv3.RateLimitDescriptor { return manyEntries(16, 1000) })...)
		_, err := h.call(big)
		if c := status.Code(err); c != codes.ResourceExhausted {
			t.Fatalf("err = %v, want ResourceExhausted", err)
		}
		check(t, h.mustCall(req("edge", desc(kv{"internal", "ok"}))), OK, want{OK, "", 4294967295, -1})
	})
}

func TestCustomBounds(t *testing.T) {
	h := start(t, edgeDomains(), false, withBounds(limiter.Bounds{MaxDescriptors: 2, MaxEntries: 2, MaxKeyLen: 4, MaxValueLen: 4}))
	for _, c := range []struct {
		r   *rlsv3.RateLimitRequest
		msg string
	}{
		{req("edge", desc(kv{"k", "v"}), desc(kv{"k", "v"}), desc(kv{"k", "v"})), "bound of 2"},
		{req("edge", desc(kv{"k", "v"}, kv{"k", "v"}, kv{"k", "v"})), "bound of 2"},
		{req("edge", desc(kv{"kkkkk", "v"})), "bound of 4"},
		{req("edge", desc(kv{"k", "vvvvv"})), "bound of 4"},
	} {
		_, err := h.call(c.r)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), c.msg) {
			t.Errorf("err = %v, want InvalidArgument with %q", err, c.msg)
		}
	}
}

func TestNilsNeverPanic(t *testing.T) {
	h := start(t, edgeDomains(), false)
	// In process, nils can reach the handler; over the wire they cannot.
	svc := h.srv.RateLimitService()
	for _, c := range []struct {
		name string
		r    *rlsv3.RateLimitRequest
	}{
		{"nil request", nil},
		{"nil descriptor", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{nil}}},
		{"nil entry", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{nil}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := svc.ShouldRateLimit(context.Background(), c.r)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestStoreErrorIsUnavailable(t *testing.T) {
	h := start(t, edgeDomains(), false, withStore(failStore{}))
	_, err := h.call(req("edge", desc(kv{"user", "x"})))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	// Decisions that need no store still work.
	check(t, h.mustCall(req("edge", desc(kv{"internal", "x"}))), OK, want{OK, "", 4294967295, -1})
}

func TestNoLimitsIsUnavailable(t *testing.T) {
	h := start(t, nil, false, withoutLimits())
	_, err := h.call(req("edge", desc(kv{"user", "x"})))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if code, _ := h.get("/health/ready"); code != 503 {
		t.Errorf("ready = %d without limits, want 503", code)
	}
}
