package limiter_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter"
)

func rl(rpu uint32, unit limiter.Unit) *limiter.RateLimit {
	return &limiter.RateLimit{RequestsPerUnit: rpu, Unit: unit}
}

// mergeConfig is a domain like DESIGN's example: a per-IP any-value rule, an
// exact path, a wildcard tenant with a nested plan, and a shared wildcard.
func mergeConfig() []limiter.DomainConfig {
	return []limiter.DomainConfig{{
		Domain: "edge", File: "edge.yaml", Line: 1,
		Descriptors: []limiter.DescriptorConfig{
			{Key: "remote_address", RateLimit: rl(10, limiter.Second)},
			{Key: "path", Value: "/login", RateLimit: &limiter.RateLimit{Name: "login", RequestsPerUnit: 5, Unit: limiter.Minute}, ShadowMode: true},
			{Key: "tenant", Value: "acme*", RateLimit: rl(1000, limiter.Hour), Descriptors: []limiter.DescriptorConfig{
				{Key: "plan", Value: "free", RateLimit: rl(100, limiter.Hour)},
				{Key: "plan", RateLimit: rl(500, limiter.Hour)},
			}},
			{Key: "tenant", RateLimit: rl(7, limiter.Second)},
			{Key: "bot", Value: "crawler*", ShareThreshold: true, RateLimit: rl(3, limiter.Second)},
		},
	}}
}

func ov(domain string, limit limiter.RateLimit, path ...string) limiter.Override {
	o := limiter.Override{Domain: domain, RateLimit: limit}
	for i := 0; i+1 < len(path); i += 2 {
		o.Descriptors = append(o.Descriptors, limiter.OverrideEntry{Key: path[i], Value: path[i+1]})
	}
	return o
}

