package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/metrics"
	"github.com/sluice-rl/sluice/server/metrics/metricstest"
)

// TestUsageCutTokens: tokens of a usage report that the debt floor cuts
// are counted per rule, under the rule's plain label even for a detailed
// rule, and for a request-side limit under _request_limit.
func TestUsageCutTokens(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	dc, err := limiter.ParseLimitFile("llm.yaml", []byte(`domain: llm
descriptors:
  - key: tenant
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 100, charge: usage, max_debt: 50, name: tokens}
`))
	if err != nil {
		t.Fatal(err)
	}
	lims, err := limiter.Compile([]limiter.DomainConfig{dc}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{})
	lim.SetLimits(lims)
	report := func(tenant string, cost uint64, override *limiter.RateLimit) {
		t.Helper()
		req := &limiter.Request{Domain: "llm", Descriptors: []limiter.Descriptor{{
			Entries: []limiter.Entry{{Key: "tenant", Value: tenant}}, Cost: cost, HasCost: true, Override: override}}}
		var resp limiter.Response
		if err := lim.Decide(context.Background(), req, &resp); err != nil {
			t.Fatal(err)
		}
		m.ObserveDecision(lims, req, &resp, time.Millisecond)
	}
	// 100 in the bucket, 50 of debt allowed: 120 charges in full (-20);
	// 100 more charges 30 and cuts 70; 5 more cuts all 5.
	report("acme", 120, nil)
	report("acme", 100, nil)
	report("acme", 5, nil)
	// A request-side limit takes the usage mode of the rule it replaces:
	// 10 in the bucket, 50 of debt: 100 cuts 40.
	report("acme", 100, &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Hour, MaxDebt: 50})

	f := metricstest.Gather(t, reg)
	if got := f.Value(t, "sluice_usage_cut_tokens_total", "domain=llm", "descriptor=tokens"); got != 75 {
		t.Errorf("cut tokens of rule tokens = %v, want 75; series %v", got, f.Series("sluice_usage_cut_tokens_total"))
	}
	if got := f.Value(t, "sluice_usage_cut_tokens_total", "domain=llm", "descriptor=_request_limit"); got != 40 {
		t.Errorf("cut tokens of the request limit = %v, want 40", got)
	}
	if n := len(f.Series("sluice_usage_cut_tokens_total")); n != 2 {
		t.Errorf("%d cut series, want 2 (no request values): %v", n, f.Series("sluice_usage_cut_tokens_total"))
	}
}

// TestUsageUnrecordedTokens: the usage reports a failure mode could not
// record in Redis are exported by the mode that answered them.
func TestUsageUnrecordedTokens(t *testing.T) {
	ul := limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, Charge: limiter.ChargeUsage}
	rt, err := ul.Rate()
	if err != nil {
		t.Fatal(err)
	}
	reqs := []limiter.BucketRequest{{Key: "u", Rate: rt, Cost: 30, Op: limiter.OpCharge}}
	down := storeFunc(func() (bool, error) { return false, errors.New("redis down") })
	for _, mode := range []limiter.FailureMode{limiter.FailLocal, limiter.FailAllow, limiter.FailError} {
		t.Run(mode.String(), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := metrics.New(reg, metrics.Options{})
			fo, err := limiter.NewFailover(down, limiter.FailoverConfig{Mode: mode, Local: memory.New(nil)})
			if err != nil {
				t.Fatal(err)
			}
			m.WatchFailover(mode, fo.Counts)
			for range 3 {
				_, _ = fo.Apply(context.Background(), reqs, make([]limiter.BucketResult, 1))
			}
			f := metricstest.Gather(t, reg)
			for _, other := range []limiter.FailureMode{limiter.FailLocal, limiter.FailAllow, limiter.FailError} {
				want := 0.0
				if other == mode {
					want = 90
				}
				if got := f.Value(t, "sluice_usage_unrecorded_tokens_total", "mode="+other.String()); got != want {
					t.Errorf("unrecorded{mode=%s} = %v, want %v", other, got, want)
				}
			}
		})
	}
}
