package metrics_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/metrics"
	"github.com/sluice-rl/sluice/server/metrics/metricstest"
)

// envoyKeyCases are limit configs and requests with the stats key
// envoyproxy/ratelimit gives them, without its leading "d." (Sluice has a
// domain label). The keys are those its GetLimit (src/config/config_impl.go)
// builds, asserted by its test/config/config_test.go: TestValueToMetric_*,
// TestDetailedMetric, TestShareThreshold ("share_threshold with metrics")
// and TestWildcardStatsBehavior; cases marked "from GetLimit" have no test
// there and follow the code.
var envoyKeyCases = []struct {
	name    string
	yaml    string // descriptors of domain d
	entries []string
	want    string
}{
	{
		name: "value_to_metric at every level (TestValueToMetric_UsesRuntimeValuesInStats)",
		yaml: `
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit: {unit: minute, requests_per_unit: 60}`,
		entries: []string{"route=draw", "http_method=GET", "subject_id=123"},
		want:    "route_draw.http_method_GET.subject_id",
	},
	{
		name: "value_to_metric on a node without a limit (TestValueToMetric_DefaultKeyIncludesValueAtThatLevel)",
		yaml: `
  - key: k1
    value_to_metric: true
    descriptors:
      - key: k2
        rate_limit: {unit: second, requests_per_unit: 1}`,
		entries: []string{"k1=A", "k2=foo"},
		want:    "k1_A.k2",
	},
	{
		name: "value_to_metric mid-path only (TestValueToMetric_MidLevelOnly)",
		yaml: `
  - key: k1
    descriptors:
      - key: k2
        value_to_metric: true
        descriptors:
          - key: k3
            rate_limit: {unit: second, requests_per_unit: 1}`,
		entries: []string{"k1=X", "k2=Y", "k3=Z"},
		want:    "k1.k2_Y.k3",
	},
	{
		name: "detailed_metric wins over value_to_metric (TestValueToMetric_DoesNotOverrideDetailedMetric)",
		yaml: `
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            detailed_metric: true
            rate_limit: {unit: minute, requests_per_unit: 60}`,
		entries: []string{"route=draw", "http_method=GET", "subject_id=123"},
		want:    "route_draw.http_method_GET.subject_id_123",
	},
	{
		name: "configured value (TestValueToMetric_WithConfiguredValues)",
		yaml: `
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value: POST
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit: {unit: minute, requests_per_unit: 30}`,
		entries: []string{"route=api", "http_method=POST", "subject_id=user456"},
		want:    "route_api.http_method_POST.subject_id",
	},
	{
		name: "value_to_metric on a wildcard (TestValueToMetric_WithWildcard)",
		yaml: `
  - key: user
    value_to_metric: true
    descriptors:
      - key: action
        value: read*
        value_to_metric: true
        descriptors:
          - key: resource
            rate_limit: {unit: minute, requests_per_unit: 100}`,
		entries: []string{"user=alice", "action=readfile", "resource=documents"},
		want:    "user_alice.action_readfile.resource",
	},
	{
		name: "empty value with value_to_metric (TestValueToMetric_WithEmptyValue)",
		yaml: `
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit: {unit: minute, requests_per_unit: 60}`,
		entries: []string{"route=", "http_method=GET", "subject_id=123"},
		want:    "route.http_method_GET.subject_id",
	},
	{
		name: "wildcard pattern kept beside value_to_metric elsewhere (TestWildcardStatsBehavior)",
		yaml: `
  - key: wild
    value: foo*
    descriptors:
      - key: other
        value_to_metric: true
        descriptors:
          - key: limit
            rate_limit: {unit: minute, requests_per_unit: 20}`,
		entries: []string{"wild=foo1", "other=bar", "limit=X"},
		want:    "wild_foo*.other_bar.limit",
	},
	{
		name: "middle wildcard with value_to_metric (TestWildcardStatsBehavior)",
		yaml: `
  - key: wild
    value: foo*bar*
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 20}`,
		entries: []string{"wild=foo123bar456"},
		want:    "wild_foo123bar456",
	},
	{
		name: "share_threshold wins over value_to_metric (TestShareThreshold)",
		yaml: `
  - key: route
    value: api/*
    share_threshold: true
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: {unit: minute, requests_per_unit: 60}`,
		entries: []string{"route=api/v1", "method=GET"},
		want:    "route_api/*.method",
	},
	{
		name: "share_threshold with detailed_metric writes the pattern (TestShareThreshold)",
		yaml: `
  - key: service
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 80}`,
		entries: []string{"service=svc/user", "endpoint=get"},
		want:    "service_svc/*.endpoint_get",
	},
	{
		name: "detailed_metric on a shared wildcard (from GetLimit)",
		yaml: `
  - key: files
    value: files/*
    share_threshold: true
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 100}`,
		entries: []string{"files=files/a.pdf"},
		want:    "files_files/*",
	},
	{
		name: "detailed_metric, shared level and an empty value (from GetLimit)",
		yaml: `
  - key: service
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 80}`,
		entries: []string{"service=svc/user", "endpoint="},
		want:    "service_svc/*.endpoint",
	},
	{
		name: "detailed_metric and an empty value (from GetLimit)",
		yaml: `
  - key: tenant
    descriptors:
      - key: plan
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 80}`,
		entries: []string{"tenant=", "plan=free"},
		want:    "tenant_.plan_free",
	},
	{
		name: "detailed_metric on a node with children, one entry (TestDetailedMetric)",
		yaml: `
  - key: key-1
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 100}
    descriptors:
      - key: key-2
        rate_limit: {unit: minute, requests_per_unit: 5}`,
		entries: []string{"key-1=value-1"},
		want:    "key-1_value-1",
	},
	{
		name: "detailed_metric under a key-only node (TestDetailedMetric)",
		yaml: `
  - key: key_2
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 5000}
    descriptors:
      - key: key_3
        value: requested-key3-value
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 5}`,
		entries: []string{"key_2=key-2-value", "key_3=requested-key3-value"},
		want:    "key_2_key-2-value.key_3_requested-key3-value",
	},
}

