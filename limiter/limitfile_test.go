package limiter_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter"
)

// want is an expected error, written in a bad limit file's leading comment
// as "# want: LINE: SUBSTRING"; the substring is of "path.to.field:
// problem", the error with its file and line taken off.
type want struct {
	line int
	msg  string
}

// readWants reads the "# want: LINE: SUBSTRING" lines at the top of a file.
func readWants(t *testing.T, data []byte) []want {
	t.Helper()
	var ws []want
	for _, l := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(l, "# want: ")
		if !ok {
			break
		}
		num, msg, ok := strings.Cut(rest, ": ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			t.Fatalf("malformed want line %q", l)
		}
		ws = append(ws, want{n, msg})
	}
	return ws
}

func fileErrors(t *testing.T, err error) limiter.FileErrors {
	t.Helper()
	var fe limiter.FileErrors
	if !errors.As(err, &fe) {
		t.Fatalf("error is %T, not FileErrors: %v", err, err)
	}
	return fe
}

// checkErrors asserts that err lists exactly the wanted errors, in order.
func checkErrors(t *testing.T, file string, err error, wants []want) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v", wants)
	}
	fe := fileErrors(t, err)
	if len(fe) != len(wants) {
		t.Fatalf("got %d errors, want %d:\n%v", len(fe), len(wants), err)
	}
	for i, w := range wants {
		e := fe[i]
		if e.File != file || e.Line != w.line || !strings.Contains(fieldAndMsg(e), w.msg) {
			t.Errorf("error %d = %q\nwant %s:%d: ...%s...", i, e.Error(), file, w.line, w.msg)
		}
	}
}

// fieldAndMsg is e as it prints, without the file and line.
func fieldAndMsg(e limiter.FileError) string {
	e.File, e.Line = "", 0
	return e.Error()
}

func TestTestdataLimits(t *testing.T) {
	good, _ := filepath.Glob("testdata/limits/good/*.yaml")
	bad, _ := filepath.Glob("testdata/limits/bad/*.yaml")
	if len(good) < 5 || len(bad) < 30 {
		t.Fatalf("found %d good and %d bad limit files", len(good), len(bad))
	}
	for _, f := range good {
		t.Run("good/"+filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ds, err := limiter.ParseLimitDocuments(f, data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if _, err := limiter.Compile(ds, limiter.CompileOptions{}); err != nil {
				t.Fatalf("compile: %v", err)
			}
		})
	}
	for _, f := range bad {
		t.Run("bad/"+filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			wants := readWants(t, data)
			if len(wants) == 0 {
				t.Fatal("no # want: line")
			}
			_, err = limiter.ParseLimitDocuments(f, data)
			checkErrors(t, f, err, wants)
		})
	}
}

