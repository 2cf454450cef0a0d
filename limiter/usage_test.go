package limiter

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUsageRate(t *testing.T) {
	cases := []struct {
		name    string
		rl      RateLimit
		maxDebt uint64
	}{
		{"admission has none", RateLimit{RequestsPerUnit: 100, Unit: Second}, 0},
		{"default 1000 x burst", RateLimit{RequestsPerUnit: 100, Unit: Second, Burst: 250, Charge: ChargeUsage}, 250_000},
		{"explicit", RateLimit{RequestsPerUnit: 100, Unit: Second, Charge: ChargeUsage, MaxDebt: 7}, 7},
		// 1 per year: a token is 3.15e13 units of debt, and 2^53 holds
		// about 285 of them, 100 of which are the burst.
		{"default lowered to what is exact", RateLimit{RequestsPerUnit: 1, Unit: Year, Burst: 100, Charge: ChargeUsage}, 185},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := c.rl.Rate()
			if err != nil {
				t.Fatal(err)
			}
			if r.MaxDebt != c.maxDebt {
				t.Fatalf("max debt = %d, want %d", r.MaxDebt, c.maxDebt)
			}
			if b := uint64(r.Bound()); b+1000*r.Num >= maxExact || b != (r.Cap+r.MaxDebt)*r.Den {
				t.Fatalf("bound %d not exact", b)
			}
		})
	}
	big := RateLimit{RequestsPerUnit: 1, Unit: Year, Burst: 100, Charge: ChargeUsage, MaxDebt: 186}
	if _, err := big.Rate(); err == nil || !strings.Contains(err.Error(), "max_debt 186") {
		t.Fatalf("max_debt past what is exact: err = %v", err)
	}
	if r, err := big.rate(true); err != nil || r.MaxDebt != 185 {
		t.Fatalf("clamped: %+v %v", r, err)
	}
}

