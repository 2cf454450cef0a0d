package limitertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
)

// The quota-mode cases (DESIGN section 2, quota_mode). Their descriptors
// share the first entry, so their buckets share a Redis Cluster hash slot
// and the cases hold there too.

func quotaNode(key, value string, r *limiter.RateLimit) limiter.DescriptorConfig {
	return limiter.DescriptorConfig{Key: key, Value: value, RateLimit: r, QuotaMode: true}
}

// svc is a descriptor under the shared first entry svc=x.
func svc(entries ...limiter.Entry) []limiter.Entry {
	return append([]limiter.Entry{{Key: "svc", Value: "x"}}, entries...)
}

func quotaDomain() limiter.DomainConfig {
	return domain("d", node("svc", "x", rl(10, limiter.Hour, 0),
		quotaNode("backend", "a", rl(1, limiter.Hour, 0)),
		quotaNode("backend", "b", rl(2, limiter.Hour, 0)),
		node("plain", "", rl(1, limiter.Hour, 0))))
}

func expectOverall(t *testing.T, resp *limiter.Response, want limiter.Code, what string) {
	t.Helper()
	if resp.Code != want {
		t.Fatalf("%s: overall = %v, want %v (statuses %+v)", what, resp.Code, want, resp.Statuses)
	}
}

// testQuotaSelection: a request is OK while one quota passes, and the
// quotas that are over pay nothing; when every quota is over the request
// is denied and nothing pays.
func testQuotaSelection(t *testing.T, h Harness) {
	e := newEnv(t, h, quotaDomain())
	a := desc(svc(limiter.Entry{Key: "backend", Value: "a"}))
	b := desc(svc(limiter.Entry{Key: "backend", Value: "b"}))
	r := req("d", desc(svc()), a, b)

	resp := e.decide(r)
	expectOverall(t, resp, limiter.OK, "call 1")
	e.expect(resp, 0, limiter.OK, 9)
	e.expect(resp, 1, limiter.OK, 0)
	e.expect(resp, 2, limiter.OK, 1)
	if !resp.Statuses[1].Quota || !resp.Statuses[2].Quota || resp.Statuses[0].Quota {
		t.Fatalf("quota flags = %v %v %v, want false true true", resp.Statuses[0].Quota, resp.Statuses[1].Quota, resp.Statuses[2].Quota)
	}

	// a is over, b passes: OK; the plain limit and b pay, a pays nothing.
	resp = e.decide(r)
	expectOverall(t, resp, limiter.OK, "call 2")
	e.expect(resp, 0, limiter.OK, 8)
	e.expect(resp, 1, limiter.OverLimit, 0)
	e.expect(resp, 2, limiter.OK, 0)
	if resp.Statuses[1].ResetMicros <= 0 {
		t.Fatalf("an over quota promised no retry: %+v", resp.Statuses[1])
	}

	// Both quotas over: denied, and nothing pays, twice (the second time a
	// deny cache in front knows both quotas short).
	for i := 3; i <= 4; i++ {
		resp = e.decide(r)
		expectOverall(t, resp, limiter.OverLimit, fmt.Sprintf("call %d", i))
		e.expect(resp, 0, limiter.OK, 8)
		e.expect(resp, 1, limiter.OverLimit, 0)
		e.expect(resp, 2, limiter.OverLimit, 0)
	}
	// Only quotas, all over: denied.
	expectOverall(t, e.decide(req("d", a, b)), limiter.OverLimit, "quotas alone")
	e.expect(e.decide(req("d", cost(svc(), 0))), 0, limiter.OK, 8)

	if e.h.Advance == nil {
		return // a store on the wall clock would take half an hour
	}
	// After b refills one token, b passes again and pays.
	e.wait(31 * time.Minute)
	resp = e.decide(r)
	expectOverall(t, resp, limiter.OK, "after refill")
	e.expect(resp, 0, limiter.OK, 9) // refilled to 10 meanwhile
	e.expect(resp, 1, limiter.OverLimit, 0)
	e.expect(resp, 2, limiter.OK, 0)
}