// entries turns "k", "v", ... into request entries.
func entries(kv ...string) []limiter.Entry {
	var out []limiter.Entry
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, limiter.Entry{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestMergeOverrides(t *testing.T) {
	type probe struct {
		domain  string
		entries []limiter.Entry
		rpu     int64 // -1: no limit
		name    string
		shared  bool // the last key part is a shared bucket
	}
	tests := []struct {
		name      string
		overrides []limiter.Override
		probes    []probe
	}{
		{
			name:      "existing node: limit replaced, name and shadow mode kept",
			overrides: []limiter.Override{ov("edge", *rl(50, limiter.Minute), "path", "/login")},
			probes: []probe{
				{domain: "edge", entries: entries("path", "/login"), rpu: 50, name: "login"},
				{domain: "edge", entries: entries("remote_address", "1.2.3.4"), rpu: 10},
			},
		},
		{
			name:      "any-value node of a key: replaced for every value",
			overrides: []limiter.Override{ov("edge", *rl(20, limiter.Second), "remote_address", "")},
			probes: []probe{
				{domain: "edge", entries: entries("remote_address", "1.2.3.4"), rpu: 20},
			},
		},
		{
			name:      "new exact value beside the any-value node wins for that value only",
			overrides: []limiter.Override{ov("edge", *rl(50, limiter.Second), "remote_address", "10.0.0.7")},
			probes: []probe{
				{domain: "edge", entries: entries("remote_address", "10.0.0.7"), rpu: 50},
				{domain: "edge", entries: entries("remote_address", "10.0.0.8"), rpu: 10},
			},
		},
		{
			name:      "new exact value beside a wildcard wins, and keeps the wildcard's children",
			overrides: []limiter.Override{ov("edge", *rl(2000, limiter.Hour), "tenant", "acme-premium")},
			probes: []probe{
				{domain: "edge", entries: entries("tenant", "acme-premium"), rpu: 2000},
				{domain: "edge", entries: entries("tenant", "acme-other"), rpu: 1000},
				{domain: "edge", entries: entries("tenant", "acme-premium", "plan", "free"), rpu: 100},
				{domain: "edge", entries: entries("tenant", "acme-premium", "plan", "gold"), rpu: 500},
				{domain: "edge", entries: entries("tenant", "other"), rpu: 7},
			},
		},
		{
			name: "deeper override under a new exact value",
			overrides: []limiter.Override{
				ov("edge", *rl(5, limiter.Hour), "tenant", "acme-1", "plan", "free"),
			},
			probes: []probe{
				{domain: "edge", entries: entries("tenant", "acme-1", "plan", "free"), rpu: 5},
				{domain: "edge", entries: entries("tenant", "acme-1", "plan", "pro"), rpu: 500},
				{domain: "edge", entries: entries("tenant", "acme-1"), rpu: 1000},
				{domain: "edge", entries: entries("tenant", "acme-2", "plan", "free"), rpu: 100},
			},
		},
		{
			name: "a copy carries the overrides of the node it copies, whatever the order",
			overrides: []limiter.Override{
				ov("edge", *rl(9, limiter.Hour), "tenant", "acme-1", "plan", "pro"),
				ov("edge", *rl(42, limiter.Hour), "tenant", "acme*", "plan", "free"),
				ov("edge", *rl(43, limiter.Hour), "tenant", "acme*"),
			},
			probes: []probe{
				{domain: "edge", entries: entries("tenant", "acme-1", "plan", "pro"), rpu: 9},
				{domain: "edge", entries: entries("tenant", "acme-1", "plan", "free"), rpu: 42},
				{domain: "edge", entries: entries("tenant", "acme-1"), rpu: 43},
				{domain: "edge", entries: entries("tenant", "acme-2", "plan", "free"), rpu: 42},
			},
		},
		{
			name:      "new wildcard beside the any-value node",
			overrides: []limiter.Override{ov("edge", *rl(1, limiter.Second), "remote_address", "192.168.*")},
			probes: []probe{
				{domain: "edge", entries: entries("remote_address", "192.168.0.1"), rpu: 1},
				{domain: "edge", entries: entries("remote_address", "10.0.0.1"), rpu: 10},
			},
		},
		{
			name:      "exact value beside a shared wildcard gets its own bucket",
			overrides: []limiter.Override{ov("edge", *rl(30, limiter.Second), "bot", "crawler-good")},
			probes: []probe{
				{domain: "edge", entries: entries("bot", "crawler-good"), rpu: 30},
				{domain: "edge", entries: entries("bot", "crawler-bad"), rpu: 3, shared: true},
			},
		},
		{
			name: "ban and unlimited",
			overrides: []limiter.Override{
				ov("edge", limiter.RateLimit{Unit: limiter.Second}, "remote_address", "6.6.6.6"),
				ov("edge", limiter.RateLimit{Unlimited: true}, "remote_address", "127.0.0.1"),
			},
			probes: []probe{
				{domain: "edge", entries: entries("remote_address", "6.6.6.6"), rpu: 0},
				{domain: "edge", entries: entries("remote_address", "127.0.0.1"), rpu: 0},
			},
		},
		{
			name:      "unknown key at a level adds it",
			overrides: []limiter.Override{ov("edge", *rl(4, limiter.Second), "user", "bob")},
			probes: []probe{
				{domain: "edge", entries: entries("user", "bob"), rpu: 4},
				{domain: "edge", entries: entries("user", "alice"), rpu: -1},
			},
		},
		{
			name: "unknown domain is added",
			overrides: []limiter.Override{
				ov("internal", *rl(100, limiter.Minute), "service", "billing"),
				ov("internal", *rl(10, limiter.Minute), "service", ""),
			},
			probes: []probe{
				{domain: "internal", entries: entries("service", "billing"), rpu: 100},
				{domain: "internal", entries: entries("service", "search"), rpu: 10},
				{domain: "edge", entries: entries("remote_address", "1.1.1.1"), rpu: 10},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mergeConfig()
			before := mergeConfig()
			merged := limiter.MergeOverrides(cfg, tt.overrides)
			if !reflect.DeepEqual(cfg, before) {
				t.Fatal("MergeOverrides modified its input")
			}
			lims, err := limiter.Compile(merged, limiter.CompileOptions{})
			if err != nil {
				t.Fatalf("Compile(merged): %v", err)
			}
			for _, p := range tt.probes {
				rule, parts := lims.Match(p.domain, p.entries, nil)
				if p.rpu < 0 {
					if rule != nil {
						t.Errorf("%s %v: got limit %+v, want none", p.domain, p.entries, rule.Limit)
					}
					continue
				}
				if rule == nil {
					t.Errorf("%s %v: no limit, want %d", p.domain, p.entries, p.rpu)
					continue
				}
				if int64(rule.Limit.RequestsPerUnit) != p.rpu {
					t.Errorf("%s %v: requests_per_unit %d, want %d", p.domain, p.entries, rule.Limit.RequestsPerUnit, p.rpu)
				}
				if p.name != "" && rule.Limit.Name != p.name {
					t.Errorf("%s %v: name %q, want %q", p.domain, p.entries, rule.Limit.Name, p.name)
				}
				if got := parts[len(parts)-1].Shared; got != p.shared {
					t.Errorf("%s %v: shared bucket %v, want %v", p.domain, p.entries, got, p.shared)
				}
			}
			// The result does not depend on the overrides' order.
			for i := 0; i < 5; i++ {
				shuffled := append([]limiter.Override(nil), tt.overrides...)
				rand.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
				l2, err := limiter.Compile(limiter.MergeOverrides(mergeConfig(), shuffled), limiter.CompileOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if l2.Version() != lims.Version() {
					t.Fatalf("order %v gives a different tree", shuffled)
				}
			}
		})
	}
}

func TestMergeOverridesKeepsShadowMode(t *testing.T) {
	merged := limiter.MergeOverrides(mergeConfig(), []limiter.Override{ov("edge", *rl(50, limiter.Minute), "path", "/login")})
	lims, err := limiter.Compile(merged, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rule, _ := lims.Match("edge", entries("path", "/login"), nil)
	if rule == nil || !rule.Shadow {
		t.Fatalf("rule %+v: want shadow mode kept", rule)
	}
}

func TestMergeOverridesNone(t *testing.T) {
	cfg := mergeConfig()
	if got := limiter.MergeOverrides(cfg, nil); !reflect.DeepEqual(got, cfg) {
		t.Fatal("no overrides changed the config")
	}
}

func TestParseRateLimitJSON(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		want      *limiter.RateLimit
		wantField string
		wantMsg   string
	}{
		{name: "rate and burst", body: `{"unit":"second","requests_per_unit":50,"burst":100}`,
			want: &limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 50, Burst: 100}},
		{name: "multiplier and name", body: "{\"unit\":\t\"Minute\", \"unit_multiplier\": 5, \"requests_per_unit\": 1, \"name\": \"slow\"}",
			want: &limiter.RateLimit{Unit: limiter.Minute, UnitMultiplier: 5, RequestsPerUnit: 1, Name: "slow"}},
		{name: "ban", body: `{"unit":"hour","requests_per_unit":0}`,
			want: &limiter.RateLimit{Unit: limiter.Hour}},
		{name: "unlimited", body: `{"unlimited":true}`, want: &limiter.RateLimit{Unlimited: true}},
		{name: "replaces", body: `{"unit":"second","requests_per_unit":1,"replaces":[{"name":"x"}]}`,
			want: &limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 1, Replaces: []string{"x"}}},
		{name: "unknown unit", body: `{"unit":"fortnight","requests_per_unit":1}`, wantField: "rate_limit.unit", wantMsg: "unknown unit"},
		{name: "negative", body: `{"unit":"second","requests_per_unit":-1}`, wantField: "rate_limit.requests_per_unit", wantMsg: "negative"},
		{name: "fraction", body: `{"unit":"second","requests_per_unit":1.5}`, wantField: "rate_limit.requests_per_unit", wantMsg: "whole number"},
		{name: "too large", body: `{"unit":"second","requests_per_unit":5000000000}`, wantField: "rate_limit.requests_per_unit", wantMsg: "too large"},
		{name: "unknown field", body: `{"unit":"second","requests_per_unit":1,"brust":2}`, wantField: "rate_limit.brust", wantMsg: "did you mean burst?"},
		{name: "unlimited with unit", body: `{"unlimited":true,"unit":"second"}`, wantField: "rate_limit.unit", wantMsg: "not allowed with unlimited"},
		{name: "burst on ban", body: `{"unit":"second","requests_per_unit":0,"burst":3}`, wantField: "rate_limit.burst", wantMsg: "ban"},
		{name: "missing unit", body: `{"requests_per_unit":3}`, wantField: "rate_limit", wantMsg: "needs a unit"},
		{name: "empty object", body: `{}`, wantField: "rate_limit", wantMsg: "needs a unit"},
		{name: "not an object", body: `"fast"`, wantField: "rate_limit", wantMsg: "must be an object"},
		{name: "unit not a string", body: `{"unit":1,"requests_per_unit":1}`, wantField: "rate_limit.unit", wantMsg: "must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := limiter.ParseRateLimitJSON([]byte(tt.body))
			if tt.want != nil {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
				// And back: the same text form reads to the same limit.
				out, err := json.Marshal(got)
				if err != nil {
					t.Fatal(err)
				}
				again, err := limiter.ParseRateLimitJSON(out)
				if err != nil || !reflect.DeepEqual(again, got) {
					t.Fatalf("round trip through %s: %+v, %v", out, again, err)
				}
				return
			}
			var oe *limiter.OverrideError
			if !errors.As(err, &oe) {
				t.Fatalf("error %v (%T), want an *OverrideError", err, err)
			}
			if oe.Field != tt.wantField || !strings.Contains(oe.Msg, tt.wantMsg) {
				t.Fatalf("error field %q msg %q, want field %q msg containing %q", oe.Field, oe.Msg, tt.wantField, tt.wantMsg)
			}
		})
	}
}

