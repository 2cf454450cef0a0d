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
// parsing is deterministic.
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
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		d, err := limiter.ParseLimitFile(name, data)
		d2, err2 := limiter.ParseLimitFile(name, data)
		if !reflect.DeepEqual(d, d2) || !reflect.DeepEqual(err, err2) {
			t.Fatalf("reparse differs:\n%+v %v\n%+v %v", d, err, d2, err2)
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
			if !reflect.DeepEqual(d, limiter.DomainConfig{}) {
				t.Fatalf("result with error: %+v", d)
			}
			return
		}
		if d.Domain == "" || d.File != name || d.Line < 1 {
			t.Fatalf("accepted without a domain or location: %+v", d)
		}
		// Compile checks duplicates and rates again; anything the parser
		// accepts must pass.
		if _, err := limiter.Compile([]limiter.DomainConfig{d}, limiter.CompileOptions{}); err != nil {
			t.Fatalf("parsed but does not compile: %v\n%s", err, data)
		}
		checkTree(t, d.Descriptors)
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
		checkTree(t, d.Descriptors)
	}
}
