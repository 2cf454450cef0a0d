//go:build integration

package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/postgres"
	"github.com/sluice-rl/sluice/server"
)

// waitStatus polls /health/detailed until its status is want, for up to
// 10s, and returns the last body.
func waitStatus(t *testing.T, h *harness, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := h.get("/health/detailed")
		var d server.DetailedHealth
		if json.Unmarshal([]byte(body), &d) == nil && d.Status == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never %s; last:\n%s", want, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pgBreakerServer is an override server on a fresh Postgres, with the
// Postgres check and a breaker that trips on 5 failures in a row.
func pgBreakerServer(t *testing.T, store func(*postgres.DB) server.OverrideStore) (*harness, *breaker.Breaker, *limitertest.PostgresServer) {
	t.Helper()
	pg := limitertest.NewPostgresServer(t)
	db := pgDB(t, pg.DSN)
	bc := breaker.DefaultConfig()
	bc.OpenDuration = time.Minute // a trip stays visible for the whole test
	br, err := breaker.New("postgres", bc)
	if err != nil {
		t.Fatal(err)
	}
	h := overrideServer(t, store(db), br, withChecks(server.Check{Name: "postgres", Fn: db.Ping, Optional: true, Breaker: br}))
	waitStatus(t, h, server.StatusPass)
	return h, br, pg
}

// TestAdminOverrideBadText sends text Postgres cannot store, or that
// encoding/json would quietly change: each is a 400 naming the field, and
// a run of them leaves the breaker closed and health passing.
func TestAdminOverrideBadText(t *testing.T) {
	h, br, _ := pgBreakerServer(t, func(db *postgres.DB) server.OverrideStore { return db })
	body := func(domain, key, value, reason string) string {
		return `{"domain":"` + domain + `","descriptors":[{"key":"k"},{"key":"` + key + `","value":"` + value +
			`"}],"rate_limit":{"unit":"second","requests_per_unit":5},"reason":"` + reason + `"}`
	}
	for _, c := range []struct {
		name, body, want string
	}{
		{"nul value", body("edge", "path", `a\u0000b`, ""), "descriptors[1].value: contains a NUL byte"},
		{"nul domain", body(`e\u0000`, "path", "v", ""), "domain: contains a NUL byte"},
		{"nul key", body("edge", `p\u0000`, "v", ""), "descriptors[1].key: contains a NUL byte"},
		{"invalid utf-8 value", body("edge", "path", "a\xffb", ""), "descriptors[1].value: is not valid UTF-8"},
		{"utf-8 surrogate value", body("edge", "path", "\xed\xa0\x80", ""), "descriptors[1].value: is not valid UTF-8"},
		{"invalid utf-8 domain", body("ed\xc3", "path", "v", ""), "domain: is not valid UTF-8"},
		{"lone high surrogate", body("edge", "path", `\ud800`, ""), `descriptors[1].value: contains a lone surrogate escape \ud800`},
		{"lone low surrogate", body("edge", "path", `x\udc00y`, ""), `descriptors[1].value: contains a lone surrogate escape \udc00`},
		{"high surrogate then text", body("edge", `\ud83dx`, "v", ""), `descriptors[1].key: contains a lone surrogate escape \ud83d`},
		{"nul reason", body("edge", "path", "v", `a\u0000`), "reason: contains a NUL byte"},
		{"newline reason", body("edge", "path", "v", `a\nb`), `reason: contains a control character (\n)`},
		{"c0 reason", body("edge", "path", "v", `a\u001bb`), "reason: contains the control character U+001B"},
		{"invalid utf-8 reason", body("edge", "path", "v", "\x80"), "reason: is not valid UTF-8"},
		{"nul name", `{"domain":"edge","descriptors":[{"key":"k","value":"v"}],"rate_limit":{"unit":"second","requests_per_unit":5,"name":"n\u0000"}}`,
			"rate_limit.name: contains a NUL byte"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, c.body)
			var e struct{ Error string }
			_ = json.Unmarshal([]byte(out), &e) // a bad body leaves e empty, which the checks below report
			if code != 400 || !strings.HasPrefix(e.Error, c.want) {
				t.Fatalf("PUT = %d %s, want 400 with %q", code, out, c.want)
			}
		})
	}

	// Descriptor values may hold newlines; reason and actor may hold tabs;
	// a surrogate pair is one character.
	code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, body("edge", "path", `line\nnext \ud83d\ude00`, `tab\there`),
		server.ActorHeader, "al\tice")
	if code != 200 {
		t.Fatalf("PUT with a tab in reason and actor = %d %s", code, out)
	}
	var o limiter.Override
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatal(err)
	}
	if o.Descriptors[1].Value != "line\nnext \U0001F600" || o.Reason != "tab\there" || o.UpdatedBy != "al\tice" {
		t.Fatalf("stored %q, reason %q, by %q", o.Descriptors[1].Value, o.Reason, o.UpdatedBy)
	}

	for _, c := range []struct{ actor, want string }{
		{"bad\xffactor", server.ActorHeader + ": is not valid UTF-8"},
		{"\xc3", server.ActorHeader + ": is not valid UTF-8"},
	} {
		code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, body("edge", "path", "v", ""), server.ActorHeader, c.actor)
		if code != 400 || !strings.Contains(out, c.want) {
			t.Errorf("PUT by %q = %d %s, want 400 with %q", c.actor, code, out, c.want)
		}
	}

	// Many more than the breaker's consecutive_failures (5).
	for i := 0; i < 12; i++ {
		if code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, body("edge", "path", `a\u0000b`, "")); code != 400 {
			t.Fatalf("NUL PUT %d = %d %s", i, code, out)
		}
	}
	if s := br.Snapshot(); s.State != breaker.StateClosed || s.WindowFailures != 0 {
		t.Fatalf("breaker after bad input: %+v", s)
	}
	time.Sleep(60 * time.Millisecond) // a few check intervals: health is read from them
	_, hb := h.get("/health/detailed")
	var d server.DetailedHealth
	if err := json.Unmarshal([]byte(hb), &d); err != nil || d.Status != server.StatusPass || d.Breakers["postgres"].State != "closed" {
		t.Fatalf("health after bad input:\n%s", hb)
	}
	if code, out := adminDo(t, h.base, "GET", "/admin/overrides", bearer, ""); code != 200 {
		t.Fatalf("GET after bad input = %d %s", code, out)
	}
}