func TestOverrideJSON(t *testing.T) {
	body := `{"domain":"edge","descriptors":[{"key":"remote_address","value":"10.0.0.7"}],"rate_limit":{"unit":"second","requests_per_unit":50,"burst":100},"reason":"partner load test","expires_at":"2026-12-01T00:00:00Z"}`
	var o limiter.Override
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		t.Fatal(err)
	}
	want := limiter.Override{
		Domain:      "edge",
		Descriptors: []limiter.OverrideEntry{{Key: "remote_address", Value: "10.0.0.7"}},
		RateLimit:   limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 50, Burst: 100},
		Reason:      "partner load test",
		ExpiresAt:   time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got %+v\nwant %+v", o, want)
	}
	out, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != body {
		t.Fatalf("marshal:\n got %s\nwant %s", out, body)
	}
}

func TestOverrideValidate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := func() limiter.Override {
		return ov("edge", *rl(5, limiter.Second), "remote_address", "10.0.0.7")
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name      string
		mutate    func(o *limiter.Override)
		wantField string
	}{
		{name: "good"},
		{name: "good ban", mutate: func(o *limiter.Override) { o.RateLimit = limiter.RateLimit{Unit: limiter.Hour} }},
		{name: "good unlimited", mutate: func(o *limiter.Override) { o.RateLimit = limiter.RateLimit{Unlimited: true} }},
		{name: "good future expiry", mutate: func(o *limiter.Override) { o.ExpiresAt = now.Add(time.Second) }},
		{name: "domain missing", mutate: func(o *limiter.Override) { o.Domain = "" }, wantField: "domain"},
		{name: "domain too long", mutate: func(o *limiter.Override) { o.Domain = long(1025) }, wantField: "domain"},
		{name: "no descriptors", mutate: func(o *limiter.Override) { o.Descriptors = nil }, wantField: "descriptors"},
		{name: "path too long", mutate: func(o *limiter.Override) {
			for len(o.Descriptors) <= limiter.DefaultBounds.MaxEntries {
				o.Descriptors = append(o.Descriptors, limiter.OverrideEntry{Key: "k", Value: "v"})
			}
		}, wantField: "descriptors"},
		{name: "empty key", mutate: func(o *limiter.Override) {
			o.Descriptors = append(o.Descriptors, limiter.OverrideEntry{Value: "v"})
		}, wantField: "descriptors[1].key"},
		{name: "key too long", mutate: func(o *limiter.Override) { o.Descriptors[0].Key = long(257) }, wantField: "descriptors[0].key"},
		{name: "value too long", mutate: func(o *limiter.Override) { o.Descriptors[0].Value = long(1025) }, wantField: "descriptors[0].value"},
		{name: "rate_limit missing", mutate: func(o *limiter.Override) { o.RateLimit = limiter.RateLimit{} }, wantField: "rate_limit"},
		{name: "unlimited with rate", mutate: func(o *limiter.Override) { o.RateLimit.Unlimited = true }, wantField: "rate_limit.unlimited"},
		{name: "burst on ban", mutate: func(o *limiter.Override) { o.RateLimit = limiter.RateLimit{Unit: limiter.Second, Burst: 2} }, wantField: "rate_limit.burst"},
		{name: "too coarse", mutate: func(o *limiter.Override) {
			o.RateLimit = limiter.RateLimit{Unit: limiter.Year, UnitMultiplier: 1000, RequestsPerUnit: 1, Burst: 4000000000}
		}, wantField: "rate_limit"},
		{name: "reason too long", mutate: func(o *limiter.Override) { o.Reason = long(limiter.MaxReasonLen + 1) }, wantField: "reason"},
		{name: "expiry in the past", mutate: func(o *limiter.Override) { o.ExpiresAt = now.Add(-time.Second) }, wantField: "expires_at"},
		{name: "expiry now", mutate: func(o *limiter.Override) { o.ExpiresAt = now }, wantField: "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good()
			if tt.mutate != nil {
				tt.mutate(&o)
			}
			err := o.Validate(limiter.Bounds{}, now)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var oe *limiter.OverrideError
			if !errors.As(err, &oe) || oe.Field != tt.wantField {
				t.Fatalf("Validate = %v, want an error naming %q", err, tt.wantField)
			}
		})
	}
}