func TestParseLimitFileDesignExample(t *testing.T) {
	const f = "testdata/limits/good/design-example.yaml"
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := limiter.ParseLimitFile(f, data)
	if err != nil {
		t.Fatal(err)
	}
	want := limiter.DomainConfig{
		Domain: "edge", File: f, Line: 2,
		Descriptors: []limiter.DescriptorConfig{
			{Key: "remote_address", Line: 4,
				RateLimit: &limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 10, Burst: 20}},
			{Key: "path", Value: "/login", Line: 6, ShadowMode: true,
				RateLimit: &limiter.RateLimit{Unit: limiter.Minute, RequestsPerUnit: 5, Name: "login"}},
			{Key: "tenant", Value: "acme*", Line: 10,
				Descriptors: []limiter.DescriptorConfig{
					{Key: "plan", Value: "free", Line: 13,
						RateLimit: &limiter.RateLimit{Unit: limiter.Hour, RequestsPerUnit: 1000}},
				}},
			{Key: "internal", Line: 16, RateLimit: &limiter.RateLimit{Unlimited: true}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	l, err := limiter.Compile([]limiter.DomainConfig{got}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Rules() != 4 {
		t.Fatalf("rules = %d, want 4", l.Rules())
	}
	r, _ := l.Match("edge", []limiter.Entry{{Key: "tenant", Value: "acme-corp"}, {Key: "plan", Value: "free"}}, nil)
	if r == nil || r.Limit.RequestsPerUnit != 1000 {
		t.Fatalf("nested wildcard match = %+v", r)
	}
}

func TestParseLimitFileEveryField(t *testing.T) {
	const f = "testdata/limits/good/every-field.yaml"
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := limiter.ParseLimitFile(f, data)
	if err != nil {
		t.Fatal(err)
	}
	want := []limiter.DescriptorConfig{
		{Key: "tenant", Value: "premium-*", Line: 4, ShareThreshold: true, ValueToMetric: true,
			RateLimit: &limiter.RateLimit{Name: "premium", Unit: limiter.Minute, UnitMultiplier: 5,
				RequestsPerUnit: 6000, Burst: 1000, Replaces: []string{"per_tenant"}}},
		{Key: "tenant", Line: 19, DetailedMetric: true,
			RateLimit: &limiter.RateLimit{Name: "per_tenant", Unit: limiter.Second, RequestsPerUnit: 20},
			Descriptors: []limiter.DescriptorConfig{
				{Key: "path", Value: "/v1/*/export", Line: 26,
					RateLimit: &limiter.RateLimit{Unit: limiter.Hour, RequestsPerUnit: 10}},
			}},
		{Key: "client", Line: 31, RateLimit: &limiter.RateLimit{Unit: limiter.Day, RequestsPerUnit: 100000}},
	}
	if !reflect.DeepEqual(got.Descriptors, want) {
		t.Fatalf("got  %+v\nwant %+v", got.Descriptors, want)
	}
}

func TestParseLimitFileUpperCaseUnits(t *testing.T) {
	for _, u := range []string{"SECOND", "Minute", "hOUR", "DAY", "WEEK", "MONTH", "YEAR"} {
		d, err := limiter.ParseLimitFile("u.yaml", []byte("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: "+u+", requests_per_unit: 1}\n"))
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if got := d.Descriptors[0].RateLimit.Unit.String(); got != strings.ToLower(u) {
			t.Errorf("unit %s parsed as %s", u, got)
		}
	}
}

func TestParseLimitFileValues(t *testing.T) {
	// Unquoted numbers and dates are taken as written; quoted text as is.
	src := "domain: d\ndescriptors:\n" +
		"  - key: status\n    value: 429\n" +
		"  - key: version\n    value: 1.10\n" +
		"  - key: code\n    value: 007\n" +
		"  - key: day\n    value: 2024-01-31\n" +
		"  - key: flag\n    value: \"true\"\n" +
		"  - key: any\n    value: \"\"\n"
	d, err := limiter.ParseLimitFile("v.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range d.Descriptors {
		got = append(got, x.Value)
	}
	want := []string{"429", "1.10", "007", "2024-01-31", "true", ""}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("values = %q, want %q", got, want)
	}
}

func TestParseLimitFileNumbers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		err  string
	}{
		{in: "10", want: 10},
		{in: "010", want: 10},
		{in: "1_000", want: 1000},
		{in: "0x10", want: 16},
		{in: "4294967295", want: 4294967295},
		{in: "4294967296", err: "too large"},
		{in: "99999999999999999999999", err: "too large"},
		{in: "-1", err: "must not be negative"},
		{in: "-0x1", err: "must not be negative"},
		{in: "1e3", err: "whole number"},
		{in: "1.0", err: "whole number"},
		{in: ".inf", err: "whole number"},
		{in: "ten", err: "whole number"},
		{in: "true", err: "whole number"},
		{in: "[1]", err: "whole number, not a list"},
		{in: "", err: "whole number, not empty (null)"},
	} {
		src := "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: " + tc.in + "\n"
		d, err := limiter.ParseLimitFile("n.yaml", []byte(src))
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			} else if got := d.Descriptors[0].RateLimit.RequestsPerUnit; got != tc.want {
				t.Errorf("%s = %d, want %d", tc.in, got, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want %q", tc.in, tc.err)
			continue
		}
		checkErrors(t, "n.yaml", err, []want{{6, tc.err}})
	}
}