func descriptorOf(kvs []string) limiter.Descriptor {
	var d limiter.Descriptor
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		d.Entries = append(d.Entries, limiter.Entry{Key: k, Value: v})
	}
	return d
}

func newDomainLimiter(t testing.TB, m *metrics.Metrics, descriptors string) *limiter.Limiter {
	t.Helper()
	dc, err := limiter.ParseLimitFile("d.yaml", []byte("domain: d\ndescriptors:"+descriptors+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	lims, err := limiter.Compile([]limiter.DomainConfig{dc}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{})
	lim.SetLimits(lims)
	return lim
}

// TestDescriptorLabelIsEnvoyStatsKey: a rule with detailed_metric or
// value_to_metric is labelled as envoyproxy/ratelimit names its stats.
func TestDescriptorLabelIsEnvoyStatsKey(t *testing.T) {
	for _, c := range envoyKeyCases {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := metrics.New(reg, metrics.Options{})
			lim := newDomainLimiter(t, m, c.yaml)
			req := &limiter.Request{Domain: "d", Descriptors: []limiter.Descriptor{descriptorOf(c.entries)}}
			decide(t, m, lim, req)
			f := metricstest.Gather(t, reg)
			if got := f.Sum(t, "sluice_decisions_total", "domain=d", "descriptor="+c.want); got != 1 {
				t.Errorf("decisions labelled %q: %v, want 1; series %v", c.want, got, f.Series("sluice_decisions_total"))
			}
		})
	}
}

// TestSharedDetailedSeriesOutsideCap: a detailed rule whose key takes no
// request value (every level shared or configured) has one series whatever
// the values, and leaves the cap on series with values to other rules.
func TestSharedDetailedSeriesOutsideCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{MaxDetailedSeries: 1})
	lim := newDomainLimiter(t, m, `
  - key: files
    value: files/*
    share_threshold: true
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: tenant
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1000}`)
	for i := range 5 {
		decide(t, m, lim, &limiter.Request{Domain: "d", Descriptors: []limiter.Descriptor{
			descriptorOf([]string{"files=files/" + strconv.Itoa(i)}),
			descriptorOf([]string{"tenant=acme"}),
		}})
	}
	f := metricstest.Gather(t, reg)
	for _, c := range []struct {
		label string
		want  float64
	}{{"files_files/*", 5}, {"tenant_acme", 5}} {
		if got := f.Sum(t, "sluice_decisions_total", "domain=d", "descriptor="+c.label); got != c.want {
			t.Errorf("%s: %v decisions, want %v; series %v", c.label, got, c.want, f.Series("sluice_decisions_total"))
		}
	}
}

// TestLongUpperLevelValueCut: values taken at any level count towards the
// 200-byte bound of a label.
func TestLongUpperLevelValueCut(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	lim := newDomainLimiter(t, m, `
  - key: route
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: {unit: minute, requests_per_unit: 1000}`)
	long := strings.Repeat("é", 300)
	decide(t, m, lim, &limiter.Request{Domain: "d", Descriptors: []limiter.Descriptor{descriptorOf([]string{"route=" + long, "method=GET"})}})
	found := false
	for _, s := range metricstest.Gather(t, reg).Series("sluice_decisions_total") {
		if !strings.Contains(s, "route_é") {
			continue
		}
		found = true
		if len(s) > 300 {
			t.Errorf("label too long: %d bytes", len(s))
		}
	}
	if !found {
		t.Errorf("no series with the route's value: %v", metricstest.Gather(t, reg).Series("sluice_decisions_total"))
	}
}

// TestObserveDetailedDecisionAllocs: a value already labelled costs no
// allocation, whatever level takes it.
func TestObserveDetailedDecisionAllocs(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	lim := newDomainLimiter(t, m, envoyKeyCases[0].yaml)
	req := &limiter.Request{Domain: "d", Descriptors: []limiter.Descriptor{descriptorOf(envoyKeyCases[0].entries)}}
	var resp limiter.Response
	if err := lim.Decide(context.Background(), req, &resp); err != nil {
		t.Fatal(err)
	}
	lims := lim.Limits()
	m.ObserveDecision(lims, req, &resp, time.Microsecond)
	if n := testing.AllocsPerRun(100, func() { m.ObserveDecision(lims, req, &resp, time.Microsecond) }); n != 0 {
		t.Errorf("%v allocations per decision, want 0", n)
	}
}
