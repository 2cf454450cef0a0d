//go:build integration

package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// TestOverrideUsageCharge: an override stored with charge: usage and a
// max_debt reads back as such, and the limits it merges into charge a
// denied report in full, where the configured admission limit would not.
func TestOverrideUsageCharge(t *testing.T) {
	db, _ := migratedDB(t)
	ctx := context.Background()
	hourly := func(value string) limiter.Override {
		o := newOverride(value, 10)
		o.RateLimit = limiter.RateLimit{Unit: limiter.Hour, RequestsPerUnit: 10}
		return o
	}
	usage := hourly("acme")
	usage.RateLimit.Charge, usage.RateLimit.ChargeSet, usage.RateLimit.MaxDebt = limiter.ChargeUsage, true, 50
	said := hourly("globex")
	said.RateLimit.ChargeSet = true // admission, stated
	for _, o := range []limiter.Override{usage, said, hourly("initech")} {
		if _, _, err := db.PutOverride(ctx, o, "test"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.ListOverrides(ctx)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]limiter.RateLimit{}
	for _, o := range got {
		by[o.Descriptors[0].Value] = o.RateLimit
	}
	for v, want := range map[string]struct {
		charge  limiter.Charge
		set     bool
		maxDebt uint64
	}{"acme": {limiter.ChargeUsage, true, 50}, "globex": {limiter.ChargeAdmission, true, 0}, "initech": {limiter.ChargeAdmission, false, 0}} {
		if r := by[v]; r.Charge != want.charge || r.ChargeSet != want.set || r.MaxDebt != want.maxDebt {
			t.Errorf("%s read back as charge %v (stated %v) max_debt %d, want %+v", v, r.Charge, r.ChargeSet, r.MaxDebt, want)
		}
	}

	domain := newOverride("", 0).Domain
	key := newOverride("", 0).Descriptors[0].Key
	cfg := []limiter.DomainConfig{{Domain: domain, Descriptors: []limiter.DescriptorConfig{
		{Key: key, RateLimit: &limiter.RateLimit{RequestsPerUnit: 1000, Unit: limiter.Hour}}}}}
	lims, err := limiter.Compile(limiter.MergeOverrides(cfg, got), limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{})
	lim.SetLimits(lims)
	decide := func(value string, cost uint64) limiter.Code {
		t.Helper()
		var resp limiter.Response
		err := lim.Decide(ctx, &limiter.Request{Domain: domain, Descriptors: []limiter.Descriptor{{
			Entries: []limiter.Entry{{Key: key, Value: value}}, Cost: cost, HasCost: true}}}, &resp)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Code
	}
	// 10 an hour: 8 passes, 5 is denied. Under usage the 5 is charged
	// (balance -3) and a check fails; under admission it pays nothing.
	for _, c := range []struct {
		value string
		check limiter.Code
	}{{"acme", limiter.OverLimit}, {"initech", limiter.OK}} {
		if got := decide(c.value, 8); got != limiter.OK {
			t.Fatalf("%s: 8 of 10: %v", c.value, got)
		}
		if got := decide(c.value, 5); got != limiter.OverLimit {
			t.Fatalf("%s: 5 of 2: %v", c.value, got)
		}
		if got := decide(c.value, 0); got != c.check {
			t.Errorf("%s: check after a denied report: %v, want %v", c.value, got, c.check)
		}
	}

	// The schema refuses what validation refuses.
	_, err = db.Pool().Exec(ctx, `UPDATE sluice_overrides SET requests_per_unit = 0, burst = NULL WHERE charge = 'usage'`)
	if err == nil || !strings.Contains(err.Error(), "sluice_overrides_usage_has_bucket") {
		t.Errorf("a usage ban stored: %v", err)
	}
	_, err = db.Pool().Exec(ctx, `UPDATE sluice_overrides SET max_debt = 5 WHERE charge = 'admission'`)
	if err == nil || !strings.Contains(err.Error(), "sluice_overrides_max_debt_usage") {
		t.Errorf("max_debt on admission stored: %v", err)
	}
}
