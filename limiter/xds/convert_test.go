package xds_test

import (
	"reflect"
	"strings"
	"testing"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/xds"
	"github.com/sluice-rl/sluice/limiter/xds/xdstest"
)

// TestConvertEnvoyGatewayShape: a resource as Envoy Gateway builds it
// (route level, nested matches, masked_remote_address, MONTH and YEAR,
// shadow mode, names, replaces, unlimited, detailed_metric, and
// quota_mode and metadata in the fields newer than the proto module)
// becomes the domain a limit file with the same content gives.
func TestConvertEnvoyGatewayShape(t *testing.T) {
	shadow := xdstest.Match("rule-1-match-0", 10, rlsconfv3.RateLimitUnit_MINUTE)
	shadow.ShadowMode = true
	named := xdstest.Match("rule-2-match-0", 3, rlsconfv3.RateLimitUnit_HOUR)
	named.RateLimit.Name = "small"
	named.RateLimit.Replaces = []*rlsconfv3.RateLimitReplace{{Name: "big"}}
	named.DetailedMetric = true
	big := xdstest.Match("rule-3-match-0", 100, rlsconfv3.RateLimitUnit_DAY)
	big.RateLimit.Name = "big"
	unl := &rlsconfv3.RateLimitDescriptor{Key: "internal", RateLimit: &rlsconfv3.RateLimitPolicy{Unlimited: true}}
	quota := xdstest.WithQuotaMode(t, xdstest.Match("rule-4-match-0", 7, rlsconfv3.RateLimitUnit_SECOND), true,
		map[string]any{"backend": "b1", "weight": 2.0})
	rc := xdstest.Config("default/eg/http",
		xdstest.Route("httproute/default/r1/rule/0",
			xdstest.Match("rule-0-match-0", 0, 0, xdstest.MaskedRemoteAddress("192.168.0.0/16", 5, rlsconfv3.RateLimitUnit_SECOND)),
			xdstest.Match("rule-0-method", 5, xdstest.Month),
			xdstest.Match("rule-0-year", 1, xdstest.Year),
			shadow, named, big, unl, quota))

	got, err := xds.Convert(rc)
	if err != nil {
		t.Fatal(err)
	}
	file := `domain: default/eg/http
descriptors:
  - key: httproute/default/r1/rule/0
    value: httproute/default/r1/rule/0
    descriptors:
      - key: rule-0-match-0
        value: rule-0-match-0
        descriptors:
          - key: masked_remote_address
            value: 192.168.0.0/16
            rate_limit: {unit: second, requests_per_unit: 5}
      - {key: rule-0-method, value: rule-0-method, rate_limit: {unit: month, requests_per_unit: 5}}
      - {key: rule-0-year, value: rule-0-year, rate_limit: {unit: year, requests_per_unit: 1}}
      - {key: rule-1-match-0, value: rule-1-match-0, shadow_mode: true, rate_limit: {unit: minute, requests_per_unit: 10}}
      - key: rule-2-match-0
        value: rule-2-match-0
        detailed_metric: true
        rate_limit: {unit: hour, requests_per_unit: 3, name: small, replaces: [{name: big}]}
      - {key: rule-3-match-0, value: rule-3-match-0, rate_limit: {unit: day, requests_per_unit: 100, name: big}}
      - {key: internal, rate_limit: {unlimited: true}}
      - {key: rule-4-match-0, value: rule-4-match-0, rate_limit: {unit: second, requests_per_unit: 7}}
`
	want, err := limiter.ParseLimitFile("xds:default/eg/http", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	clearLines(want.Descriptors)
	want.Line = 0
	q := &want.Descriptors[0].Descriptors[7]
	q.QuotaMode, q.Metadata = true, map[string]any{"backend": "b1", "weight": 2.0}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Convert:\n got %+v\nwant %+v", got, want)
	}
	if got.File != "xds:default/eg/http" {
		t.Errorf("File = %q", got.File)
	}
	if _, err := limiter.Compile([]limiter.DomainConfig{got}, limiter.CompileOptions{}); err != nil {
		t.Errorf("Compile: %v", err)
	}
}

func clearLines(ds []limiter.DescriptorConfig) {
	for i := range ds {
		ds[i].Line = 0
		clearLines(ds[i].Descriptors)
	}
}

// TestConvertRefuses: what a limit file may not hold, a resource may not
// either; the error names the resource and the field, without the
// generated text's line numbers.
func TestConvertRefuses(t *testing.T) {
	lim := func(rpu uint32, u rlsconfv3.RateLimitUnit) *rlsconfv3.RateLimitPolicy {
		return &rlsconfv3.RateLimitPolicy{RequestsPerUnit: rpu, Unit: u}
	}
	cases := []struct {
		name string
		rc   *rlsconfv3.RateLimitConfig
		want string
	}{
		{"no key", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Value: "v", RateLimit: lim(1, rlsconfv3.RateLimitUnit_SECOND)}}},
			"xds:r: descriptors[0].key: must not be empty"},
		{"no domain", &rlsconfv3.RateLimitConfig{Name: "r"}, "xds:r: domain: must not be empty"},
		{"no unit", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: lim(1, rlsconfv3.RateLimitUnit_UNKNOWN)}}},
			"xds:r: descriptors[0].rate_limit: needs a unit"},
		{"unknown unit", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: lim(1, 42)}}},
			`xds:r: descriptors[0].rate_limit.unit: unknown unit "unit_42"`},
		{"duplicate", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Key: "k", Value: "v", RateLimit: lim(1, rlsconfv3.RateLimitUnit_SECOND)},
			{Key: "k", Value: "v", RateLimit: lim(2, rlsconfv3.RateLimitUnit_SECOND)}}},
			`xds:r: descriptors[1]: duplicate descriptor: key "k" value "v" is already given at this level`},
		{"name twice", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Key: "a", RateLimit: &rlsconfv3.RateLimitPolicy{RequestsPerUnit: 1, Unit: rlsconfv3.RateLimitUnit_SECOND, Name: "n"}},
			{Key: "b", RateLimit: &rlsconfv3.RateLimitPolicy{RequestsPerUnit: 1, Unit: rlsconfv3.RateLimitUnit_SECOND, Name: "n"}}}},
			`xds:r: descriptors[1].rate_limit.name: limit name "n" is already used; names must be unique`},
		{"unlimited with unit", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: &rlsconfv3.RateLimitPolicy{Unlimited: true, Unit: rlsconfv3.RateLimitUnit_SECOND}}}},
			"xds:r: descriptors[0].rate_limit.unit: not allowed with unlimited: true"},
		{"replaces nothing", &rlsconfv3.RateLimitConfig{Name: "r", Domain: "d", Descriptors: []*rlsconfv3.RateLimitDescriptor{
			{Key: "k", RateLimit: &rlsconfv3.RateLimitPolicy{RequestsPerUnit: 1, Unit: rlsconfv3.RateLimitUnit_SECOND,
				Replaces: []*rlsconfv3.RateLimitReplace{{Name: "ghost"}}}}}},
			`xds:r: descriptors[0].rate_limit.replaces[0].name: no limit in domain "d" is named "ghost"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := xds.Convert(tc.rc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
