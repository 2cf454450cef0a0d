package limiter_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
)

// FuzzParseLimitFile checks that the parser never panics, that every error
// has the file and a line, that whatever it accepts compiles, and that
// parsing is deterministic. Files may hold several domains (documents).
func FuzzParseLimitFile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/limits/*/*.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("domain: d\ndescriptors:\n  - &a {key: k, descriptors: [*a]}\n"))
	f.Add([]byte("domain: d\n<<: [{descriptors: []}, {domain: e}]\n"))
	f.Add([]byte("name: g\ndomain: d\ndescriptors:\n  - key: k\n    rate_limit: null\n    quota_mode: true\n    metadata: {a: [1, {b: ~}], c: &m {d: 2.5}, e: *m}\n---\ndomain: e\n"))
	f.Add([]byte("domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n    rate_limit: {unit: SECOND, requests_per_unit: 1, name: \"\", replaces: [], charge: usage}\n"))
	f.Add([]byte("domain: d\ndescriptors:\n  - key: k\n    metadata: {a: {b: {c: {d: {e: {f: {g: {h: {i: {j: {k: {l: {m: {n: {o: {p: {q: 1}}}}}}}}}}}}}}}}}\n"))
	f.Add([]byte("---\n---\ndomain: a\n---\ndomain: a\n...\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		ds, err := limiter.ParseLimitDocuments(name, data)
		ds2, err2 := limiter.ParseLimitDocuments(name, data)
		if !reflect.DeepEqual(ds, ds2) || !reflect.DeepEqual(err, err2) {
			t.Fatalf("reparse differs:\n%+v %v\n%+v %v", ds, err, ds2, err2)
		}
		if err != nil {
			var fe limiter.FileErrors
			if !errors.As(err, &fe) || len(fe) == 0 {
				t.Fatalf("error is not a non-empty FileErrors: %#v", err)
			}
			for _, e := range fe {
				if e.File != name || e.Line < 1 || e.Msg == "" {
					t.Fatalf("error without file or line: %#v", e)
				}
			}
			if ds != nil {
				t.Fatalf("result with error: %+v", ds)
			}
			return
		}
		if len(ds) == 0 {
			t.Fatal("accepted with no domain")
		}
		for _, d := range ds {
			if d.Domain == "" || d.File != name || d.Line < 1 {
				t.Fatalf("accepted without a domain or location: %+v", d)
			}
			checkTree(t, d.Descriptors)
		}
		// Compile checks duplicates and rates again; anything the parser
		// accepts must pass.
		if _, err := limiter.Compile(ds, limiter.CompileOptions{}); err != nil {
			t.Fatalf("parsed but does not compile: %v\n%s", err, data)
		}
	})
}

func checkTree(t *testing.T, ds []limiter.DescriptorConfig) {
	t.Helper()
	for _, d := range ds {
		if d.Key == "" || d.Line < 1 {
			t.Fatalf("descriptor without key or line: %+v", d)
		}
		if r := d.RateLimit; r != nil {
			if r.Unlimited && (r.Unit != limiter.UnitUnknown || r.RequestsPerUnit != 0 || r.Burst != 0 || r.UnitMultiplier != 0) {
				t.Fatalf("unlimited with a rate: %+v", r)
			}
			if !r.Unlimited && r.Unit == limiter.UnitUnknown {
				t.Fatalf("limit without a unit: %+v", r)
			}
			for _, n := range r.Replaces {
				if n == "" || n == r.Name {
					t.Fatalf("bad replaces: %+v", r)
				}
			}
		}
		if d.Metadata != nil {
			checkMetadata(t, d.Metadata, 1)
		}
		checkTree(t, d.Descriptors)
	}
}

// checkMetadata asserts metadata holds only what a protobuf Struct can,
// within the depth bound.
func checkMetadata(t *testing.T, v any, depth int) {
	t.Helper()
	switch v := v.(type) {
	case nil, bool, float64, string:
	case []any:
		if depth > limiter.MaxMetadataDepth {
			t.Fatalf("metadata deeper than %d", limiter.MaxMetadataDepth)
		}
		for _, e := range v {
			checkMetadata(t, e, depth+1)
		}
	case map[string]any:
		if depth > limiter.MaxMetadataDepth || (depth == 1 && len(v) == 0) {
			t.Fatalf("metadata too deep or an empty top: %v", v)
		}
		for _, e := range v {
			checkMetadata(t, e, depth+1)
		}
	default:
		t.Fatalf("metadata holds a %T", v)
	}
}
