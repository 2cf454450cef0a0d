package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server"
)

func newBreaker(t *testing.T, name string) *breaker.Breaker {
	t.Helper()
	b, err := breaker.New(name, breaker.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// detailed GETs /health/detailed and decodes it twice: into the typed form
// and into a generic map, to check the exact keys.
func (h *harness) detailed() (int, server.DetailedHealth, map[string]any) {
	h.t.Helper()
	code, body := h.get("/health/detailed")
	var d server.DetailedHealth
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		h.t.Fatalf("decode %q: %v", body, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		h.t.Fatalf("decode %q: %v", body, err)
	}
	return code, d, m
}

func keys(v any) string {
	m, _ := v.(map[string]any)
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

func TestDetailedShape(t *testing.T) {
	var pgDown atomic.Bool
	redisBr, pgBr := newBreaker(t, "redis"), newBreaker(t, "postgres")
	checks := []server.Check{
		{Name: "redis", Fn: func(context.Context) error { return nil }, Optional: true, Breaker: redisBr, Mode: "single",
			Address: "127.0.0.1:6379"},
		{Name: "postgres", Fn: func(context.Context) error {
			if pgDown.Load() {
				return errors.New("postgres: dial tcp 127.0.0.1:5432: connection refused")
			}
			return nil
		}, Optional: true, Breaker: pgBr, Overrides: func() int { return 0 }, Address: "db1:5432,db2:5433"},
	}
	h := start(t, edgeDomains(), false, withChecks(checks...), withOptions(func(o *server.Options) {
		o.Version = "v1.2.3"
		o.FailureMode = "local"
	}))
	limitertest.Eventually(t, 5*time.Second, "checked", func() bool { _, d, _ := h.detailed(); return d.Status == server.StatusPass })

	code, d, m := h.detailed()
	if code != 200 {
		t.Errorf("code = %d", code)
	}
	for _, c := range []struct{ what, got, want string }{
		{"top level", keys(m), "breakers,checks,config,failure_mode,status,uptime_s,version"},
		{"config", keys(m["config"]), "last_error,loaded_at,version"},
		{"checks", keys(m["checks"]), "postgres,redis"},
		{"checks.redis", keys(m["checks"].(map[string]any)["redis"]), "address,breaker,checked_at,last_error,latency_ms,mode,status"},
		{"checks.postgres", keys(m["checks"].(map[string]any)["postgres"]), "address,breaker,checked_at,last_error,latency_ms,overrides,status"},
		{"breakers", keys(m["breakers"]), "postgres,redis"},
		{"breakers.redis", keys(m["breakers"].(map[string]any)["redis"]), "failures,next_probe_at,opened_at,state"},
	} {
		if c.got != c.want {
			t.Errorf("%s keys = %s, want %s", c.what, c.got, c.want)
		}
	}
	if d.Version != "v1.2.3" || *d.FailureMode != "local" || !strings.HasPrefix(d.Config.Version, "sha256:") ||
		d.Config.LoadedAt == nil || d.Config.LastError != nil {
		t.Errorf("detailed = %+v", d)
	}
	r := d.Checks["redis"]
	if r.Address != "127.0.0.1:6379" || d.Checks["postgres"].Address != "db1:5432,db2:5433" {
		t.Errorf("addresses = %q, %q", r.Address, d.Checks["postgres"].Address)
	}
	if r.Status != "pass" || r.Mode != "single" || r.Breaker != "closed" || r.LatencyMs == nil || r.CheckedAt == nil || r.LastError != nil {
		t.Errorf("checks.redis = %+v", r)
	}
	if b := d.Breakers["redis"]; b.State != "closed" || b.OpenedAt != nil || b.NextProbeAt != nil {
		t.Errorf("breakers.redis = %+v", b)
	}

	// Postgres down: warn, still ready.
	pgDown.Store(true)
	limitertest.Eventually(t, 5*time.Second, "postgres fail", func() bool { _, d, _ := h.detailed(); return d.Checks["postgres"].Status == "fail" })
	code, d, _ = h.detailed()
	if code != 200 || d.Status != "warn" || !strings.Contains(*d.Checks["postgres"].LastError, "connection refused") {
		t.Errorf("postgres down: %d %+v", code, d)
	}
	if c, _ := h.get("/health/ready"); c != 200 {
		t.Errorf("ready = %d with only an optional backend down", c)
	}
	pgDown.Store(false)
	limitertest.Eventually(t, 5*time.Second, "postgres pass", func() bool { _, d, _ := h.detailed(); return d.Status == "pass" })

	// An open breaker over a backend that answers PING: warn.
	redisBr.ForceOpen()
	_, d, _ = h.detailed()
	if d.Status != "warn" || d.Checks["redis"].Status != "warn" || d.Checks["redis"].Breaker != "open" ||
		d.Breakers["redis"].State != "open" || d.Breakers["redis"].OpenedAt == nil {
		t.Errorf("breaker open: %+v", d)
	}
	redisBr.Reset()
}

func TestDetailedFailWhenNoDecision(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	chk := server.Check{Name: "redis", Mode: "single", Fn: func(context.Context) error {
		if down.Load() {
			return errors.New("redis ping redis://:xxxxx@127.0.0.1:1: connection refused")
		}
		return nil
	}}
	h := start(t, edgeDomains(), false, withChecks(chk), withOptions(func(o *server.Options) { o.FailureMode = "error" }))
	// Before its first check the backend shows warn ("not checked yet"):
	// wait for the check itself to fail.
	limitertest.Eventually(t, 5*time.Second, "fail", func() bool {
		c, d, _ := h.detailed()
		return c == 503 && d.Status == "fail" && d.Checks["redis"].Status == "fail"
	})
	_, d, _ := h.detailed()
	if d.Checks["redis"].Status != "fail" || d.Checks["redis"].LastError == nil {
		t.Errorf("checks.redis = %+v", d.Checks["redis"])
	}
	if c, _ := h.get("/health/ready"); c != 503 {
		t.Errorf("ready = %d, want 503", c)
	}
	if c, _ := h.get("/health/live"); c != 200 {
		t.Errorf("live = %d, want 200", c)
	}
	down.Store(false)
	limitertest.Eventually(t, 5*time.Second, "pass", func() bool { c, d, _ := h.detailed(); return c == 200 && d.Status == "pass" })
}

func TestDetailedConfigError(t *testing.T) {
	loaded := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var lastErr atomic.Value
	lastErr.Store(errBox{})
	h := start(t, edgeDomains(), false, withOptions(func(o *server.Options) {
		o.ConfigStatus = func() server.ConfigStatus {
			return server.ConfigStatus{Version: "sha256:abc", LoadedAt: loaded, LastError: lastErr.Load().(errBox).err}
		}
	}))
	_, d, m := h.detailed()
	if d.Status != "pass" || d.Config.Version != "sha256:abc" || !d.Config.LoadedAt.Equal(loaded) || d.Config.LastError != nil {
		t.Errorf("config = %+v", d.Config)
	}
	if m["failure_mode"] != nil {
		t.Errorf("failure_mode = %v without a failure mode, want null", m["failure_mode"])
	}
	lastErr.Store(errBox{errors.New("limits/api.yaml:4: unknown unit")})
	_, d, _ = h.detailed()
	if d.Status != "warn" || d.Config.LastError == nil || *d.Config.LastError != "limits/api.yaml:4: unknown unit" {
		t.Errorf("after a failed reload: %+v", d)
	}
}

type errBox struct{ err error }

func TestAdminBreakerReset(t *testing.T) {
	const token = "s3cret-admin-token-of-32-characters"
	br := newBreaker(t, "redis")
	chk := server.Check{Name: "redis", Fn: func(context.Context) error { return nil }, Optional: true, Breaker: br}

	post := func(h *harness, path, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", h.base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("token off", func(t *testing.T) {
		h := start(t, edgeDomains(), false, withChecks(chk))
		for _, auth := range []string{"", "Bearer " + token} {
			if code, _ := post(h, "/admin/breakers/redis/reset", auth); code != 404 {
				t.Errorf("auth %q: %d, want 404 with the admin API off", auth, code)
			}
		}
	})

	h := start(t, edgeDomains(), false, withChecks(chk), withOptions(func(o *server.Options) { o.AdminToken = token }))
	h.srv.HandleAdmin("GET /admin/ping", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "pong") }))
	for _, c := range []struct {
		name, path, auth string
		want             int
	}{
		{"missing token", "/admin/breakers/redis/reset", "", 401},
		{"wrong token", "/admin/breakers/redis/reset", "Bearer nope", 401},
		{"token prefix", "/admin/breakers/redis/reset", "Bearer " + token[:5], 401},
		{"not bearer", "/admin/breakers/redis/reset", "Basic " + token, 401},
		{"unknown breaker", "/admin/breakers/mysql/reset", "Bearer " + token, 404},
		{"unknown route", "/admin/nothing", "Bearer " + token, 404},
	} {
		if code, body := post(h, c.path, c.auth); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	br.ForceOpen()
	code, body := post(h, "/admin/breakers/redis/reset", "Bearer "+token)
	if code != 200 || !strings.Contains(body, `"state":"closed"`) {
		t.Errorf("reset: %d %s", code, body)
	}
	if br.State() != breaker.StateClosed {
		t.Errorf("breaker %v after reset", br.State())
	}
	if strings.Contains(body, token) {
		t.Errorf("reply shows the token")
	}
	// A route added later sits behind the same token.
	req, _ := http.NewRequest("GET", h.base+"/admin/ping", nil)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("added route without token: %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, _ = http.DefaultClient.Do(req)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "pong" {
		t.Errorf("added route: %d %q", resp.StatusCode, b)
	}
}
