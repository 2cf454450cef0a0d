package yamlconf

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "c.yaml", Line: 3, Field: "redis.tls.cert_file", Msg: "required"}, "c.yaml:3: redis.tls.cert_file: required"},
		{Error{File: "c.yaml", Field: "redis.url", Msg: "bad"}, "c.yaml: redis.url: bad"},
		{Error{File: "c.yaml", Line: 2, Msg: "invalid YAML: x"}, "c.yaml:2: invalid YAML: x"},
		{Error{File: "c.yaml", Line: 2, Env: "SLUICE_REDIS_URL", Field: "redis.url", Msg: "bad"}, "SLUICE_REDIS_URL: redis.url: bad"},
		{Error{Field: "postgres.dsn", Msg: "bad"}, "postgres.dsn: bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%#v prints %q, want %q", tc.e, got, tc.want)
		}
	}
	es := Errors{{File: "f", Line: 9, Msg: "b"}, {File: "f", Line: 2, Field: "a", Msg: "a"}}
	es.SortByLine()
	if got := es.Error(); got != "f:2: a: a\nf:9: b" {
		t.Errorf("list prints %q", got)
	}
}

type fieldErr struct{ field, msg string }

func (e *fieldErr) Error() string                         { return "pkg " + e.field + ": " + e.msg }
func (e *fieldErr) FieldProblem() (field, problem string) { return e.field, e.msg }

func TestUnder(t *testing.T) {
	if Under("redis", nil) != nil {
		t.Fatal("nil error placed")
	}
	err := Under("redis.breaker", errors.Join(
		fmt.Errorf("wrapped: %w", &fieldErr{"open_duration", "must be positive"}),
		errors.New("something else")))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T, want Errors", err)
	}
	want := "redis.breaker.open_duration: must be positive\nredis.breaker: something else"
	if err.Error() != want {
		t.Errorf("got\n%s\nwant\n%s", err, want)
	}
}

func TestFieldsMergeKeys(t *testing.T) {
	src := `base: &b {a: 1, b: 2}
other: &o {b: 3, c: 4}
m:
  <<: [*b, *o]
  a: 0
n:
  <<: 5
  x: 1
  x: 2
`
	w := NewWalker("f.yaml")
	root, _ := w.Parse([]byte(src))
	top := w.Fields(root, "")
	got := map[string]string{}
	for _, f := range w.Fields(w.Deref(top[2].Val), "m") {
		got[f.Path] = w.Deref(f.Val).Value
	}
	// Explicit keys win over merged ones; an earlier merged mapping over a
	// later one.
	if want := map[string]string{"m.a": "0", "m.b": "2", "m.c": "4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("merged fields %v, want %v", got, want)
	}
	if w.Count() != 0 {
		t.Fatalf("errors: %v", w.Errors())
	}
	w.Fields(w.Deref(top[3].Val), "n")
	want := "f.yaml:7: n: a merge (<<) must name a mapping, not the number 5\nf.yaml:9: n.x: given twice; first given on line 8"
	if got := w.Err(); got == nil || got.Error() != want {
		t.Errorf("errors\n%v\nwant\n%s", got, want)
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
	}{
		{"a: b\nc: [\n", 2},
		{"a: 1\nb: *nope\n", 2},
		{"a: 1\n\n# \xff\n", 3},
		{"a: 1\nb:\n\t- c\n", 3},
	} {
		w := NewWalker("f.yaml")
		root, _ := w.Parse([]byte(tc.src))
		es := w.Errors()
		if root != nil || len(es) != 1 || es[0].Line != tc.line || !strings.HasPrefix(es[0].Msg, "invalid YAML: ") {
			t.Errorf("%q: root %v, errors %v; want one invalid YAML at line %d", tc.src, root, es, tc.line)
		}
	}
	w := NewWalker("f.yaml")
	if root, more := w.Parse([]byte("a: 1\n---\nb: 2\n")); root == nil || more != 2 {
		t.Errorf("second document: root %v, more %d; want line 2", root, more)
	}
	if root, more := w.Parse([]byte("# nothing\n")); root != nil || more != 0 || w.Count() != 0 {
		t.Errorf("empty: root %v more %d errors %v", root, more, w.Errors())
	}
}

type Inner struct {
	Name string `yaml:"name"`
}