// testQuotaPlainOver: a plain descriptor over denies the request, and the
// quotas that would pass pay nothing.
func testQuotaPlainOver(t *testing.T, h Harness) {
	e := newEnv(t, h, quotaDomain())
	plain := desc(svc(limiter.Entry{Key: "plain", Value: "p"}))
	b := desc(svc(limiter.Entry{Key: "backend", Value: "b"}))
	resp := e.decide(req("d", plain, b))
	expectOverall(t, resp, limiter.OK, "call 1")
	e.expect(resp, 1, limiter.OK, 1)
	for i := 2; i <= 3; i++ {
		resp = e.decide(req("d", plain, b))
		expectOverall(t, resp, limiter.OverLimit, fmt.Sprintf("call %d", i))
		e.expect(resp, 0, limiter.OverLimit, 0)
		e.expect(resp, 1, limiter.OK, 1) // its own code; not paid
	}
	e.expect(e.decide(req("d", cost(svc(limiter.Entry{Key: "backend", Value: "b"}), 0))), 0, limiter.OK, 1)
}

// testQuotaBan: a quota-mode ban is a quota always over: alone it denies,
// beside a quota that passes it does not.
func testQuotaBan(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("svc", "x", rl(10, limiter.Hour, 0),
		quotaNode("backend", "banned", rl(0, limiter.Hour, 0)),
		quotaNode("backend", "b", rl(1, limiter.Hour, 0)))))
	banned := desc(svc(limiter.Entry{Key: "backend", Value: "banned"}))
	b := desc(svc(limiter.Entry{Key: "backend", Value: "b"}))

	resp := e.decide(req("d", desc(svc()), banned))
	expectOverall(t, resp, limiter.OverLimit, "ban alone")
	e.expect(resp, 0, limiter.OK, 10) // reported, not paid
	e.expect(resp, 1, limiter.OverLimit, 0)

	resp = e.decide(req("d", desc(svc()), banned, b))
	expectOverall(t, resp, limiter.OK, "ban beside a passing quota")
	e.expect(resp, 0, limiter.OK, 9)
	e.expect(resp, 1, limiter.OverLimit, 0)
	e.expect(resp, 2, limiter.OK, 0)

	resp = e.decide(req("d", desc(svc()), banned, b))
	expectOverall(t, resp, limiter.OverLimit, "ban beside an over quota")
	e.expect(resp, 0, limiter.OK, 9)
}

// testGlobalQuota: the global quota mode makes every admission limit a
// quota, and leaves a usage limit usage: its charge is paid in full and
// denies the request as usual.
func testGlobalQuota(t *testing.T, h Harness) {
	e := &env{t: t, h: h, prefix: fmt.Sprintf("q%d.%d:", time.Now().UnixNano(), prefixes.Add(1)), quota: true}
	e.lim = limiter.New(h.Store, limiter.Config{KeyPrefix: e.prefix})
	usage := rl(10, limiter.Hour, 0)
	usage.Charge = limiter.ChargeUsage
	e.load(domain("d", node("svc", "x", nil,
		node("a", "", rl(1, limiter.Hour, 0)),
		node("b", "", rl(1, limiter.Hour, 0)),
		node("u", "", usage))))
	a := desc(svc(limiter.Entry{Key: "a", Value: "1"}))
	b := desc(svc(limiter.Entry{Key: "b", Value: "1"}))

	expectOverall(t, e.decide(req("d", a, b)), limiter.OK, "call 1")
	resp := e.decide(req("d", a, b))
	expectOverall(t, resp, limiter.OverLimit, "both quotas over")
	if !resp.Statuses[0].Quota {
		t.Fatalf("the global quota mode did not apply: %+v", resp.Statuses[0])
	}

	// A usage charge over the balance denies, though the quota c passes;
	// c pays nothing and the charge is paid in full.
	c := desc(svc(limiter.Entry{Key: "a", Value: "2"}))
	resp = e.decide(req("d", c, cost(svc(limiter.Entry{Key: "u", Value: "1"}), 20)))
	expectOverall(t, resp, limiter.OverLimit, "usage over beside a passing quota")
	if resp.Statuses[1].Quota {
		t.Fatalf("the global quota mode applied to a usage limit: %+v", resp.Statuses[1])
	}
	e.expect(resp, 0, limiter.OK, 1)
	e.expect(e.decide(req("d", cost(svc(limiter.Entry{Key: "a", Value: "2"}), 0))), 0, limiter.OK, 1)
	resp = e.decide(req("d", cost(svc(limiter.Entry{Key: "u", Value: "1"}), 0)))
	if st := resp.Statuses[0]; st.Code != limiter.OverLimit || st.Remaining != 0 {
		t.Fatalf("usage bucket after a charge of 20 of 10: %+v, want in debt", st)
	}
}