func TestMarshalDomainsRoundTrip(t *testing.T) {
	merged := limiter.MergeOverrides(mergeConfig(), []limiter.Override{
		ov("edge", *rl(50, limiter.Second), "remote_address", "10.0.0.7"),
		ov("edge", limiter.RateLimit{Unit: limiter.Second}, "remote_address", "6.6.6.6"),
		ov("edge", limiter.RateLimit{Unlimited: true}, "remote_address", "127.0.0.1"),
		ov("other", limiter.RateLimit{Unit: limiter.Minute, UnitMultiplier: 2, RequestsPerUnit: 3, Burst: 9, Name: "n"}, "k", "123"),
	})
	want, err := limiter.Compile(merged, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	y, err := limiter.MarshalDomains(merged, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(y, &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	if len(root.Content) != 2 || root.Content[0].Value != "domains" {
		t.Fatalf("YAML is not a domains document:\n%s", y)
	}
	back, err := limiter.DecodeDomains("effective.yaml", root.Content[1])
	if err != nil {
		t.Fatalf("DecodeDomains of MarshalDomains output: %v\n%s", err, y)
	}
	got, err := limiter.Compile(back, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Version() != want.Version() {
		t.Fatalf("YAML round trip changed the limits:\n%s", y)
	}
	j, err := limiter.MarshalDomains(merged, "json")
	if err != nil {
		t.Fatal(err)
	}
	var jd struct {
		Domains []struct {
			Domain string `json:"domain"`
		} `json:"domains"`
	}
	if err := json.Unmarshal(j, &jd); err != nil || len(jd.Domains) != 2 {
		t.Fatalf("JSON form %s: %v", j, err)
	}
	if _, err := limiter.MarshalDomains(merged, "toml"); !errors.Is(err, limiter.ErrUnknownFormat) {
		t.Fatalf("toml: %v", err)
	}
}
