package limiter

import (
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"acme*", "acme", true},
		{"acme*", "acme-1", true},
		{"acme*", "acm", false},
		{"*.png", "a.png", true},
		{"*.png", "a.png.jpg", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{"a**b", "ab", true},
		{"/api/*/users", "/api/v1/users", true},
		{"/api/*/users", "/api/v1/x/users", true},
		{"/api/*/users", "/api/v1/user", false},
		{"x", "x", true},
		{"x", "xx", false},
	}
	for _, c := range cases {
		if got := globMatch(c.pattern, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func mustCompile(t testing.TB, ds ...DomainConfig) *Limits {
	t.Helper()
	l, err := Compile(ds, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func named(name string) *RateLimit {
	return &RateLimit{Name: name, RequestsPerUnit: 1, Unit: Second}
}

func TestMatch(t *testing.T) {
	l := mustCompile(t, DomainConfig{Domain: "edge", Descriptors: []DescriptorConfig{
		{Key: "path", Value: "/login", RateLimit: named("login")},
		{Key: "path", Value: "/api/*", RateLimit: named("api-first")},
		{Key: "path", Value: "/api/v1*", RateLimit: named("api-second")},
		{Key: "path", RateLimit: named("any-path")},
		{Key: "tenant", Value: "acme*", Descriptors: []DescriptorConfig{
			{Key: "plan", Value: "free", RateLimit: named("acme-free")},
		}},
		{Key: "remote_address", RateLimit: named("per-ip"), Descriptors: []DescriptorConfig{
			{Key: "path", RateLimit: named("per-ip-path")},
		}},
		{Key: "nolimit", Descriptors: []DescriptorConfig{{Key: "x", RateLimit: named("nested")}}},
	}})
	cases := []struct {
		name    string
		domain  string
		entries []Entry
		want    string // rule name, "" for none
		parts   string
	}{
		{"exact beats wildcard and any", "edge", []Entry{{"path", "/login"}}, "login", "path=/login"},
		{"first wildcard in file order", "edge", []Entry{{"path", "/api/v1/x"}}, "api-first", "path=/api/v1/x"},
		{"key only", "edge", []Entry{{"path", "/other"}}, "any-path", "path=/other"},
		{"nested wildcard then exact", "edge", []Entry{{"tenant", "acme-1"}, {"plan", "free"}}, "acme-free", "tenant=acme-1,plan=free"},
		{"nested no match", "edge", []Entry{{"tenant", "acme-1"}, {"plan", "pro"}}, "", ""},
		{"node without limit", "edge", []Entry{{"tenant", "acme-1"}}, "", ""},
		{"wildcard miss", "edge", []Entry{{"tenant", "other"}}, "", ""},
		{"last entry's limit", "edge", []Entry{{"remote_address", "1.2.3.4"}, {"path", "/x"}}, "per-ip-path", "remote_address=1.2.3.4,path=/x"},
		{"parent only", "edge", []Entry{{"remote_address", "1.2.3.4"}}, "per-ip", "remote_address=1.2.3.4"},
		{"extra entry has no child", "edge", []Entry{{"path", "/login"}, {"x", "y"}}, "", ""},
		{"nested under limitless node", "edge", []Entry{{"nolimit", "a"}, {"x", "b"}}, "nested", "nolimit=a,x=b"},
		{"unknown key", "edge", []Entry{{"nope", "x"}}, "", ""},
		{"unknown domain", "other", []Entry{{"path", "/login"}}, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rule, parts := l.Match(c.domain, c.entries, nil)
			got := ""
			if rule != nil {
				got = rule.Limit.Name
			}
			if got != c.want {
				t.Fatalf("rule = %q, want %q", got, c.want)
			}
			if rule == nil {
				return
			}
			var ps []string
			for _, p := range parts {
				ps = append(ps, p.Key+"="+p.Value)
			}
			if s := strings.Join(ps, ","); s != c.parts {
				t.Fatalf("parts = %s, want %s", s, c.parts)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		ds   []DomainConfig
		want string
	}{
		{"duplicate domain", []DomainConfig{{Domain: "a", File: "x.yaml", Line: 1}, {Domain: "a", File: "y.yaml", Line: 1}}, "already defined"},
		{"empty domain", []DomainConfig{{File: "x.yaml", Line: 3}}, "x.yaml:3: domain"},
		{"empty key", []DomainConfig{{Domain: "a", File: "x.yaml", Descriptors: []DescriptorConfig{{Line: 4}}}}, "x.yaml:4: key"},
		{"duplicate value", []DomainConfig{{Domain: "a", File: "x.yaml", Descriptors: []DescriptorConfig{{Key: "k", Value: "v", Line: 2}, {Key: "k", Value: "v", Line: 5}}}}, "x.yaml:5: duplicate"},
		{"duplicate any", []DomainConfig{{Domain: "a", File: "x.yaml", Descriptors: []DescriptorConfig{{Key: "k", Line: 2}, {Key: "k", Line: 5}}}}, "x.yaml:5: duplicate"},
		{"duplicate wildcard", []DomainConfig{{Domain: "a", File: "x.yaml", Descriptors: []DescriptorConfig{{Key: "k", Value: "a*", Line: 2}, {Key: "k", Value: "a*", Line: 6}}}}, "x.yaml:6: duplicate"},
		{"too coarse", []DomainConfig{{Domain: "a", File: "x.yaml", Descriptors: []DescriptorConfig{{Key: "k", Line: 7, RateLimit: &RateLimit{RequestsPerUnit: 7, Unit: Year, Burst: 4000000}}}}}, "x.yaml:7: rate_limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(c.ds, CompileOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestVersionFollowsContent(t *testing.T) {
	d := func(rpu uint32) DomainConfig {
		return DomainConfig{Domain: "a", Descriptors: []DescriptorConfig{{Key: "k", RateLimit: &RateLimit{RequestsPerUnit: rpu, Unit: Second}}}}
	}
	a, b, c := mustCompile(t, d(1)), mustCompile(t, d(1)), mustCompile(t, d(2))
	if a.Version() != b.Version() || a.Version() == c.Version() || !strings.HasPrefix(a.Version(), "sha256:") {
		t.Fatalf("versions %s %s %s", a.Version(), b.Version(), c.Version())
	}
}

func TestRate(t *testing.T) {
	cases := []struct {
		rl               RateLimit
		num, den, capTok uint64
	}{
		{RateLimit{RequestsPerUnit: 100, Unit: Second}, 1, 10000, 100},
		{RateLimit{RequestsPerUnit: 100, Unit: Second, Burst: 250}, 1, 10000, 250},
		{RateLimit{RequestsPerUnit: 3, Unit: Second}, 3, 1000000, 3},
		{RateLimit{RequestsPerUnit: 1000, Unit: Hour}, 1, 3600000, 1000},
		{RateLimit{RequestsPerUnit: 5, Unit: Minute, UnitMultiplier: 2}, 1, 24000000, 5},
		{RateLimit{RequestsPerUnit: 1, Unit: Year}, 1, 31536000000000, 1},
	}
	for _, c := range cases {
		r, err := c.rl.Rate()
		if err != nil {
			t.Fatalf("%+v: %v", c.rl, err)
		}
		if r.Num != c.num || r.Den != c.den || r.Cap != c.capTok {
			t.Errorf("%+v: rate = %+v, want %d/%d cap %d", c.rl, r, c.num, c.den, c.capTok)
		}
	}
	for _, bad := range []RateLimit{
		{RequestsPerUnit: 0, Unit: Second},
		{RequestsPerUnit: 1, Unlimited: true},
		{RequestsPerUnit: 1},
		{RequestsPerUnit: 7, Unit: Year, Burst: 1000},
	} {
		if _, err := bad.Rate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestEncodeDebt checks that a stored bucket reads back the debt it was
// stored with, for any time and rate, and that the slack stays in range.
func TestEncodeDebt(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	rates := []RateLimit{
		{RequestsPerUnit: 100, Unit: Second},
		{RequestsPerUnit: 3, Unit: Second, Burst: 7},
		{RequestsPerUnit: 7, Unit: Minute, UnitMultiplier: 3},
		{RequestsPerUnit: 1000003, Unit: Hour},
		{RequestsPerUnit: 1, Unit: Year},
	}
	for _, rl := range rates {
		r, err := rl.Rate()
		if err != nil {
			t.Fatal(err)
		}
		capD := int64(r.Cap * r.Den)
		for i := 0; i < 2000; i++ {
			now := int64(1_700_000_000_000_000) + rnd.Int64N(1_000_000_000)
			d := 1 + rnd.Int64N(capD)
			st := Encode(d, now, r)
			if st.Slack < 0 || st.Slack >= 1000*int64(r.Num) {
				t.Fatalf("%+v: slack %d out of range", rl, st.Slack)
			}
			if st.FullAtMs*1000 < now {
				t.Fatalf("%+v: full at %d before now %d", rl, st.FullAtMs, now)
			}
			if got := st.Debt(now, r); got != d {
				t.Fatalf("%+v: debt %d read back as %d", rl, d, got)
			}
			// Time repays Num per microsecond.
			step := rnd.Int64N(1000)
			want := d - step*int64(r.Num)
			if want < 0 {
				want = 0
			}
			if got := st.Debt(now+step, r); got != want {
				t.Fatalf("%+v: debt after %dus = %d, want %d", rl, step, got, want)
			}
		}
	}
}

// TestDebtUnderAnotherRate reads buckets stored under one rate with
// another (a limit change): the debt read stays within a millisecond of
// refill of the stored one, and between writes it never falls faster than
// the read rate refills, so a bound taken from one answer holds for the
// next. A slack stored under a larger Num than the reader's broke both.
func TestDebtUnderAnotherRate(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	var rates []Rate
	for _, rl := range []RateLimit{
		{RequestsPerUnit: 10, Unit: Second, Burst: 5},
		{RequestsPerUnit: 3, Unit: Second},
		{RequestsPerUnit: 7, Unit: Second, Burst: 1},
		{RequestsPerUnit: 100, Unit: Minute, Burst: 20},
		{RequestsPerUnit: 1000003, Unit: Hour},
	} {
		r, err := rl.Rate()
		if err != nil {
			t.Fatal(err)
		}
		rates = append(rates, r)
	}
	for _, w := range rates {
		for _, r := range rates {
			nw, nr := int64(w.Num), int64(r.Num)
			edge := r.Bound()/nr + 1000 // where the read stops being capped
			for i := 0; i < 20; i++ {
				now := int64(1_000_000_000) + rnd.Int64N(1_000_000)
				d := 1 + rnd.Int64N(w.Bound())
				st := Encode(d, now, w)
				full := st.FullAtMs * 1000
				// Read through every microsecond around the edge of the
				// cap, where a slack read wrong shows as a jump.
				from := max(now, full-edge-2000)
				prev := st.Debt(from, r)
				for at := from + 1; at <= full && at < from+4000; at++ {
					got := st.Debt(at, r)
					if got > prev || got < prev-nr {
						t.Fatalf("stored %+v under %+v (debt %d at %d), read under %+v: debt %d at %d, %d at %d",
							st, w, d, now, r, prev, at-1, got, at)
					}
					prev = got
					if got == 0 || got == r.Bound() {
						continue
					}
					// |got/nr - (d/nw - (at-now))| < 1000 microseconds
					off := new(big.Int).Mul(big.NewInt(got), big.NewInt(nw))
					off.Sub(off, new(big.Int).Mul(big.NewInt(d-(at-now)*nw), big.NewInt(nr)))
					off.Abs(off)
					if off.Cmp(big.NewInt(1000*nr*nw)) >= 0 {
						t.Fatalf("stored %+v under %+v (debt %d at %d), read under %+v at %d: debt %d, off by %s/%d us",
							st, w, d, now, r, at, got, off, nr*nw)
					}
				}
			}
		}
	}
}

func TestHasLimitName(t *testing.T) {
	l := mustCompile(t, DomainConfig{Domain: "edge", Descriptors: []DescriptorConfig{
		{Key: "path", Value: "/login", RateLimit: named("login")},
		{Key: "path", Value: "/api/*", RateLimit: named("api")},
		{Key: "path", RateLimit: named("any-path")},
		{Key: "tenant", Value: "acme*", Descriptors: []DescriptorConfig{
			{Key: "plan", Value: "free", RateLimit: named("acme-free")},
		}},
		{Key: "ip", RateLimit: &RateLimit{RequestsPerUnit: 1, Unit: Second}},
	}}, DomainConfig{Domain: "other", Descriptors: []DescriptorConfig{{Key: "k", RateLimit: named("elsewhere")}}})
	for _, name := range []string{"login", "api", "any-path", "acme-free"} {
		if !l.HasLimitName("edge", name) {
			t.Errorf("HasLimitName(edge, %q) = false", name)
		}
	}
	for _, c := range [][2]string{{"edge", "elsewhere"}, {"edge", ""}, {"edge", "ip"}, {"missing", "login"}, {"other", "login"}} {
		if l.HasLimitName(c[0], c[1]) {
			t.Errorf("HasLimitName(%q, %q) = true", c[0], c[1])
		}
	}
	var none *Limits
	if none.HasLimitName("edge", "login") {
		t.Error("nil limits have a name")
	}
}

// TestMetricKeyOnlyWithFlags: only rules whose metrics ask for it get a
// metric key (the others keep their Path, and count without building a
// label); a flag below a rule or on a sibling does not reach it, one above
// it does.
func TestMetricKeyOnlyWithFlags(t *testing.T) {
	l := mustCompile(t, DomainConfig{Domain: "d", Descriptors: []DescriptorConfig{
		{Key: "plain", RateLimit: named("")},
		{Key: "top", ValueToMetric: true, Descriptors: []DescriptorConfig{
			{Key: "below", RateLimit: named("")},
		}},
		{Key: "parent", RateLimit: named(""), Descriptors: []DescriptorConfig{
			{Key: "child", ValueToMetric: true, DetailedMetric: true, RateLimit: named("")},
		}},
		{Key: "sibling", ValueToMetric: true},
		{Key: "exact", Value: "v", ValueToMetric: true, RateLimit: named("")},
	}})
	for _, c := range []struct {
		entries []Entry
		key     string // "" for no metric key
		static  bool
	}{
		{[]Entry{{"plain", "x"}}, "", false},
		{[]Entry{{"top", "a"}, {"below", "b"}}, "top_a.below", false},
		{[]Entry{{"parent", "p"}}, "", false},
		{[]Entry{{"parent", "p"}, {"child", "c"}}, "parent_p.child_c", false},
		// value_to_metric on a configured value writes that value: the
		// key is the same for every request.
		{[]Entry{{"exact", "v"}}, "exact_v", true},
	} {
		r, _ := l.Match("d", c.entries, nil)
		if r == nil {
			t.Fatalf("%v: no rule", c.entries)
		}
		if c.key == "" {
			if r.MetricKey != nil {
				t.Errorf("%v: metric key %q, want none", c.entries, r.MetricKey.Append(nil, c.entries))
			}
			continue
		}
		if r.MetricKey == nil {
			t.Fatalf("%v: no metric key, want %q", c.entries, c.key)
		}
		if got := string(r.MetricKey.Append(nil, c.entries)); got != c.key {
			t.Errorf("%v: metric key %q, want %q", c.entries, got, c.key)
		}
		if s, ok := r.MetricKey.Static(); ok != c.static || (ok && s != c.key) {
			t.Errorf("%v: Static() = %q, %v; want static %v", c.entries, s, ok, c.static)
		}
	}
}

// Under the global quota mode a default charge never applies: every limit
// that states no charge is a quota-mode rule, and stays admission; one
// that states usage stays usage (and not quota).
func TestGlobalQuotaModeKeepsDefaultChargeOff(t *testing.T) {
	ds, err := ParseLimitFile("q.yaml", []byte(`domain: d
descriptors:
  - key: backend
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: tokens
    rate_limit: {unit: second, requests_per_unit: 10, charge: usage}
`))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Compile([]DomainConfig{ds}, CompileOptions{QuotaMode: true, DefaultCharge: ChargeUsage})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]Charge{"backend": ChargeAdmission, "tokens": ChargeUsage} {
		r, _ := l.Match("d", []Entry{{Key: key, Value: "x"}}, nil)
		if r == nil {
			t.Fatalf("%s: no rule", key)
		}
		if r.Limit.Charge != want {
			t.Errorf("%s: charge %v, want %v", key, r.Limit.Charge, want)
		}
	}
}
