//go:build integration

package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server"
)

func TestAdminOverridesCRUD(t *testing.T) {
	db := pgDB(t, limitertest.StartPostgres(t))
	h := overrideServer(t, db, nil)

	body := `{"domain":"edge","descriptors":[{"key":"remote_address","value":"10.0.0.7"}],
		"rate_limit":{"unit":"second","requests_per_unit":50,"burst":100},
		"reason":"partner load test","expires_at":"2099-12-01T00:00:00Z"}`
	code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, body, server.ActorHeader, "alice")
	if code != 200 {
		t.Fatalf("PUT = %d %s", code, out)
	}
	var created limiter.Override
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	if created.ID == 0 || created.UpdatedBy != "alice" || created.RateLimit.Burst != 100 || created.ExpiresAt.Year() != 2099 {
		t.Fatalf("created %+v", created)
	}
	for _, want := range []string{`"id":`, `"rate_limit": {`, `"unit": "second"`, `"expires_at": "2099-12-01T00:00:00Z"`} {
		if !strings.Contains(out, want) {
			t.Errorf("PUT answer lacks %s:\n%s", want, out)
		}
	}

	// The same path again is an update, by the default actor.
	code, out = adminDo(t, h.base, "PUT", "/admin/overrides", bearer,
		`{"domain":"edge","descriptors":[{"key":"remote_address","value":"10.0.0.7"}],"rate_limit":{"unit":"minute","requests_per_unit":0}}`)
	if code != 200 {
		t.Fatalf("second PUT = %d %s", code, out)
	}
	var updated limiter.Override
	if err := json.Unmarshal([]byte(out), &updated); err != nil {
		t.Fatalf("second PUT answer %q: %v", out, err)
	}
	if updated.ID != created.ID || updated.UpdatedBy != server.DefaultActor || !updated.RateLimit.Banned() {
		t.Fatalf("updated %+v", updated)
	}

	id := "/admin/overrides/" + jsonNumber(created.ID)
	code, out = adminDo(t, h.base, "GET", "/admin/overrides", bearer, "")
	if code != 200 || !strings.Contains(out, `"overrides": [`) || strings.Count(out, `"domain"`) != 1 {
		t.Fatalf("GET list = %d %s", code, out)
	}
	if code, out = adminDo(t, h.base, "GET", id, bearer, ""); code != 200 || !strings.Contains(out, `"requests_per_unit": 0`) {
		t.Fatalf("GET one = %d %s", code, out)
	}
	if code, out = adminDo(t, h.base, "DELETE", id, bearer, "", server.ActorHeader, "bob"); code != 204 || out != "" {
		t.Fatalf("DELETE = %d %q", code, out)
	}
	for _, c := range []struct{ method, path string }{{"GET", id}, {"DELETE", id}, {"GET", "/admin/overrides/424242/history"}} {
		if code, out = adminDo(t, h.base, c.method, c.path, bearer, ""); code != 404 {
			t.Errorf("%s %s after delete = %d %s, want 404", c.method, c.path, code, out)
		}
	}
	if code, out = adminDo(t, h.base, "GET", "/admin/overrides/x1", bearer, ""); code != 400 || !strings.Contains(out, "id:") {
		t.Errorf("GET bad id = %d %s", code, out)
	}

	code, out = adminDo(t, h.base, "GET", id+"/history", bearer, "")
	if code != 200 {
		t.Fatalf("history = %d %s", code, out)
	}
	var hist struct {
		History []limiter.OverrideChange `json:"history"`
	}
	if err := json.Unmarshal([]byte(out), &hist); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range hist.History {
		got = append(got, e.Action+" by "+e.Actor)
	}
	if want := "create by alice, update by admin, delete by bob"; strings.Join(got, ", ") != want {
		t.Fatalf("history %v, want %s", got, want)
	}
	if hist.History[1].Old == nil || hist.History[1].Old.RateLimit.RequestsPerUnit != 50 || hist.History[1].New.RateLimit.RequestsPerUnit != 0 {
		t.Fatalf("update entry %+v", hist.History[1])
	}
}

