package server

import (
	"errors"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
)

const fuzzLimits = `domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10, burst: 20, name: per_ip}
  - key: path
    value: /login
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: tenant
    value: "acme*"
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 1000}
    descriptors:
      - key: plan
        value: free
        rate_limit: {unit: hour, requests_per_unit: 100, replaces: [{name: per_ip}]}
`

// FuzzParseOverride checks the admin API's override parser: it never
// panics, a refusal is an OverrideError naming a field, and whatever it
// accepts merges into a tree that still compiles (MergeOverrides promises
// that for overrides that pass Validate, which parseOverride runs).
func FuzzParseOverride(f *testing.F) {
	d, err := limiter.ParseLimitFile("limits.yaml", []byte(fuzzLimits))
	if err != nil {
		f.Fatal(err)
	}
	domains := []limiter.DomainConfig{d}
	for _, s := range []string{
		`{"domain":"edge","descriptors":[{"key":"remote_address","value":"10.0.0.7"}],"rate_limit":{"unit":"second","requests_per_unit":50,"burst":100},"reason":"load test","expires_at":"2099-12-01T00:00:00Z"}`,
		`{"domain":"edge","descriptors":[{"key":"tenant","value":"acme-1"},{"key":"plan","value":"free"}],"rate_limit":{"unlimited":true}}`,
		`{"domain":"edge","descriptors":[{"key":"tenant","value":"acme*"}],"rate_limit":{"unit":"day","unit_multiplier":3,"requests_per_unit":0}}`,
		`{"domain":"new","descriptors":[{"key":"k"}],"rate_limit":{"unit":"year","requests_per_unit":1,"name":"n","replaces":[{"name":"m"}]}}`,
		`{"domain":"edge","descriptors":[{"key":"path","value":"/login"}],"rate_limit":{"unit":"fortnight","requests_per_unit":5}}`,
		`{"domain":"edge","descriptors":[],"rate_limit":null}`,
		`[]`, `{}`, `{"domain":7}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := parseOverride(body, limiter.DefaultBounds, now)
		if err != nil {
			var oe *limiter.OverrideError
			if !errors.As(err, &oe) || oe.Field == "" || oe.Msg == "" {
				t.Fatalf("refusal without a field: %#v (%v)", err, err)
			}
			return
		}
		merged := limiter.MergeOverrides(domains, []limiter.Override{o})
		if _, err := limiter.Compile(merged, limiter.CompileOptions{}); err != nil {
			t.Fatalf("accepted %s but the merged tree does not compile: %v", body, err)
		}
	})
}