type settings struct {
	Inner   `yaml:",inline"`
	Wait    time.Duration `yaml:"wait"`
	Count   int           `yaml:"count"`
	Max     uint64        `yaml:"max"`
	On      bool          `yaml:"on"`
	Ratio   float64       `yaml:"ratio"`
	Raw     yaml.Node     `yaml:"raw"`
	Sub     Inner         `yaml:"sub"`
	Skipped string        `yaml:"-"`
}

func decode(t *testing.T, src string) (settings, map[string]int, Errors) {
	t.Helper()
	s := settings{Count: 7, Skipped: "kept"}
	lines := map[string]int{}
	w := NewWalker("c.yaml")
	if root, _ := w.Parse([]byte(src)); root != nil {
		w.Decode(root, &s, lines)
	}
	return s, lines, w.Errors()
}

func TestDecode(t *testing.T) {
	s, lines, errs := decode(t, `name: top
wait: 250ms
max: 3
on: true
ratio: 0.5
raw: [1, 2]
sub: &s {name: x}
count: ~
`)
	if errs != nil {
		t.Fatal(errs)
	}
	if s.Name != "top" || s.Wait != 250*time.Millisecond || s.Max != 3 || !s.On || s.Ratio != 0.5 ||
		s.Raw.Kind != yaml.SequenceNode || s.Sub.Name != "x" || s.Count != 7 || s.Skipped != "kept" {
		t.Errorf("decoded %+v", s)
	}
	if lines["sub.name"] != 7 || lines["wait"] != 2 {
		t.Errorf("lines %v", lines)
	}

	_, _, errs = decode(t, `nme: a
wait: 5
count: lots
max: -1
on: maybe
name: true
sub: [a]
Skipped: x
sub2: {<<: *nope}
`)
	want := []string{
		"c.yaml:9: invalid YAML: unknown anchor 'nope' referenced",
	}
	if got := strings.Split(errs.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("errors\n%s\nwant\n%s", errs, strings.Join(want, "\n"))
	}
	_, _, errs = decode(t, `nme: a
wait: 5
count: lots
max: -1
on: maybe
name: true
sub: [a]
skipped: x
`)
	want = []string{
		"c.yaml:1: nme: unknown field; did you mean name?",
		"c.yaml:2: wait: must be a duration such as 250ms, 1s or 2m, not the number 5",
		`c.yaml:3: count: must be an integer, not "lots"`,
		"c.yaml:4: max: must be a non-negative integer, not the number -1",
		`c.yaml:5: on: must be true or false, not "maybe"`,
		"c.yaml:6: name: must be a string, not the boolean true; quote it",
		"c.yaml:7: sub: must be a mapping of settings, not a list",
		"c.yaml:8: skipped: unknown field; known fields: count, max, name, on, ratio, raw, sub, wait",
	}
	if got := strings.Split(errs.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("errors\n%s\nwant\n%s", errs, strings.Join(want, "\n"))
	}
}

func TestDecodeAliasBudget(t *testing.T) {
	// Eight levels of ten merges would visit 10^8 mappings.
	var b strings.Builder
	b.WriteString("sub:\n  <<:\n    - &a0 {name: x}\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "    - &a%d {<<: [%s]}\n", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	_, _, errs := decode(t, b.String())
	if len(errs) != 1 || errs[0].Msg != "the file expands to too many nodes through aliases" {
		t.Fatalf("errors %v", errs)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"addr", "client_ca_file", "max_body_bytes"}
	for name, want := range map[string]string{
		"ca_file":    "; did you mean client_ca_file?",
		"adr":        "; did you mean addr?",
		"frobnicate": "; known fields: addr, client_ca_file, max_body_bytes",
	} {
		if got := Suggest(name, known); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", name, got, want)
		}
	}
}

// FuzzWalk checks that no input makes the walker or the decoder panic or
// run away, and that every problem has the file, a line and a message.
func FuzzWalk(f *testing.F) {
	for _, s := range []string{
		"name: a\nsub: {name: b}\n", "a: &a [*a]\n", "sub: {<<: [{name: x}, {name: y}]}\n",
		"x: &x {<<: *x}\n", "- 1\n", "wait: 1s\nwait: 2s\n", "---\n---\n", "sub: !!binary aGk=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, errs := decode(t, string(data))
		for _, e := range errs {
			if e.File != "c.yaml" || e.Line < 1 || e.Msg == "" {
				t.Fatalf("problem without file, line or message: %#v", e)
			}
		}
	})
}
