package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-rl/sluice/server"
)

func TestJSON(t *testing.T) {
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.HTTP.MaxBodyBytes = 2048 }))
	body := `{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"9.9.9.9"}],"hits_addend":19}]}`

	resp, out := h.postJSON(body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, out)
	}
	var rr rlsv3.RateLimitResponse
	if err := protojson.Unmarshal([]byte(out), &rr); err != nil {
		t.Fatalf("response is not protojson: %v\n%s", err, out)
	}
	check(t, &rr, OK, want{OK, "-", 1, 1900 * time.Millisecond})
	if g, w := resp.Header.Get("X-RateLimit-Limit"), "10, 10;w=1"; g != w {
		t.Errorf("X-RateLimit-Limit = %q, want %q", g, w)
	}
	if g := resp.Header.Get("X-RateLimit-Remaining"); g != "1" {
		t.Errorf("X-RateLimit-Remaining = %q", g)
	}
	if g := resp.Header.Get("X-RateLimit-Reset"); g != "2" {
		t.Errorf("X-RateLimit-Reset = %q", g)
	}
	if g := resp.Header.Get("Retry-After"); g != "" {
		t.Errorf("Retry-After = %q on 200", g)
	}

	// Over limit: 429, Retry-After rounded up.
	resp, out = h.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"9.9.9.9"}],"hits_addend":5}]}`)
	if resp.StatusCode != 429 {
		t.Fatalf("status %d %s, want 429", resp.StatusCode, out)
	}
	if g := resp.Header.Get("Retry-After"); g != "1" {
		t.Errorf("Retry-After = %q, want 1", g)
	}
	if !strings.Contains(out, `"overall_code":"OVER_LIMIT"`) {
		t.Errorf("body = %s", out)
	}
	h.clock.Advance(1500 * time.Millisecond)
	h.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"user","value":"j"}]}]}`)
	resp, _ = h.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"user","value":"j"}]}]}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "60" {
		t.Errorf("status %d Retry-After %q, want 429 and 60", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	for _, c := range []struct {
		name string
		body string
		code int
		msg  string
	}{
		{"bad json", `{"domain":`, 400, "body: "},
		{"unknown field", `{"domain":"edge","descriptorz":[]}`, 400, "descriptorz"},
		{"empty domain", `{"descriptors":[{"entries":[{"key":"k","value":"v"}]}]}`, 400, "domain: must not be empty"},
		{"empty key", `{"domain":"edge","descriptors":[{"entries":[{"value":"v"}]}]}`, 400, "descriptors[0].entries[0].key"},
		{"too large", `{"domain":"edge","descriptors":[{"entries":[{"key":"k","value":"` + strings.Repeat("x", 3000) + `"}]}]}`, 413, "bound of 2048"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, out := h.postJSON(c.body)
			if resp.StatusCode != c.code {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, out, c.code)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(out), &e); err != nil || !strings.Contains(e.Error, c.msg) {
				t.Errorf("body %s, want an error containing %q", out, c.msg)
			}
		})
	}
	if code, _ := h.get("/json"); code != 405 {
		t.Errorf("GET /json = %d, want 405", code)
	}
}

func TestJSONHeadersOff(t *testing.T) {
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.ResponseHeaders.Enabled = false }))
	body := `{"domain":"edge","descriptors":[{"entries":[{"key":"user","value":"k"}]}]}`
	resp, _ := h.postJSON(body)
	if resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Limit") != "" {
		t.Errorf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	resp, _ = h.postJSON(body)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "60" || resp.Header.Get("X-RateLimit-Remaining") != "" {
		t.Errorf("status %d headers %v; want 429 with Retry-After only", resp.StatusCode, resp.Header)
	}
}

func TestJSONUnavailable(t *testing.T) {
	h := start(t, edgeDomains(), false, withStore(failStore{}))
	resp, out := h.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"user","value":"k"}]}]}`)
	if resp.StatusCode != 503 {
		t.Errorf("status %d %s, want 503", resp.StatusCode, out)
	}
}