func TestCompileUsageErrors(t *testing.T) {
	usage := func(r RateLimit) []DomainConfig {
		return []DomainConfig{{Domain: "a", File: "x.yaml", Descriptors: []DescriptorConfig{{Key: "k", Line: 3, RateLimit: &r}}}}
	}
	cases := []struct {
		name string
		ds   []DomainConfig
		want string
	}{
		{"usage on a ban", usage(RateLimit{Unit: Hour, Charge: ChargeUsage}), "x.yaml:3: rate_limit.charge: rule k: usage does not apply to a ban"},
		{"usage on unlimited", usage(RateLimit{Unlimited: true, Charge: ChargeUsage}), "x.yaml:3: rate_limit.charge: rule k: usage does not apply to an unlimited limit"},
		{"max_debt on admission", usage(RateLimit{RequestsPerUnit: 1, Unit: Hour, MaxDebt: 3}), "x.yaml:3: rate_limit.max_debt: rule k: applies only to charge: usage"},
		{"max_debt too large", usage(RateLimit{RequestsPerUnit: 1, Unit: Year, Charge: ChargeUsage, MaxDebt: 1 << 40}), "x.yaml:3: rate_limit: max_debt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(c.ds, CompileOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestVersionFollowsCharge(t *testing.T) {
	d := func(c Charge, md uint64) DomainConfig {
		return DomainConfig{Domain: "a", Descriptors: []DescriptorConfig{{Key: "k", RateLimit: &RateLimit{RequestsPerUnit: 1, Unit: Second, Charge: c, MaxDebt: md}}}}
	}
	a, u, u2 := mustCompile(t, d(ChargeAdmission, 0)), mustCompile(t, d(ChargeUsage, 0)), mustCompile(t, d(ChargeUsage, 5))
	if a.Version() == u.Version() || u.Version() == u2.Version() {
		t.Fatalf("versions %s %s %s", a.Version(), u.Version(), u2.Version())
	}
	if (&RateLimit{Charge: ChargeUsage}).Equal(&RateLimit{}) {
		t.Fatal("limits of different modes are Equal")
	}
}

// TestOverrideUsage: an override carries the charging mode as a limit
// file does, with the file's checks, each error naming the field.
func TestOverrideUsage(t *testing.T) {
	rl, err := ParseRateLimitJSON([]byte(`{"unit":"second","requests_per_unit":10,"charge":"usage","max_debt":50}`))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if rl.Charge != ChargeUsage || rl.MaxDebt != 50 || !rl.ChargeSet {
		t.Fatalf("parsed %+v", rl)
	}
	o := Override{Domain: "d", Descriptors: []OverrideEntry{{Key: "k", Value: "v"}}, RateLimit: *rl}
	if err := o.Validate(Bounds{}, time.Now()); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	for _, c := range []struct {
		name  string
		rl    RateLimit
		field string
		msg   string
	}{
		{"usage on a ban", RateLimit{Unit: Hour, Charge: ChargeUsage}, "rate_limit.charge", "usage does not apply to a ban"},
		{"usage on unlimited", RateLimit{Unlimited: true, Charge: ChargeUsage}, "rate_limit.charge", "usage does not apply to an unlimited limit"},
		{"max_debt on admission", RateLimit{RequestsPerUnit: 1, Unit: Hour, MaxDebt: 3}, "rate_limit.max_debt", "applies only to charge: usage"},
		{"max_debt too large", RateLimit{RequestsPerUnit: 1, Unit: Year, Charge: ChargeUsage, MaxDebt: 1 << 40}, "rate_limit", "max_debt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o.RateLimit = c.rl
			err := o.Validate(Bounds{}, time.Now())
			var oe *OverrideError
			if !errors.As(err, &oe) || oe.Field != c.field || !strings.Contains(oe.Msg, c.msg) {
				t.Fatalf("Validate = %v, want %s: ...%s", err, c.field, c.msg)
			}
		})
	}
}

// TestOverrideKeepsUsage: an override that does not state a charging mode
// keeps the stated mode of the limit it overrides, unless it is a ban.
func TestOverrideKeepsUsage(t *testing.T) {
	cfg := []DomainConfig{{Domain: "d", Descriptors: []DescriptorConfig{{Key: "k", RateLimit: &RateLimit{
		RequestsPerUnit: 10, Unit: Hour, Charge: ChargeUsage, ChargeSet: true, MaxDebt: 7}}}}}
	for _, c := range []struct {
		name string
		rl   RateLimit
		want Charge
	}{
		{"rate", RateLimit{RequestsPerUnit: 99, Unit: Hour}, ChargeUsage},
		{"stated admission", RateLimit{RequestsPerUnit: 99, Unit: Hour, ChargeSet: true}, ChargeAdmission},
		{"ban", RateLimit{Unit: Hour}, ChargeAdmission},
	} {
		t.Run(c.name, func(t *testing.T) {
			lims, err := Compile(MergeOverrides(cfg, []Override{{Domain: "d", Descriptors: []OverrideEntry{{Key: "k"}}, RateLimit: c.rl}}), CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			r, _ := lims.Match("d", []Entry{{Key: "k", Value: "x"}}, nil)
			if r == nil || r.Limit.Charge != c.want || r.Limit.RequestsPerUnit != c.rl.RequestsPerUnit {
				t.Fatalf("rule %+v, want charge %v", r, c.want)
			}
		})
	}
}

func TestMarshalUsage(t *testing.T) {
	r := RateLimit{RequestsPerUnit: 10, Unit: Second, UnitMultiplier: 1, Charge: ChargeUsage, MaxDebt: 20}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRateLimitJSON(b)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if !back.Equal(&r) {
		t.Fatalf("%s read back as %+v", b, back)
	}
	b, _ = json.Marshal(RateLimit{RequestsPerUnit: 10, Unit: Second})
	if strings.Contains(string(b), "charge") || strings.Contains(string(b), "max_debt") {
		t.Fatalf("admission limit marshals its mode: %s", b)
	}
}

// TestDecideUsage checks the bucket maths of usage ops directly, where a
// store's contract cannot see: the reset times and the cut of one call.
func TestDecideUsage(t *testing.T) {
	// 1 token per 1000 µs, capacity 10, floor 5 below zero.
	rt := Rate{Num: 1, Den: 1000, Cap: 10, MaxDebt: 5}
	reqs := []BucketRequest{
		{Key: "u", Rate: rt, Cost: 4, Op: OpCharge},
		{Key: "u", Rate: rt, Cost: 0, Op: OpCheck},
		{Key: "a", Rate: Rate{Num: 1, Den: 1000, Cap: 10}, Cost: 1, Op: OpTake},
	}
	slot := []int{0, 0, 2}
	debt := []int64{8000, 0, 0} // u holds 2 tokens, a is full
	res := make([]BucketResult, 3)
	if Decide(reqs, slot, debt, res) {
		t.Fatal("allowed with a usage charge over its balance")
	}
	// Charged: 2 - 4 = -2 tokens. The check saw the balance before the
	// charge (2 tokens): OK. The admission take did not pay.
	if debt[0] != 12000 || debt[2] != 0 {
		t.Fatalf("debts %v", debt)
	}
	if res[0].OK || res[0].Remaining != 0 || res[0].ResetMicros != 6000 || res[0].Cut != 0 {
		t.Fatalf("charge %+v (want reset 6 ms: -2 to 4 tokens)", res[0])
	}
	if !res[1].OK || res[1].ResetMicros != 12000 {
		t.Fatalf("check %+v", res[1])
	}
	// Over the floor: -2 - 10 = -12, floored at -5: 7 cut.
	reqs = reqs[:2]
	reqs[0].Cost, reqs[0].Op, reqs[1].Op = 10, OpShadowCharge, OpShadowCheck
	if !Decide(reqs, slot[:2], debt[:2], res[:2]) {
		t.Fatal("a shadow charge or check denied the call")
	}
	if debt[0] != 15000 || res[0].Cut != 7 || res[1].OK || res[1].ResetMicros != 6000 {
		t.Fatalf("debt %d, results %+v (check reset: -5 to 1 token, 6 ms)", debt[0], res[:2])
	}
}