// sneakyStore adds a NUL byte to the reason of every override it stores,
// as a gap in validation would: Postgres refuses it (SQLSTATE 22021).
type sneakyStore struct{ *postgres.DB }

func (s sneakyStore) PutOverride(ctx context.Context, o limiter.Override, actor string) (limiter.Override, bool, error) {
	o.Reason += "\x00"
	return s.DB.PutOverride(ctx, o, actor)
}

// TestAdminCallerSQLErrorNotABreakerFailure: data Postgres refuses is a
// 400 and never counts against the breaker, while a real connection
// failure does.
func TestAdminCallerSQLErrorNotABreakerFailure(t *testing.T) {
	h, br, pg := pgBreakerServer(t, func(db *postgres.DB) server.OverrideStore { return sneakyStore{db} })
	put := `{"domain":"edge","descriptors":[{"key":"remote_address","value":"10.0.0.7"}],"rate_limit":{"unit":"second","requests_per_unit":50}}`
	for i := 0; i < 12; i++ {
		code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, put)
		if code != 400 || !strings.Contains(out, "SQLSTATE 22021") {
			t.Fatalf("PUT %d refused by Postgres = %d %s, want 400 with the SQLSTATE", i, code, out)
		}
	}
	if s := br.Snapshot(); s.State != breaker.StateClosed || s.WindowFailures != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("breaker after caller errors: %+v", s)
	}

	pg.Stop()
	for i := 0; i < 5; i++ {
		if code, out := adminDo(t, h.base, "PUT", "/admin/overrides", bearer, put); code != 503 {
			t.Fatalf("PUT %d with Postgres stopped = %d %s, want 503", i, code, out)
		}
	}
	if s := br.Snapshot(); s.State != breaker.StateOpen {
		t.Fatalf("breaker after 5 connection failures: %+v, want open", s)
	}
}
