package limitertest

import (
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
)

// The usage-mode cases of the contract (DESIGN section 2, "Charging
// mode"). Rates are per hour, so the milliseconds a real clock lets pass
// change no whole-token result; the cases that wait for a refill to pay a
// debt back move a fake clock, and on a real one check the promised reset
// time instead.

func usage(rpu uint32, unit limiter.Unit, burst uint32, maxDebt uint64) *limiter.RateLimit {
	r := rl(rpu, unit, burst)
	r.Charge, r.MaxDebt = limiter.ChargeUsage, maxDebt
	return r
}

// check is a usage-mode check: descriptor hits_addend 0.
func check(entries []limiter.Entry) limiter.Descriptor { return cost(entries, 0) }

func (e *env) expectCut(resp *limiter.Response, i int, cut uint64) {
	e.t.Helper()
	if got := resp.Statuses[i].Cut; got != cut {
		e.t.Fatalf("status[%d] cut = %d tokens, want %d", i, got, cut)
	}
}

func testUsageDebt(t *testing.T, h Harness) {
	// 1000 per hour: a token every 3.6 s.
	e := newEnv(t, h, domain("d", node("tenant", "", usage(1000, limiter.Hour, 0, 0))))
	k := one("tenant", "acme")
	e.expect(e.decide(req("d", check(k))), 0, limiter.OK, 1000)
	start := e.mark()
	e.expect(e.decide(req("d", cost(k, 900))), 0, limiter.OK, 100)
	// A report of 300 on a balance of 100: answered OVER_LIMIT, charged
	// in full all the same. The balance is -200.
	resp := e.decide(req("d", cost(k, 300)))
	e.expect(resp, 0, limiter.OverLimit, 0)
	e.expectCut(resp, 0, 0)
	if resp.Code != limiter.OverLimit {
		t.Fatalf("overall = %v, want OVER_LIMIT", resp.Code)
	}
	// Until the bucket holds 300 again: 500 tokens of refill.
	e.expectReset(resp, 0, 500*3600*time.Millisecond, time.Duration(e.mark()-start)*time.Microsecond)
	// Checks are OVER_LIMIT until the refill has paid the debt and one
	// whole token more: 201 tokens, 723.6 s.
	resp = e.decide(req("d", check(k)))
	e.expect(resp, 0, limiter.OverLimit, 0)
	drift := time.Duration(e.mark()-start) * time.Microsecond
	e.expectReset(resp, 0, 201*3600*time.Millisecond, drift)
	// A take that the balance cannot hold is charged too.
	e.expect(e.decide(req("d", cost(k, 1))), 0, limiter.OverLimit, 0)
	if h.Advance == nil {
		return
	}
	// The balance is -201: 202 tokens until a check passes.
	e.wait(201 * 3600 * time.Millisecond)
	e.expect(e.decide(req("d", check(k))), 0, limiter.OverLimit, 0)
	e.wait(3600 * time.Millisecond)
	e.expect(e.decide(req("d", check(k))), 0, limiter.OK, 1)
}