// TestAdminOverrideReplaces: an override may replace a limit of its domain
// by name, from the files or from another stored override, as a limit file
// may; the stored one counts before this replica has applied it.
func TestAdminOverrideReplaces(t *testing.T) {
	db := pgDB(t, limitertest.StartPostgres(t))
	h := overrideServer(t, db, nil) // stores but never applies: no syncer
	put := func(body string) (int, string) {
		return adminDo(t, h.base, "PUT", "/admin/overrides", bearer, body)
	}
	if code, out := put(`{"domain":"edge","descriptors":[{"key":"user","value":"u1"}],
		"rate_limit":{"unit":"second","requests_per_unit":5,"name":"vip","replaces":[{"name":"global"}]}}`); code != 200 {
		t.Fatalf("replaces a file limit: %d %s", code, out)
	}
	if code, out := put(`{"domain":"edge","descriptors":[{"key":"user","value":"u2"}],
		"rate_limit":{"unit":"second","requests_per_unit":5,"replaces":[{"name":"global"},{"name":"vip"}]}}`); code != 200 {
		t.Fatalf("replaces a stored override's limit: %d %s", code, out)
	}
	for _, c := range []struct{ body, want string }{
		{`{"domain":"edge","descriptors":[{"key":"user","value":"u3"}],"rate_limit":{"unit":"second","requests_per_unit":5,"replaces":[{"name":"vipp"}]}}`,
			`rate_limit.replaces[0].name: \"vipp\" names no limit of domain \"edge\"`},
		// vip is another domain's name there.
		{`{"domain":"match","descriptors":[{"key":"k","value":"x"}],"rate_limit":{"unit":"second","requests_per_unit":5,"replaces":[{"name":"vip"}]}}`,
			`rate_limit.replaces[0].name: \"vip\" names no limit of domain \"match\"`},
		// The override that names vip cannot lean on its own old name.
		{`{"domain":"edge","descriptors":[{"key":"user","value":"u1"}],"rate_limit":{"unit":"second","requests_per_unit":5,"replaces":[{"name":"vip"}]}}`,
			`rate_limit.replaces[0].name: \"vip\" names no limit of domain \"edge\"`},
	} {
		if code, out := put(c.body); code != 400 || !strings.Contains(out, c.want) {
			t.Errorf("PUT %s = %d %s, want 400 with %s", c.body, code, out, c.want)
		}
	}
}

// TestAdminOverridesPostgresDown: with Postgres stopped admin calls answer
// 503 with the breaker's state while decisions go on; when it is back the
// same server works again.
func TestAdminOverridesPostgresDown(t *testing.T) {
	pg := limitertest.NewPostgresServer(t)
	db := pgDB(t, pg.DSN)
	bc := breaker.DefaultConfig()
	bc.ConsecutiveFailures = 2
	bc.OpenDuration = 300 * time.Millisecond
	br, err := breaker.New("postgres", bc)
	if err != nil {
		t.Fatal(err)
	}
	h := overrideServer(t, db, br, withChecks(server.Check{Name: "postgres", Fn: db.Ping, Optional: true, Breaker: br}))
	put := `{"domain":"edge","descriptors":[{"key":"remote_address","value":"10.0.0.7"}],"rate_limit":{"unit":"second","requests_per_unit":50}}`
	if code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, put); code != 200 {
		t.Fatalf("PUT with Postgres up = %d %s", code, out)
	}

	pg.Stop()
	states := map[string]bool{}
	for i := 0; i < 4; i++ {
		for _, r := range []struct{ method, path, body string }{
			{"PUT", "/admin/overrides", put}, {"GET", "/admin/overrides", ""}, {"GET", "/admin/overrides/1", ""},
			{"DELETE", "/admin/overrides/1", ""}, {"GET", "/admin/overrides/1/history", ""},
		} {
			code, out := adminDo(t, h.base, r.method, r.path, bearer, r.body)
			var e struct {
				Error   string               `json:"error"`
				Breaker *server.BreakerState `json:"breaker"`
			}
			if _ = json.Unmarshal([]byte(out), &e); code != 503 || e.Breaker == nil || !strings.Contains(e.Error, "overrides unavailable") {
				t.Fatalf("%s %s with Postgres down = %d %s, want 503 with the breaker", r.method, r.path, code, out)
			}
			states[e.Breaker.State] = true
		}
		resp := h.mustCall(req("edge", desc(kv{"remote_address", "1.2.3.4"})))
		if resp.OverallCode.String() != "OK" {
			t.Fatalf("decision with Postgres down: %v", resp)
		}
	}
	if !states["open"] {
		t.Fatalf("breaker states seen %v, want it to open", states)
	}

	pg.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := adminDo(t, h.base, "GET", "/admin/overrides", bearer, "")
		if code == 200 && strings.Contains(out, "10.0.0.7") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin API did not come back: %d %s", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
