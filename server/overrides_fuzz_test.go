package server

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
		`{"domain":"edge","descriptors":[{"key":"k","value":"a\u0000b"}],"rate_limit":{"unit":"second","requests_per_unit":5}}`,
		`{"domain":"edge","descriptors":[{"key":"k","value":"\ud800"}],"rate_limit":{"unit":"second","requests_per_unit":5}}`,
		"{\"domain\":\"e\xffdge\",\"descriptors\":[{\"key\":\"k\"}],\"rate_limit\":{\"unit\":\"second\",\"requests_per_unit\":5}}",
		`{"domain":"edge","descriptors":[{"key":"k"}],"rate_limit":{"unit":"second","requests_per_unit":5,"name":"\ud83d\ude00","replaces":[{"name":"x\u0000"}]},"reason":"a\tb\u0007"}`,
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
		// Nothing Postgres would refuse, or encoding/json would have
		// changed, is accepted.
		texts := []string{o.Domain, o.Reason, o.RateLimit.Name}
		for _, e := range o.Descriptors {
			texts = append(texts, e.Key, e.Value)
		}
		texts = append(texts, o.RateLimit.Replaces...)
		for _, s := range texts {
			// U+FFFD is there only when the body wrote it, not made up
			// for invalid UTF-8 or a lone surrogate.
			madeUp := strings.ContainsRune(s, utf8.RuneError) &&
				!bytes.Contains(body, []byte("\uFFFD")) && !bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
			if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) || madeUp {
				t.Fatalf("accepted %q holding text %q", body, s)
			}
		}
		for _, r := range o.Reason {
			if r < 0x20 && r != '\t' {
				t.Fatalf("accepted %q with a control character in reason %q", body, o.Reason)
			}
		}
		merged := limiter.MergeOverrides(domains, []limiter.Override{o})
		if _, err := limiter.Compile(merged, limiter.CompileOptions{}); err != nil {
			t.Fatalf("accepted %s but the merged tree does not compile: %v", body, err)
		}
	})
}

// TestActorText covers what the HTTP client in the end-to-end tests cannot
// send: control characters in the actor header.
func TestActorText(t *testing.T) {
	for _, c := range []struct{ actor, want string }{
		{"alice", ""},
		{"al\tice", ""},
		{"zoë 🚀", ""},
		{"a\x00b", "contains a NUL byte"},
		{"a\x01b", "contains the control character U+0001"},
		{"a\nb", "contains the control character U+000A"},
		{"a\x7fb", "contains the control character U+007F"},
		{"a\u0085b", "contains the control character U+0085"},
		{"a\xffb", "is not valid UTF-8"},
	} {
		r, _ := http.NewRequest("PUT", "/admin/overrides", nil)
		r.Header[ActorHeader] = []string{c.actor}
		got, err := actor(r)
		switch {
		case c.want == "" && (err != nil || got != c.actor):
			t.Errorf("actor %q = %q, %v; want it kept", c.actor, got, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), ActorHeader+": "+c.want)):
			t.Errorf("actor %q: error %v, want %q", c.actor, err, c.want)
		}
	}
}