func testUsageMixed(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d",
		node("a", "", rl(10, limiter.Hour, 0)),
		node("u", "", usage(100, limiter.Hour, 0, 0)),
		node("ban", "", rl(0, limiter.Hour, 0))))
	a, u := one("a", "x"), one("u", "x")
	resp := e.decide(req("d", cost(a, 1), cost(u, 50)))
	e.expect(resp, 0, limiter.OK, 9)
	e.expect(resp, 1, limiter.OK, 50)
	// The usage descriptor is over: the request is OVER_LIMIT, the
	// admission take does not pay, the usage report is charged (-30).
	resp = e.decide(req("d", cost(a, 1), cost(u, 80)))
	if resp.Code != limiter.OverLimit {
		t.Fatalf("overall = %v, want OVER_LIMIT", resp.Code)
	}
	e.expect(resp, 1, limiter.OverLimit, 0)
	e.expect(e.decide(req("d", cost(a, 0))), 0, limiter.OK, 9)
	// The admission take is over: the usage report is charged anyway (-40).
	resp = e.decide(req("d", cost(a, 20), cost(u, 10)))
	e.expect(resp, 0, limiter.OverLimit, 9)
	e.expect(resp, 1, limiter.OverLimit, 0)
	// A ban denies the request; the usage report is still charged (-45).
	resp = e.decide(req("d", desc(one("ban", "x")), cost(u, 5)))
	if resp.Code != limiter.OverLimit {
		t.Fatalf("ban: overall = %v, want OVER_LIMIT", resp.Code)
	}
	// A failed usage check denies the request too, and nothing pays.
	resp = e.decide(req("d", cost(a, 1), check(u)))
	if resp.Code != limiter.OverLimit || resp.Statuses[0].Code != limiter.OK {
		t.Fatalf("check in debt: overall %v statuses %+v", resp.Code, resp.Statuses)
	}
	e.expect(e.decide(req("d", cost(a, 0))), 0, limiter.OK, 9)
	// Refunds pay the debt back: 46 tokens leave a balance of 1.
	e.expect(e.decide(req("d", refund(u, 45))), 0, limiter.OK, 0)
	e.expect(e.decide(req("d", check(u))), 0, limiter.OverLimit, 0)
	e.expect(e.decide(req("d", refund(u, 1))), 0, limiter.OK, 1)
	resp = e.decide(req("d", cost(a, 1), check(u)))
	e.expect(resp, 0, limiter.OK, 8)
	e.expect(resp, 1, limiter.OK, 1)
}

func testUsageShadow(t *testing.T, h Harness) {
	shadowed := node("s", "", usage(10, limiter.Hour, 0, 0))
	shadowed.ShadowMode = true
	e := newEnv(t, h, domain("d", shadowed, node("a", "", rl(10, limiter.Hour, 0))))
	s, a := one("s", "x"), one("a", "x")
	// Over, but shadowed: the answer is OK, and the report is charged.
	resp := e.decide(req("d", cost(s, 25), cost(a, 1)))
	if resp.Code != limiter.OK || !resp.Statuses[0].ShadowDenied {
		t.Fatalf("shadow usage: overall %v status %+v", resp.Code, resp.Statuses[0])
	}
	e.expect(resp, 0, limiter.OK, 0)
	e.expect(resp, 1, limiter.OK, 9)
	// A shadowed check in debt denies nothing.
	resp = e.decide(req("d", check(s), cost(a, 1)))
	if resp.Code != limiter.OK || !resp.Statuses[0].ShadowDenied {
		t.Fatalf("shadow check: overall %v status %+v", resp.Code, resp.Statuses[0])
	}
	e.expect(resp, 1, limiter.OK, 8)
	// The balance is -15: a refund of 15 leaves 0, one more leaves 1.
	e.decide(req("d", refund(s, 15)))
	if resp := e.decide(req("d", check(s))); !resp.Statuses[0].ShadowDenied {
		t.Fatalf("check at a balance of 0 passed: %+v", resp.Statuses[0])
	}
	e.decide(req("d", refund(s, 1)))
	if resp := e.decide(req("d", check(s))); resp.Statuses[0].ShadowDenied || resp.Statuses[0].Remaining != 1 {
		t.Fatalf("check at a balance of 1: %+v", resp.Statuses[0])
	}
}

func testUsageRefund(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("u", "", usage(10, limiter.Hour, 0, 0))))
	u := one("u", "x")
	e.expect(e.decide(req("d", cost(u, 4))), 0, limiter.OK, 6)
	// A refund never fills the bucket past its capacity.
	e.expect(e.decide(req("d", refund(u, 100))), 0, limiter.OK, 10)
	e.expect(e.decide(req("d", cost(u, 30))), 0, limiter.OverLimit, 0)
	e.expect(e.decide(req("d", refund(u, 20))), 0, limiter.OK, 0)
	e.expect(e.decide(req("d", refund(u, 3))), 0, limiter.OK, 3)
	// An admission-mode peek is not a check: OK at 0 remaining.
	e2 := newEnv(t, h, domain("d", node("a", "", rl(2, limiter.Hour, 0))))
	e2.expect(e2.decide(req("d", cost(one("a", "x"), 2))), 0, limiter.OK, 0)
	e2.expect(e2.decide(req("d", cost(one("a", "x"), 0))), 0, limiter.OK, 0)
}

