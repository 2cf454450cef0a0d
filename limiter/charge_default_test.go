package limiter_test

import (
	"context"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// chargeOf compiles ds with opts and returns the charging mode of the rule
// that the one-entry descriptor (key, "v") of domain matches.
func chargeOf(t *testing.T, lims *limiter.Limits, domain, key string) limiter.Charge {
	t.Helper()
	r, _ := lims.Match(domain, []limiter.Entry{{Key: key, Value: "v"}}, nil)
	if r == nil {
		t.Fatalf("%s/%s: no rule", domain, key)
	}
	return r.Limit.Charge
}

// defaultsTree has one rule of every kind a charging default meets.
func defaultsTree(domain string) limiter.DomainConfig {
	return limiter.DomainConfig{Domain: domain, Descriptors: []limiter.DescriptorConfig{
		{Key: "plain", RateLimit: &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour}},
		{Key: "said_admission", RateLimit: &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour, ChargeSet: true}},
		{Key: "said_usage", RateLimit: &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour, Charge: limiter.ChargeUsage, ChargeSet: true}},
		{Key: "ban", RateLimit: &limiter.RateLimit{Unit: limiter.Hour}},
		{Key: "unlimited", RateLimit: &limiter.RateLimit{Unlimited: true}},
		{Key: "quota", QuotaMode: true, RateLimit: &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour}},
	}}
}

func TestCompileDefaultCharge(t *testing.T) {
	cases := []struct {
		name     string
		opts     limiter.CompileOptions
		a, b     limiter.Charge // of the plain rule in domains a and b
		aVersion bool           // a's version differs from no defaults
	}{
		{"none", limiter.CompileOptions{}, limiter.ChargeAdmission, limiter.ChargeAdmission, false},
		{"global usage", limiter.CompileOptions{DefaultCharge: limiter.ChargeUsage}, limiter.ChargeUsage, limiter.ChargeUsage, true},
		{"domain usage", limiter.CompileOptions{DomainCharge: map[string]limiter.Charge{"a": limiter.ChargeUsage}}, limiter.ChargeUsage, limiter.ChargeAdmission, true},
		{"domain admission beats global usage", limiter.CompileOptions{DefaultCharge: limiter.ChargeUsage, DomainCharge: map[string]limiter.Charge{"a": limiter.ChargeAdmission}},
			limiter.ChargeAdmission, limiter.ChargeUsage, true},
	}
	base, err := limiter.Compile([]limiter.DomainConfig{defaultsTree("a"), defaultsTree("b")}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lims, err := limiter.Compile([]limiter.DomainConfig{defaultsTree("a"), defaultsTree("b")}, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []struct {
				domain string
				want   limiter.Charge
			}{{"a", c.a}, {"b", c.b}} {
				if got := chargeOf(t, lims, d.domain, "plain"); got != d.want {
					t.Errorf("%s: plain rule charges %v, want %v", d.domain, got, d.want)
				}
				// A rule that says its mode keeps it; bans, unlimited
				// and quota-mode rules stay admission.
				for key, want := range map[string]limiter.Charge{"said_admission": limiter.ChargeAdmission, "said_usage": limiter.ChargeUsage,
					"ban": limiter.ChargeAdmission, "unlimited": limiter.ChargeAdmission, "quota": limiter.ChargeAdmission} {
					if got := chargeOf(t, lims, d.domain, key); got != want {
						t.Errorf("%s: rule %s charges %v, want %v", d.domain, key, got, want)
					}
				}
			}
			if changed := lims.Version() != base.Version(); changed != c.aVersion {
				t.Errorf("version changed = %v, want %v (%s vs %s)", changed, c.aVersion, lims.Version(), base.Version())
			}
		})
	}
}

// TestCompileDefaultChargeVersion: under a usage default, a rule that says
// admission and one that says nothing decide differently, so the
// versions differ.
func TestCompileDefaultChargeVersion(t *testing.T) {
	tree := func(set bool) []limiter.DomainConfig {
		return []limiter.DomainConfig{{Domain: "a", Descriptors: []limiter.DescriptorConfig{
			{Key: "k", RateLimit: &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour, ChargeSet: set}}}}}
	}
	opts := limiter.CompileOptions{DefaultCharge: limiter.ChargeUsage}
	said, err := limiter.Compile(tree(true), opts)
	if err != nil {
		t.Fatal(err)
	}
	unsaid, err := limiter.Compile(tree(false), opts)
	if err != nil {
		t.Fatal(err)
	}
	if said.Version() == unsaid.Version() {
		t.Fatalf("explicit admission and defaulted usage share version %s", said.Version())
	}
}

// TestDefaultUsageChargesDenied: a limit that takes the usage default
// charges a denied report, as envoyproxy/ratelimit counts a denied hit.
func TestDefaultUsageChargesDenied(t *testing.T) {
	lims, err := limiter.Compile([]limiter.DomainConfig{{Domain: "a", Descriptors: []limiter.DescriptorConfig{
		{Key: "k", RateLimit: &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour}}}}}, limiter.CompileOptions{DefaultCharge: limiter.ChargeUsage})
	if err != nil {
		t.Fatal(err)
	}
	l := limiter.New(memory.New(nil), limiter.Config{})
	l.SetLimits(lims)
	desc := func(cost uint64) *limiter.Request {
		return &limiter.Request{Domain: "a", Descriptors: []limiter.Descriptor{{Entries: []limiter.Entry{{Key: "k", Value: "v"}}, Cost: cost, HasCost: true}}}
	}
	var resp limiter.Response
	for _, c := range []struct {
		cost uint64
		code limiter.Code
	}{{8, limiter.OK}, {5, limiter.OverLimit}, {0, limiter.OverLimit}} {
		if err := l.Decide(context.Background(), desc(c.cost), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Code != c.code {
			t.Fatalf("cost %d: %v, want %v", c.cost, resp.Code, c.code)
		}
	}
	// 10 - 8 - 5 = -3: a check (cost 0) fails until 4 tokens refill; under
	// admission the denied 5 would have paid nothing and the check pass.
}

// TestLimitFileChargeIsStated: a limit file's charge: admission is a stated
// mode, which a usage default does not change; a limit without one takes it.
func TestLimitFileChargeIsStated(t *testing.T) {
	d, err := limiter.ParseLimitFile("a.yaml", []byte(`domain: a
descriptors:
  - key: said
    rate_limit: {unit: hour, requests_per_unit: 10, charge: admission}
  - key: plain
    rate_limit: {unit: hour, requests_per_unit: 10}
`))
	if err != nil {
		t.Fatal(err)
	}
	lims, err := limiter.Compile([]limiter.DomainConfig{d}, limiter.CompileOptions{DefaultCharge: limiter.ChargeUsage})
	if err != nil {
		t.Fatal(err)
	}
	if got := chargeOf(t, lims, "a", "said"); got != limiter.ChargeAdmission {
		t.Errorf("said: %v, want admission", got)
	}
	if got := chargeOf(t, lims, "a", "plain"); got != limiter.ChargeUsage {
		t.Errorf("plain: %v, want usage", got)
	}
}