func TestParseLimitFileErrors(t *testing.T) {
	// Each rejection kind also has a file in testdata/limits/bad; these
	// cover the rest, and more than one error per input.
	for _, tc := range []struct {
		name  string
		src   string
		wants []want
	}{
		{"empty", "", []want{{1, "empty limit file: no domain"}}},
		{"whitespace", "\n\n  \n", []want{{1, "empty limit file"}}},
		{"only document marker", "---\n", []want{{1, "empty limit file"}}},
		{"trailing document marker", "domain: d\n---\n", nil},
		{"scalar top", "edge\n", []want{{1, "must be a mapping with domain and descriptors, not \"edge\""}}},
		{"control character", "domain: d\ndescriptors:\n  - key: \"a\x01\"\n", []want{{3, "invalid YAML: control characters"}}},
		{"invalid utf-8", "domain: d\n\n# \xff\n", []want{{3, "invalid YAML"}}},
		{"tab indent", "domain: d\ndescriptors:\n\t- key: a\n", []want{{3, "invalid YAML"}}},
		{"unknown field no suggestion", "domain: d\nfrobnicate: 1\n", []want{{2, `frobnicate: unknown field; known fields: domain, descriptors`}}},
		{"descriptor field at top", "domain: d\nkey: a\n", []want{{2, `key: unknown field at the top of a domain; it belongs on a descriptor`}}},
		{"rate_limit field on descriptor", "domain: d\ndescriptors:\n  - key: a\n    unit: second\n", []want{{4, `descriptors[0].unit: unknown field in a descriptor; it belongs inside rate_limit`}}},
		{"unknown in replaces", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, name: x}\n  - key: b\n    rate_limit:\n      unlimited: true\n      replaces: [{nmea: x}]\n",
			[]want{{8, `descriptors[1].rate_limit.replaces[0].nmea: unknown field; did you mean name?`}, {8, "descriptors[1].rate_limit.replaces[0]: entry has no name"}}},
		{"replaces not list", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, replaces: x}\n", []want{{4, "replaces: must be a list"}}},
		{"replaces entry scalar", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, replaces: [x]}\n", []want{{4, "descriptors[0].rate_limit.replaces[0]: each entry must be a mapping {name: ...}, not \"x\""}}},
		{"replaces twice", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, name: x}\n  - key: b\n    rate_limit: {unlimited: true, replaces: [{name: x}, {name: x}]}\n",
			[]want{{6, `descriptors[1].rate_limit.replaces[1].name: "x" is listed twice`}}},
		{"replaces without own name is fine", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, name: x}\n  - key: b\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{name: x}]}\n", nil},
		{"replaces in nested tree", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: {unlimited: true, replaces: [{name: top}]}\n  - key: c\n    rate_limit: {unlimited: true, name: top}\n", nil},
		{"empty name is no name", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, name: \"\"}\n  - key: b\n    rate_limit: {unlimited: true, name: \"\"}\n", nil},
		{"unlimited false with rate", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: false, unit: second, requests_per_unit: 3}\n", nil},
		{"unlimited with everything", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unlimited: true\n      unit: second\n      unit_multiplier: 2\n      requests_per_unit: 3\n      burst: 4\n",
			[]want{{6, "unit: not allowed with unlimited"}, {7, "unit_multiplier: not allowed"}, {8, "requests_per_unit: not allowed"}, {9, "burst: not allowed"}}},
		{"burst smaller than rate is legal", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 100, burst: 1}\n", nil},
		{"ban", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 0}\n", nil},
		{"bad unit does not cascade", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 0}\n", []want{{4, `unknown unit "fortnight"`}}},
		{"unit not string", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: 1, requests_per_unit: 1}\n", []want{{4, "unit: must be a string, not the number 1"}}},
		{"rate_limit list", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      - unit: second\n", []want{{5, "rate_limit: must be a mapping, not a list"}}},
		{"key mapping", "domain: d\ndescriptors:\n  - key: {a: b}\n", []want{{3, "key: must be a string, not a mapping"}}},
		{"key null", "domain: d\ndescriptors:\n  - key:\n", []want{{3, "key: must be a string, not empty (null)"}}},
		{"value mapping", "domain: d\ndescriptors:\n  - key: a\n    value: {b: c}\n", []want{{4, "value: must be a string, not a mapping"}}},
		{"bad value skips duplicate check", "domain: d\ndescriptors:\n  - key: a\n    value: true\n  - key: a\n    value: false\n",
			[]want{{4, "value: must be a string"}, {6, "value: must be a string"}}},
		{"same value different keys", "domain: d\ndescriptors:\n  - key: a\n    value: x\n  - key: b\n    value: x\n  - key: a\n  - key: a\n    value: \"x*\"\n", nil},
		{"same pair at different levels", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: a\n  - key: b\n    descriptors:\n      - key: a\n", nil},
		{"descriptors null", "domain: d\ndescriptors:\n", nil},
		{"no descriptors", "domain: d\n", nil},
		{"descriptors scalar", "domain: d\ndescriptors: none\n", []want{{2, "descriptors: must be a list of descriptors"}}},
		{"domain null", "domain:\n", []want{{1, "domain: must be a string, not empty (null)"}}},
		{"duplicate domain field", "domain: a\ndomain: b\n", []want{{2, `domain: given twice; first given on line 1`}}},
		{"non-scalar field name", "domain: d\n? [a]\n: 1\n", []want{{2, "field names must be plain words, not a list"}}},
		{"share_threshold false anywhere", "domain: d\ndescriptors:\n  - key: a\n    value: x\n    share_threshold: false\n", nil},
		{"share_threshold wildcard in middle", "domain: d\ndescriptors:\n  - key: a\n    value: \"a*b\"\n    share_threshold: true\n", nil},
		{"merge of scalar", "domain: d\n<<: 1\n", []want{{2, "a merge (<<) must name a mapping"}}},
		{"merge does not override", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      <<: {unit: hour, requests_per_unit: 1}\n      unit: second\n", nil},
		{"metadata at top", "domain: d\nmetadata: {}\n", []want{{2, "metadata: unknown field at the top of a domain; it belongs on a descriptor"}}},
		{"second document in ParseLimitFile", "domain: a\n---\ndomain: b\n", []want{{3, "a second domain (YAML document) in a file read as one domain"}}},
		{"second document in error names its line", "domain: a\n---\ndomain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
			[]want{{3, "a second domain"}, {6, `descriptors[0].rate_limit.unit: unknown unit "fortnight"`}}},
		{"rate_limit null is no limit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: null\n  - key: b\n    rate_limit:\n", nil},
		{"replaces null", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, replaces: null}\n", nil},
		{"top-level name", "name: edge-policy\ndomain: d\n", nil},
		{"top-level name not text", "name: [x]\ndomain: d\n", []want{{1, "name: must be a string, not a list"}}},
		{"quota_mode not bool", "domain: d\ndescriptors:\n  - key: a\n    quota_mode: yes please\n", []want{{4, `quota_mode: must be true or false, not "yes please"`}}},
		{"metadata null key", "domain: d\ndescriptors:\n  - key: a\n    metadata: {~: 1}\n", []want{{4, "descriptors[0].metadata: metadata keys must be text, not empty (null)"}}},
		{"metadata duplicate key", "domain: d\ndescriptors:\n  - key: a\n    metadata:\n      x: 1\n      x: 2\n", []want{{6, "descriptors[0].metadata.x: given twice"}}},
		{"too coarse with burst", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: year, requests_per_unit: 1, burst: 4294967295}\n", []want{{4, "rate_limit: burst 4294967295 at 1 per year"}}},
		{"many errors in one file", "domain: \"\"\ndescriptors:\n  - key: a\n    rate_limit: {unit: sec}\n  - key: a\n    shadow_mode: 1\n  - {}\n",
			[]want{{1, "domain: must not be empty"}, {4, `unknown unit "sec"`}, {4, "descriptors[0].rate_limit.requests_per_unit: missing"},
				{5, `key "a" with no value is already given at line 3`}, {6, "shadow_mode: must be true or false, not the number 1"}, {7, "key: missing"}}},
		{"misspelling does not cascade", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unti: second, requests_per_unit: 1}\n",
			[]want{{4, `descriptors[0].rate_limit.unti: unknown field; did you mean unit?`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := limiter.ParseLimitFile("f.yaml", []byte(tc.src))
			if tc.wants == nil {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := limiter.Compile([]limiter.DomainConfig{d}, limiter.CompileOptions{}); err != nil {
					t.Fatalf("compile: %v", err)
				}
				return
			}
			checkErrors(t, "f.yaml", err, tc.wants)
		})
	}
}

func TestParseLimitFileMergeAndAlias(t *testing.T) {
	data, err := os.ReadFile("testdata/limits/good/anchors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := limiter.ParseLimitFile("anchors.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, x := range d.Descriptors {
		if x.RateLimit.Unit != limiter.Second {
			t.Errorf("%s: unit %v", x.Value, x.RateLimit.Unit)
		}
		got = append(got, x.RateLimit.RequestsPerUnit)
	}
	if !reflect.DeepEqual(got, []uint32{10, 10, 20}) {
		t.Fatalf("requests_per_unit = %v", got)
	}
}

func TestParseLimitFileAliasBomb(t *testing.T) {
	// Nine levels of ten aliases each would expand to 10^9 descriptors.
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors:\n  - key: k0\n    descriptors: &l0 [{key: x}]\n")
	for i := 1; i <= 9; i++ {
		b.WriteString("  - key: k" + strconv.Itoa(i) + "\n    descriptors: &l" + strconv.Itoa(i) + " [")
		for j := 0; j < 10; j++ {
			b.WriteString("{key: k" + strconv.Itoa(j) + ", descriptors: *l" + strconv.Itoa(i-1) + "}, ")
		}
		b.WriteString("]\n")
	}
	_, err := limiter.ParseLimitFile("bomb.yaml", []byte(b.String()))
	fe := fileErrors(t, err)
	if len(fe) != 1 || !strings.Contains(fe[0].Msg, "too many nodes through aliases") {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeDomains(t *testing.T) {
	const cfg = `grpc_addr: ":8081"
domains:
  - domain: edge
    descriptors:
      - key: remote_address
        rate_limit: {unit: second, requests_per_unit: 10}
  - domain: api
    descriptors:
      - key: path
        value: /x
        rate_limit: {unit: secnd, requests_per_unit: 1}
  - domain: edge
  - descriptors: []
`
	var doc struct {
		Domains yaml.Node `yaml:"domains"`
	}
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	_, err := limiter.DecodeDomains("config.yaml", &doc.Domains)
	checkErrors(t, "config.yaml", err, []want{
		{11, `unit: unknown unit "secnd"`},
		{12, `domain "edge" is already defined at config.yaml:3`},
		{13, "domain: missing"},
	})

	const ok = `domains:
  - domain: edge
    descriptors:
      - key: remote_address
        rate_limit: {unit: second, requests_per_unit: 10}
  - domain: api
    descriptors:
      - key: path
        value: /x
        rate_limit: {unit: MINUTE, requests_per_unit: 1}
`
	if err := yaml.Unmarshal([]byte(ok), &doc); err != nil {
		t.Fatal(err)
	}
	ds, err := limiter.DecodeDomains("config.yaml", &doc.Domains)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Domain != "edge" || ds[0].Line != 2 || ds[1].Line != 6 ||
		ds[0].File != "config.yaml" || ds[1].Descriptors[0].Line != 8 {
		t.Fatalf("domains = %+v", ds)
	}
	if _, err := limiter.Compile(ds, limiter.CompileOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, n := range []*yaml.Node{nil, {Kind: yaml.ScalarNode, Tag: "!!null"}} {
		if ds, err := limiter.DecodeDomains("config.yaml", n); ds != nil || err != nil {
			t.Errorf("DecodeDomains(%v) = %v, %v", n, ds, err)
		}
	}
	_, err = limiter.DecodeDomains("config.yaml", &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 7})
	checkErrors(t, "config.yaml", err, []want{{7, "domains: must be a list of domains"}})
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadLimitsDirectory(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml":       "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
		"b.yml":        "domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: sec, requests_per_unit: 1}\n  - key: \"\"\n",
		"c.yaml":       "domain: c\ndescriptors:\n  - key: k\n    rate_limt: {}\n",
		"notes.txt":    "not a limit file",
		".hidden.yaml": "garbage: [",
	})
	_, err := limiter.LoadLimits(dir)
	fe := fileErrors(t, err)
	wantErrs := []string{
		filepath.Join(dir, "b.yml") + `:4: descriptors[0].rate_limit.unit: unknown unit "sec"`,
		filepath.Join(dir, "b.yml") + ":5: descriptors[1].key: must not be empty",
		filepath.Join(dir, "c.yaml") + `:4: descriptors[0].rate_limt: unknown field; did you mean rate_limit?`,
	}
	if len(fe) != len(wantErrs) {
		t.Fatalf("got %d errors, want %d:\n%v", len(fe), len(wantErrs), err)
	}
	for i, w := range wantErrs {
		if !strings.HasPrefix(fe[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, fe[i].Error(), w)
		}
	}

	// Fixed, the directory loads in name order, and compiles.
	writeFiles(t, nil)
	if err := os.WriteFile(filepath.Join(dir, "b.yml"), []byte("domain: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a.yaml"), filepath.Join(dir, "0-link.txt")); err != nil {
		t.Fatal(err)
	}
	ds, err := limiter.LoadLimits(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Domain != "a" || ds[1].Domain != "b" || ds[0].File != filepath.Join(dir, "a.yaml") {
		t.Fatalf("domains = %+v", ds)
	}
	if _, err := limiter.Compile(ds, limiter.CompileOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestLoadLimitsDuplicateDomain(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"1.yaml": "# first\ndomain: edge\n",
		"2.yaml": "descriptors: []\ndomain: edge\n",
	})
	_, err := limiter.LoadLimits(dir)
	fe := fileErrors(t, err)
	want := filepath.Join(dir, "2.yaml") + `:2: domain "edge" is already defined at ` + filepath.Join(dir, "1.yaml") + ":2"
	if len(fe) != 1 || fe[0].Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestLoadLimitsSymlinkedFiles(t *testing.T) {
	// A Kubernetes ConfigMap mount: each file is a link into a hidden
	// directory, which must not be read as well.
	dir := t.TempDir()
	data := filepath.Join(dir, "..data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "edge.yaml"), []byte("domain: edge\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "edge.yaml"), filepath.Join(dir, "edge.yaml")); err != nil {
		t.Fatal(err)
	}
	ds, err := limiter.LoadLimits(dir)
	if err != nil || len(ds) != 1 || ds[0].Domain != "edge" {
		t.Fatalf("LoadLimits = %+v, %v", ds, err)
	}
}

func TestLoadLimitsFileAndMissing(t *testing.T) {
	ds, err := limiter.LoadLimits("testdata/limits/good/design-example.yaml")
	if err != nil || len(ds) != 1 || ds[0].Domain != "edge" {
		t.Fatalf("LoadLimits(file) = %+v, %v", ds, err)
	}
	_, err = limiter.LoadLimits(filepath.Join(t.TempDir(), "nope.yaml"))
	fe := fileErrors(t, err)
	if len(fe) != 1 || fe[0].Line != 0 || !strings.Contains(fe[0].Error(), "nope.yaml: read limits: no such file") {
		t.Fatalf("err = %v", err)
	}
	ds, err = limiter.LoadLimits(t.TempDir())
	if err != nil || len(ds) != 0 {
		t.Fatalf("empty directory: %v, %v", ds, err)
	}
	// Every good testdata file loads together: no domain is defined twice.
	ds, err = limiter.LoadLimits("testdata/limits/good")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := limiter.Compile(ds, limiter.CompileOptions{}); err != nil {
		t.Fatal(err)
	}
}