func testUsageFloor(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("u", "", usage(10, limiter.Hour, 0, 5))))
	u := one("u", "x")
	// 10 - 30 = -20, floored at -5: 15 tokens cut, and counted.
	resp := e.decide(req("d", cost(u, 30)))
	e.expect(resp, 0, limiter.OverLimit, 0)
	e.expectCut(resp, 0, 15)
	resp = e.decide(req("d", cost(u, 3)))
	e.expectCut(resp, 0, 3)
	// A cost beyond anything the bucket can owe is cut too.
	resp = e.decide(req("d", cost(u, 1<<32)))
	e.expectCut(resp, 0, 1<<32)
	// The floor held: 6 tokens of refund leave a balance of 1.
	e.decide(req("d", refund(u, 6)))
	e.expect(e.decide(req("d", check(u))), 0, limiter.OK, 1)
	// The default floor is 1000 times the burst.
	e2 := newEnv(t, h, domain("d", node("u", "", usage(10, limiter.Hour, 0, 0))))
	resp = e2.decide(req("d", cost(u, 10_020)))
	e2.expectCut(resp, 0, 10)
	e2.decide(req("d", refund(u, 10_001)))
	e2.expect(e2.decide(req("d", check(u))), 0, limiter.OK, 1)
}

func testUsageModeChange(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("u", "", usage(10, limiter.Hour, 0, 20))))
	u := one("u", "x")
	e.expect(e.decide(req("d", cost(u, 25))), 0, limiter.OverLimit, 0) // -15
	// As admission: the debt is capped at an empty bucket.
	e.load(domain("d", node("u", "", rl(10, limiter.Hour, 0))))
	e.expect(e.decide(req("d", cost(u, 0))), 0, limiter.OK, 0)
	e.expect(e.decide(req("d", desc(u))), 0, limiter.OverLimit, 0)
	// Back to usage: nothing was written, the debt is kept.
	e.load(domain("d", node("u", "", usage(10, limiter.Hour, 0, 20))))
	e.decide(req("d", refund(u, 15)))
	e.expect(e.decide(req("d", check(u))), 0, limiter.OverLimit, 0)
	e.decide(req("d", cost(u, 10))) // -10
	// A lower floor clamps the debt kept: -5, so 6 tokens leave 1.
	e.load(domain("d", node("u", "", usage(10, limiter.Hour, 0, 5))))
	e.decide(req("d", refund(u, 6)))
	e.expect(e.decide(req("d", check(u))), 0, limiter.OK, 1)
	// Admission debt carried into usage mode: the bucket still owes it.
	e.load(domain("d", node("u", "", rl(10, limiter.Hour, 0))))
	e.expect(e.decide(req("d", refund(u, 100))), 0, limiter.OK, 10)
	e.expect(e.decide(req("d", cost(u, 10))), 0, limiter.OK, 0)
	e.load(domain("d", node("u", "", usage(10, limiter.Hour, 0, 5))))
	e.expect(e.decide(req("d", check(u))), 0, limiter.OverLimit, 0)
}

func testUsageRequestOverride(t *testing.T, h Harness) {
	e := newEnv(t, h, domain("d", node("u", "", usage(100, limiter.Hour, 0, 0)), node("a", "", rl(100, limiter.Hour, 0))))
	ov := &limiter.RateLimit{RequestsPerUnit: 5, Unit: limiter.Hour}
	d := cost(one("u", "x"), 8)
	d.Override = ov
	// The request-side limit charges usage, as the rule it replaces.
	resp := e.decide(req("d", d))
	e.expect(resp, 0, limiter.OverLimit, 0)
	c := check(one("u", "x"))
	c.Override = ov
	e.expect(e.decide(req("d", c)), 0, limiter.OverLimit, 0) // -3
	// Over an admission rule it stays admission: denied, nothing paid.
	d2 := cost(one("a", "x"), 8)
	d2.Override = ov
	e.expect(e.decide(req("d", d2)), 0, limiter.OverLimit, 5)
	c2 := cost(one("a", "x"), 0)
	c2.Override = ov
	e.expect(e.decide(req("d", c2)), 0, limiter.OK, 5)
}
