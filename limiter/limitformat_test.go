package limiter_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter"
)

func mustCompile(t *testing.T, src string) *limiter.Limits {
	t.Helper()
	ds, err := limiter.ParseLimitDocuments("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	l, err := limiter.Compile(ds, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ruleFor(t *testing.T, l *limiter.Limits, domain string, kv ...string) *limiter.Rule {
	t.Helper()
	var es []limiter.Entry
	for i := 0; i+1 < len(kv); i += 2 {
		es = append(es, limiter.Entry{Key: kv[i], Value: kv[i+1]})
	}
	r, _ := l.Match(domain, es, nil)
	if r == nil {
		t.Fatalf("no rule for %v in %s", kv, domain)
	}
	return r
}

func TestQuotaModeAndMetadataCompile(t *testing.T) {
	data, err := os.ReadFile("testdata/limits/good/quota-and-metadata.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := mustCompile(t, string(data))
	large := ruleFor(t, l, "quota", "model", "gpt-large")
	if !large.QuotaMode {
		t.Error("gpt-large: QuotaMode not set")
	}
	want := map[string]any{"service_with_quota": map[string]any{
		"name": "large", "weight": 3.0, "ratio": 0.5,
		"tags":  []any{"a", 1.0, true, nil, map[string]any{"x": "y"}},
		"since": "2025-01-01",
	}}
	if !reflect.DeepEqual(large.Metadata, want) {
		t.Errorf("gpt-large metadata = %#v\nwant %#v", large.Metadata, want)
	}
	// Unlimited wins over quota_mode (envoyproxy/ratelimit answers an
	// unlimited descriptor before counting quota descriptors); empty
	// metadata is none.
	small := ruleFor(t, l, "quota", "model", "gpt-small")
	if small.QuotaMode || small.Metadata != nil {
		t.Errorf("gpt-small: QuotaMode %v, Metadata %#v; want false, nil", small.QuotaMode, small.Metadata)
	}
}

func TestVersionCoversQuotaModeAndMetadata(t *testing.T) {
	const base = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
	v0 := mustCompile(t, base).Version()
	if v := mustCompile(t, base+"    quota_mode: false\n    metadata: {}\n").Version(); v != v0 {
		t.Errorf("spelled-out defaults change the version: %s != %s", v, v0)
	}
	seen := map[string]string{v0: "base"}
	for _, extra := range []string{
		"    quota_mode: true\n",
		"    metadata: {a: 1}\n",
		"    metadata: {a: 2}\n",
		"    metadata: {a: \"1\"}\n",
		"    metadata: {a: [1]}\n",
		"    metadata: {a: 1, b: 1}\n",
	} {
		v := mustCompile(t, base+extra).Version()
		if prev, dup := seen[v]; dup {
			t.Errorf("%q has the version of %q", extra, prev)
		}
		seen[v] = extra
	}
	// Map order does not matter.
	if a, b := mustCompile(t, base+"    metadata: {a: 1, b: 2}\n").Version(), mustCompile(t, base+"    metadata: {b: 2, a: 1}\n").Version(); a != b {
		t.Errorf("metadata key order changes the version")
	}
}

func TestCompileRefusesQuotaModeWithUsage(t *testing.T) {
	// As an xDS update would state it, without the parser.
	d := limiter.DomainConfig{Domain: "llm", File: "xds", Line: 1, Descriptors: []limiter.DescriptorConfig{{
		Key: "model", Line: 3, QuotaMode: true,
		RateLimit: &limiter.RateLimit{Name: "tokens", Unit: limiter.Minute, RequestsPerUnit: 10, Charge: limiter.ChargeUsage},
	}}}
	_, err := limiter.Compile([]limiter.DomainConfig{d}, limiter.CompileOptions{})
	if err == nil || !strings.Contains(err.Error(), "xds:3: quota_mode: rule tokens: not allowed with rate_limit.charge: usage") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadLimitsSeveralDocuments(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml": "domain: a\n---\n# second\nname: b\ndomain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: MONTH, requests_per_unit: 1}\n---\n",
		"c.yaml": "domain: c\n---\ndomain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n",
		"e.yaml": "domain: e\n---\ndomain: a\n",
	})
	_, err := limiter.LoadLimits(dir)
	fe := fileErrors(t, err)
	wantErrs := []string{
		filepath.Join(dir, "c.yaml") + ":6: descriptors[0].rate_limit.requests_per_unit: missing",
		filepath.Join(dir, "e.yaml") + `:3: domain "a" is already defined at ` + filepath.Join(dir, "a.yaml") + ":1",
	}
	if len(fe) != len(wantErrs) {
		t.Fatalf("got %d errors, want %d:\n%v", len(fe), len(wantErrs), err)
	}
	for i, w := range wantErrs {
		if !strings.HasPrefix(fe[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, fe[i].Error(), w)
		}
	}
	for _, f := range []string{"c.yaml", "e.yaml"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := limiter.LoadLimits(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Domain != "a" || ds[1].Domain != "b" || ds[1].Line != 5 {
		t.Fatalf("domains = %+v", ds)
	}
	l, err := limiter.Compile(ds, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := ruleFor(t, l, "b", "k", "x"); r.Limit.Unit != limiter.Month {
		t.Errorf("unit = %v", r.Limit.Unit)
	}
}

func TestMarshalDomainsKeepsQuotaModeAndMetadata(t *testing.T) {
	data, err := os.ReadFile("testdata/limits/good/quota-and-metadata.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := limiter.ParseLimitDocuments("q.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	y, err := limiter.MarshalDomains(ds, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(y, &doc); err != nil {
		t.Fatal(err)
	}
	back, err := limiter.DecodeDomains("effective.yaml", doc.Content[0].Content[1])
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if !reflect.DeepEqual(back[0].Descriptors[0].Metadata, ds[0].Descriptors[0].Metadata) || !back[0].Descriptors[0].QuotaMode {
		t.Fatalf("round trip lost quota_mode or metadata:\n%s", y)
	}
	want, _ := limiter.Compile(ds, limiter.CompileOptions{})
	got, err := limiter.Compile(back, limiter.CompileOptions{})
	if err != nil || got.Version() != want.Version() {
		t.Fatalf("round trip changed the limits (%v):\n%s", err, y)
	}
}

// TestShareThresholdBuckets follows envoyproxy/ratelimit's share_threshold
// cases: every value a shared wildcard matches maps to one bucket, at any
// level (also one without a limit), an exact value beside it keeps its
// own, and values of a wildcard without the flag keep theirs.
func TestShareThresholdBuckets(t *testing.T) {
	l := mustCompile(t, `domain: d
descriptors:
  - {key: files, value: "files/*", share_threshold: true, rate_limit: {unit: minute, requests_per_unit: 100}}
  - {key: plain, value: "files/*", rate_limit: {unit: minute, requests_per_unit: 100}}
  - key: files
    value: "top/*"
    share_threshold: true
    descriptors:
      - {key: files, value: "nested/*", share_threshold: true, rate_limit: {unit: minute, requests_per_unit: 300}}
  - key: user
    value: "user/*"
    share_threshold: true
    descriptors:
      - {key: action, rate_limit: {unit: minute, requests_per_unit: 150}}
  - {key: file, value: test1, rate_limit: {unit: minute, requests_per_unit: 50}}
  - {key: file, value: "test*", share_threshold: true, rate_limit: {unit: minute, requests_per_unit: 100}}
  - {key: midpath, value: "/api*v1", share_threshold: true, rate_limit: {unit: minute, requests_per_unit: 100}}
`)
	key := func(kv ...string) string {
		t.Helper()
		var es []limiter.Entry
		for i := 0; i+1 < len(kv); i += 2 {
			es = append(es, limiter.Entry{Key: kv[i], Value: kv[i+1]})
		}
		r, parts := l.Match("d", es, nil)
		if r == nil {
			t.Fatalf("no rule for %v", kv)
		}
		return string(limiter.AppendKey(nil, "", "d", parts, nil))
	}
	same := [][2][]string{
		{{"files", "files/a"}, {"files", "files/b/c"}},
		{{"files", "top/x", "files", "nested/1"}, {"files", "top/y", "files", "nested/2"}},
		{{"file", "test2"}, {"file", "test3"}},
		{{"midpath", "/api/v1"}, {"midpath", "/api/users/v1"}},
	}
	for _, c := range same {
		if a, b := key(c[0]...), key(c[1]...); a != b {
			t.Errorf("%v and %v: different buckets %q, %q", c[0], c[1], a, b)
		}
	}
	differ := [][2][]string{
		{{"plain", "files/a"}, {"plain", "files/b"}},                           // no share_threshold
		{{"file", "test1"}, {"file", "test2"}},                                 // exact beside the wildcard
		{{"user", "user/1", "action", "a"}, {"user", "user/1", "action", "b"}}, // a key-only level below keeps values apart
	}
	for _, c := range differ {
		if a, b := key(c[0]...), key(c[1]...); a == b {
			t.Errorf("%v and %v: one bucket %q", c[0], c[1], a)
		}
	}
	if a, b := key("user", "user/1", "action", "a"), key("user", "user/2", "action", "a"); a != b {
		t.Errorf("user/1 and user/2 with one action: different buckets %q, %q", a, b)
	}
}
