package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/postgres"
	"github.com/sluice-rl/sluice/server"
)

const adminToken = "s3cret-admin-token-of-32-characters"

// adminDo sends one admin request with the token (auth "" sends none) and
// returns the status and body.
func adminDo(t *testing.T, base, method, path, auth, body string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const bearer = "Bearer " + adminToken

// overrideServer is a server with the override routes on db.
func overrideServer(t *testing.T, store server.OverrideStore, br *breaker.Breaker, opts ...option) *harness {
	t.Helper()
	opts = append(opts, withOptions(func(o *server.Options) { o.AdminToken = adminToken }))
	h := start(t, edgeDomains(), false, opts...)
	h.srv.HandleOverrides(server.OverridesOptions{Store: store, Breaker: br})
	return h
}

func pgDB(t *testing.T, dsn string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(postgres.Config{DSN: dsn, QueryTimeout: 500 * time.Millisecond, ConnectTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

func jsonNumber(n int64) string { b, _ := json.Marshal(n); return string(b) }

// refusingStore fails the test when called: bad requests must not reach it.
type refusingStore struct{ t *testing.T }

func (s refusingStore) fail() { s.t.Errorf("the store was called") }

func (s refusingStore) PutOverride(context.Context, limiter.Override, string) (limiter.Override, bool, error) {
	s.fail()
	return limiter.Override{}, false, errors.New("no")
}

func (s refusingStore) GetOverride(context.Context, int64) (limiter.Override, error) {
	s.fail()
	return limiter.Override{}, errors.New("no")
}

func (s refusingStore) ListOverrides(context.Context) ([]limiter.Override, error) {
	s.fail()
	return nil, errors.New("no")
}

func (s refusingStore) DeleteOverride(context.Context, int64, string) (limiter.Override, error) {
	s.fail()
	return limiter.Override{}, errors.New("no")
}

func (s refusingStore) OverrideHistory(context.Context, int64) ([]limiter.OverrideChange, error) {
	s.fail()
	return nil, errors.New("no")
}

func TestAdminOverrideBadBodies(t *testing.T) {
	h := overrideServer(t, refusingStore{t}, nil)
	path := func(n int) string {
		var parts []string
		for i := 0; i < n; i++ {
			parts = append(parts, `{"key":"k","value":"v"}`)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	const desc = `"descriptors":[{"key":"remote_address","value":"1.2.3.4"}]`
	const rl = `"rate_limit":{"unit":"second","requests_per_unit":5}`
	tests := []struct {
		name, body, field string
	}{
		{"unknown unit", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"fortnight","requests_per_unit":5}}`, "rate_limit.unit"},
		{"negative requests_per_unit", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"second","requests_per_unit":-5}}`, "rate_limit.requests_per_unit"},
		{"negative burst", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"second","requests_per_unit":5,"burst":-1}}`, "rate_limit.burst"},
		{"unknown field", `{"domain":"edge",` + desc + `,` + rl + `,"color":"red"}`, "color"},
		{"unknown field in a descriptor", `{"domain":"edge","descriptors":[{"key":"a","value":"b","weight":1}],` + rl + `}`, "weight"},
		{"unknown field in rate_limit", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"second","requests_per_unit":5,"brust":9}}`, "rate_limit.brust"},
		{"path too long", `{"domain":"edge","descriptors":` + path(17) + `,` + rl + `}`, "descriptors"},
		{"domain missing", `{` + desc + `,` + rl + `}`, "domain"},
		{"domain missing, no rate_limit either", `{` + desc + `}`, "domain"},
		{"descriptors missing", `{"domain":"edge",` + rl + `}`, "descriptors"},
		{"empty key", `{"domain":"edge","descriptors":[{"value":"x"}],` + rl + `}`, "descriptors[0].key"},
		{"rate_limit missing", `{"domain":"edge",` + desc + `}`, "rate_limit"},
		{"rate_limit null", `{"domain":"edge",` + desc + `,"rate_limit":null}`, "rate_limit"},
		{"unlimited with a unit", `{"domain":"edge",` + desc + `,"rate_limit":{"unlimited":true,"unit":"second"}}`, "rate_limit.unit"},
		{"usage on a ban", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"second","requests_per_unit":0,"charge":"usage"}}`, "rate_limit.charge"},
		{"unknown charge", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"second","requests_per_unit":5,"charge":"later"}}`, "rate_limit.charge"},
		{"max_debt on admission", `{"domain":"edge",` + desc + `,"rate_limit":{"unit":"second","requests_per_unit":5,"max_debt":9}}`, "rate_limit.max_debt"},
		{"expiry in the past", `{"domain":"edge",` + desc + `,` + rl + `,"expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
		{"expiry not a time", `{"domain":"edge",` + desc + `,` + rl + `,"expires_at":"tomorrow"}`, "expires_at"},
		{"domain a number", `{"domain":7,` + desc + `,` + rl + `}`, "domain"},
		{"descriptors an object", `{"domain":"edge","descriptors":{"key":"a"},` + rl + `}`, "descriptors"},
		{"not JSON", `domain=edge`, "body"},
		{"truncated", `{"domain":"edge"`, "body"},
		{"two objects", `{"domain":"edge",` + desc + `,` + rl + `} {}`, "body"},
		{"empty", ``, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, tt.body)
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal([]byte(out), &e) // a bad body leaves e empty, which the checks below report
			if code != 400 || !strings.HasPrefix(e.Error, tt.field+": ") {
				t.Fatalf("PUT = %d %s; want 400 naming %s", code, out, tt.field)
			}
			t.Logf("%s", e.Error)
		})
	}
	if code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, `{"domain":"edge",`+desc+`,`+rl+`}`,
		server.ActorHeader, strings.Repeat("a", 300)); code != 400 || !strings.Contains(out, server.ActorHeader) {
		t.Fatalf("long actor: %d %s", code, out)
	}
}

// TestAdminRoutesRequireToken: every admin route refuses a missing or
// wrong token, and with no token configured the admin API is off.
func TestAdminRoutesRequireToken(t *testing.T) {
	routes := []struct{ method, path, body string }{
		{"PUT", "/admin/overrides", `{"domain":"edge","descriptors":[{"key":"a","value":"b"}],"rate_limit":{"unlimited":true}}`},
		{"GET", "/admin/overrides", ""},
		{"GET", "/admin/overrides/1", ""},
		{"DELETE", "/admin/overrides/1", ""},
		{"GET", "/admin/overrides/1/history", ""},
		{"GET", "/admin/config", ""},
		{"POST", "/admin/reload", ""},
		{"POST", "/admin/breakers/postgres/reset", ""},
		{"GET", "/admin/debug/pprof/heap", ""},
		{"GET", "/admin/debug/pprof/profile?seconds=1", ""},
		{"GET", "/admin/nonexistent", ""},
	}
	cfgOpts := server.ConfigOptions{
		Effective: func() ([]limiter.DomainConfig, string) { t.Error("config read without a token"); return nil, "" },
		Reload:    func() (string, error) { t.Error("reload without a token"); return "", nil },
	}
	for _, admin := range []struct {
		name string
		opts []option
		addr func(h *harness) string
	}{
		{name: "on the http address", addr: func(h *harness) string { return h.base }},
		{name: "on its own address", opts: []option{withConfig(func(c *server.Config) { c.HTTP.AdminAddr = "127.0.0.1:0" })},
			addr: func(h *harness) string { return "http://" + h.srv.AdminAddr().String() }},
	} {
		t.Run(admin.name, func(t *testing.T) {
			h := overrideServer(t, refusingStore{t}, nil, admin.opts...)
			h.srv.HandleConfig(cfgOpts)
			base := admin.addr(h)
			for _, r := range routes {
				for _, auth := range []string{"", "Bearer wrong", "Bearer " + adminToken + "x", "Bearer " + adminToken[:len(adminToken)-1],
					"bearer " + adminToken, "Basic " + adminToken, adminToken} {
					code, out := adminDo(t, base, r.method, r.path, auth, r.body)
					if code != 401 || !strings.Contains(out, "bearer token") {
						t.Errorf("%s %s with Authorization %q = %d %s, want 401", r.method, r.path, auth, code, out)
					}
				}
			}
		})
	}
	t.Run("off without a token", func(t *testing.T) {
		h := start(t, edgeDomains(), false)
		h.srv.HandleOverrides(server.OverridesOptions{Store: refusingStore{t}})
		h.srv.HandleConfig(cfgOpts)
		for _, r := range routes {
			if code, out := adminDo(t, h.base, r.method, r.path, "Bearer anything", r.body); code != 404 {
				t.Errorf("%s %s = %d %s, want 404", r.method, r.path, code, out)
			}
		}
	})
}

// TestAdminOwnAddress: with http.admin_addr the admin API answers there
// and not on the public HTTP address, which keeps serving the rest.
func TestAdminOwnAddress(t *testing.T) {
	h := overrideServer(t, refusingStore{t}, nil, withConfig(func(c *server.Config) { c.HTTP.AdminAddr = "127.0.0.1:0" }))
	h.srv.HandleConfig(server.ConfigOptions{
		Effective: func() ([]limiter.DomainConfig, string) { return edgeDomains(), "v1" },
		Reload:    func() (string, error) { return "v1", nil },
	})
	admin := "http://" + h.srv.AdminAddr().String()
	if admin == h.base {
		t.Fatal("admin shares the http address")
	}
	if code, out := adminDo(t, admin, "GET", "/admin/config", bearer, ""); code != 200 {
		t.Fatalf("admin address: GET /admin/config = %d %s", code, out)
	}
	if code, _ := adminDo(t, h.base, "GET", "/admin/config", bearer, ""); code != 404 {
		t.Fatalf("http address: GET /admin/config = %d, want 404", code)
	}
	if code, _ := h.get("/health/live"); code != 200 {
		t.Fatalf("http address: /health/live = %d", code)
	}
	if code, _ := adminDo(t, admin, "GET", "/health/live", "", ""); code != 404 {
		t.Fatalf("admin address serves /health/live: %d", code)
	}
}

func TestAdminConfigAndReload(t *testing.T) {
	reloadErr := error(nil)
	h := overrideServer(t, refusingStore{t}, nil)
	merged := limiter.MergeOverrides(edgeDomains(), []limiter.Override{{
		Domain: "edge", Descriptors: []limiter.OverrideEntry{{Key: "remote_address", Value: "10.0.0.7"}},
		RateLimit: limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 50, Burst: 100},
	}})
	h.srv.HandleConfig(server.ConfigOptions{
		Effective: func() ([]limiter.DomainConfig, string) { return merged, "sha256:abc" },
		Reload:    func() (string, error) { return "sha256:def", reloadErr },
	})
	code, out := adminDo(t, h.base, "GET", "/admin/config?format=yaml", bearer, "")
	if code != 200 || !strings.Contains(out, "value: 10.0.0.7") || !strings.Contains(out, "burst: 100") || !strings.HasPrefix(out, "domains:") {
		t.Fatalf("GET yaml = %d\n%s", code, out)
	}
	code, out = adminDo(t, h.base, "GET", "/admin/config", bearer, "")
	var doc struct {
		Domains []struct {
			Domain string `json:"domain"`
		} `json:"domains"`
	}
	if code != 200 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Domains) == 0 {
		t.Fatalf("GET json = %d\n%s", code, out)
	}
	if code, out = adminDo(t, h.base, "GET", "/admin/config", bearer, "", "Accept", "application/yaml"); code != 200 || !strings.HasPrefix(out, "domains:") {
		t.Fatalf("Accept yaml = %d\n%s", code, out)
	}
	if code, out = adminDo(t, h.base, "GET", "/admin/config?format=toml", bearer, ""); code != 400 || !strings.Contains(out, "format:") {
		t.Fatalf("format=toml = %d %s", code, out)
	}
	if code, out = adminDo(t, h.base, "POST", "/admin/reload", bearer, ""); code != 200 || !strings.Contains(out, "sha256:def") {
		t.Fatalf("reload = %d %s", code, out)
	}
	reloadErr = errors.New("limits/a.yaml:3: unit: unknown unit")
	if code, out = adminDo(t, h.base, "POST", "/admin/reload", bearer, ""); code != 422 || !strings.Contains(out, "a.yaml:3") {
		t.Fatalf("failed reload = %d %s", code, out)
	}
}
