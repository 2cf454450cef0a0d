//go:build integration

package main

// End-to-end tests of overrides: replicas of `sluice serve` on one Redis
// and one Postgres, changed through the admin API and the CLI.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/adminclient"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/postgres"
	"github.com/sluice-rl/sluice/server"
)

const testAdminToken = "admin-token-for-tests-0123456789abcdef"

// replica is a running `sluice serve` and its admin API's base URL.
type replica struct {
	*running
	admin string
}

// startReplica runs `sluice serve` on Redis and Postgres with the admin
// API on its own address, and the periodic override reload an hour away:
// only notifications and reconnects move overrides between replicas.
func startReplica(t *testing.T, redisURL, dsn string) *replica {
	t.Helper()
	cfg, _ := testConfigFile(t, `health: {check_interval: 50ms, check_timeout: 300ms}
postgres:
  query_timeout: 3s
  connect_timeout: 3s
  sync_interval: 1h
  breaker: {consecutive_failures: 2, open_duration: 300ms, half_open_max_calls: 1}
`)
	e := env{"SLUICE_REDIS_URL": redisURL, "SLUICE_POSTGRES_DSN": dsn, "SLUICE_ADMIN_TOKEN": testAdminToken,
		"SLUICE_ADMIN_ADDR": "127.0.0.1:0"}
	r := startServe(t, serveWith(cfg, e.get))
	rep := &replica{running: r, admin: "http://" + r.adminAddr}
	r.waitLog("override listener connected")
	return rep
}

// adminCall sends one admin request with the token and returns the status
// and body.
func (r *replica) adminCall(method, path, body string) (int, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.admin+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set(server.ActorHeader, "test")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// putOverride sets tenant=value in domain api to rpu per second through
// the admin API and returns the stored override.
func (r *replica) putOverride(domain, key, value string, rpu int) limiter.Override {
	r.t.Helper()
	code, out := r.adminCall("PUT", "/admin/overrides", fmt.Sprintf(
		`{"domain":%q,"descriptors":[{"key":%q,"value":%q}],"rate_limit":{"unit":"second","requests_per_unit":%d},"reason":"test"}`,
		domain, key, value, rpu))
	if code != 200 {
		r.t.Fatalf("PUT override = %d %s", code, out)
	}
	var o limiter.Override
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		r.t.Fatal(err)
	}
	return o
}

// waitLimitWithin polls r until its limit for the descriptor is want, and
// returns how long that took; it fails the test after timeout.
func (r *replica) waitLimitWithin(timeout time.Duration, domain, key, value string, want uint32) time.Duration {
	r.t.Helper()
	start := time.Now()
	for {
		got := r.limitOf(domain, key, value)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			r.t.Fatalf("%s %s=%s: limit %d, want %d within %v; log:\n%s", domain, key, value, got, want, timeout, r.logs.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// TestOverridesPropagateAcrossReplicas sets overrides through replica A
// and measures how long replica B takes to decide with them.
func TestOverridesPropagateAcrossReplicas(t *testing.T) {
	redisURL := "redis://" + limitertest.StartRedis(t)
	dsn := limitertest.StartPostgres(t)
	a := startReplica(t, redisURL, dsn)
	b := startReplica(t, redisURL, dsn)
	if got := b.limitOf("api", "tenant", "acme"); got != 10 {
		t.Fatalf("configured limit %d, want 10", got)
	}

	const rounds = 20
	var took []time.Duration
	var o limiter.Override
	for i := 1; i <= rounds; i++ {
		rpu := 100 + i
		start := time.Now()
		o = a.putOverride("api", "tenant", "acme", rpu)
		// A answered the PUT once it decides with the change itself.
		if got := a.limitOf("api", "tenant", "acme"); got != uint32(rpu) {
			t.Fatalf("round %d: A decides with limit %d right after its PUT, want %d", i, got, rpu)
		}
		b.waitLimitWithin(time.Second, "api", "tenant", "acme", uint32(rpu))
		took = append(took, time.Since(start))
	}
	t.Logf("override set through A decides on B after: min %v, median %v, p95 %v, max %v (%d rounds, PUT included)",
		percentile(took, 0).Round(time.Microsecond), percentile(took, 0.5).Round(time.Microsecond),
		percentile(took, 0.95).Round(time.Microsecond), percentile(took, 1).Round(time.Microsecond), rounds)
	if worst := percentile(took, 1); worst >= time.Second {
		t.Errorf("propagation took %v, want under 1s", worst)
	}
	// Other tenants keep the configured any-value limit.
	if got := b.limitOf("api", "tenant", "other"); got != 10 {
		t.Errorf("tenant other: limit %d, want 10", got)
	}

	// A domain no limit file names.
	start := time.Now()
	a.putOverride("batch", "job", "reindex", 3)
	b.waitLimitWithin(time.Second, "batch", "job", "reindex", 3)
	t.Logf("new domain on B after %v", time.Since(start).Round(time.Microsecond))

	// Health counts them; the effective config shows them merged.
	b.waitHealth("two overrides", func(d server.DetailedHealth) bool {
		p := d.Checks["postgres"]
		return p.Overrides != nil && *p.Overrides == 2 && p.Status == server.StatusPass
	})
	code, out := b.adminCall("GET", "/admin/config?format=yaml", "")
	if code != 200 || !strings.Contains(out, "value: acme") || !strings.Contains(out, "requests_per_unit: 120") || !strings.Contains(out, "domain: batch") {
		t.Fatalf("GET /admin/config = %d\n%s", code, out)
	}

	// Delete through B; A goes back to the configured limit.
	start = time.Now()
	if code, out := b.adminCall("DELETE", fmt.Sprintf("/admin/overrides/%d", o.ID), ""); code != 204 {
		t.Fatalf("DELETE = %d %s", code, out)
	}
	a.waitLimitWithin(time.Second, "api", "tenant", "acme", 10)
	t.Logf("delete through B applied on A after %v", time.Since(start).Round(time.Microsecond))

	code, out = a.adminCall("GET", fmt.Sprintf("/admin/overrides/%d/history", o.ID), "")
	if code != 200 || strings.Count(out, `"action": "update"`) != rounds-1 || !strings.Contains(out, `"action": "delete"`) {
		t.Fatalf("history = %d %s", code, out)
	}
	if code, out = a.adminCall("POST", "/admin/reload", ""); code != 200 || !strings.Contains(out, "sha256:") {
		t.Fatalf("POST /admin/reload = %d %s", code, out)
	}
}

// TestOverridesListenerKilled kills every replica's LISTEN connection and
// changes an override before they reconnect: the change still arrives.
func TestOverridesListenerKilled(t *testing.T) {
	redisURL := "redis://" + limitertest.StartRedis(t)
	dsn := limitertest.StartPostgres(t)
	a := startReplica(t, redisURL, dsn)
	b := startReplica(t, redisURL, dsn)
	a.putOverride("api", "tenant", "acme", 20)
	b.waitLimitWithin(time.Second, "api", "tenant", "acme", 20)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	db, err := postgres.Open(postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for round := 1; round <= 3; round++ {
		var killed int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = $1) t`, postgres.ListenerApplicationName).Scan(&killed); err != nil {
			t.Fatal(err)
		}
		if killed != 2 {
			t.Fatalf("round %d: killed %d listener connections, want 2", round, killed)
		}
		// Written at once, while the listeners wait to dial again.
		start := time.Now()
		rpu := 20 + round
		o := limiter.Override{Domain: "api", Descriptors: []limiter.OverrideEntry{{Key: "tenant", Value: "acme"}},
			RateLimit: limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: uint32(rpu)}}
		if _, _, err := db.PutOverride(ctx, o, "test"); err != nil {
			t.Fatal(err)
		}
		b.waitLimitWithin(5*time.Second, "api", "tenant", "acme", uint32(rpu))
		a.waitLimitWithin(5*time.Second, "api", "tenant", "acme", uint32(rpu))
		t.Logf("round %d: change made with the listeners down applied on both after %v", round, time.Since(start).Round(time.Millisecond))
	}
	for _, r := range []*replica{a, b} {
		logs := r.logs.String()
		if n := strings.Count(logs, "override listener disconnected"); n < 3 {
			t.Errorf("%d disconnects logged, want 3:\n%s", n, logs)
		}
		if n := strings.Count(logs, "override listener connected"); n < 4 {
			t.Errorf("%d connects logged, want 4:\n%s", n, logs)
		}
	}
}

// decideRun makes n decisions on r, each for a new tenant (so each is
// allowed), and returns their latencies.
func decideRun(t *testing.T, r *replica, prefix string, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if got := r.limitOf("api", "tenant", fmt.Sprintf("%s-%d", prefix, i)); got != 10 {
			t.Fatalf("decision %d: limit %d, want 10", i, got)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// TestOverridesPostgresOutage stops Postgres under two replicas: decisions
// go on unchanged with the overrides last loaded, admin writes answer 503,
// health says postgres fail and overall warn; when Postgres is back
// everything resumes without a restart.
func TestOverridesPostgresOutage(t *testing.T) {
	redisURL := "redis://" + limitertest.StartRedis(t)
	pg := limitertest.NewPostgresServer(t)
	a := startReplica(t, redisURL, pg.DSN)
	b := startReplica(t, redisURL, pg.DSN)
	a.putOverride("api", "tenant", "acme", 50)
	b.waitLimitWithin(time.Second, "api", "tenant", "acme", 50)
	b.waitHealth("all pass", func(d server.DetailedHealth) bool { return d.Status == server.StatusPass })

	const n = 300
	decideRun(t, b, "warm", 50)
	up := decideRun(t, b, "up", n)

	pg.Stop()
	took := b.waitHealth("postgres fail, overall warn", func(d server.DetailedHealth) bool {
		return d.Checks["postgres"].Status == server.StatusFail && d.Status == server.StatusWarn
	})
	t.Logf("Postgres stopped: health showed postgres fail, overall warn after %v", took.Round(time.Millisecond))
	if code := b.getCode("/health/ready"); code != 200 {
		t.Errorf("ready = %d with Postgres down", code)
	}
	down := decideRun(t, b, "down", n)
	if got := b.limitOf("api", "tenant", "acme"); got != 50 {
		t.Errorf("override lost with Postgres down: limit %d, want 50", got)
	}
	t.Logf("ShouldRateLimit latency, Postgres up: p50 %v p99 %v max %v; down: p50 %v p99 %v max %v (%d calls each)",
		percentile(up, 0.5).Round(time.Microsecond), percentile(up, 0.99).Round(time.Microsecond), percentile(up, 1).Round(time.Microsecond),
		percentile(down, 0.5).Round(time.Microsecond), percentile(down, 0.99).Round(time.Microsecond), percentile(down, 1).Round(time.Microsecond), n)
	if p50up, p50down := percentile(up, 0.5), percentile(down, 0.5); p50down > 2*p50up+2*time.Millisecond {
		t.Errorf("median decision latency %v with Postgres down, %v with it up", p50down, p50up)
	}
	if p99 := percentile(down, 0.99); p99 > 50*time.Millisecond {
		t.Errorf("p99 decision latency %v with Postgres down", p99)
	}

	body := `{"domain":"api","descriptors":[{"key":"tenant","value":"acme"}],"rate_limit":{"unit":"second","requests_per_unit":70}}`
	breakerStates := map[string]bool{}
	for i := 0; i < 4; i++ {
		code, out := a.adminCall("PUT", "/admin/overrides", body)
		var e struct {
			Breaker *server.BreakerState `json:"breaker"`
		}
		if err := json.Unmarshal([]byte(out), &e); err != nil || code != 503 || e.Breaker == nil {
			t.Fatalf("PUT with Postgres down = %d %s, want 503 with the breaker", code, out)
		}
		breakerStates[e.Breaker.State] = true
	}
	if !breakerStates["open"] {
		t.Errorf("breaker states in 503 answers: %v, want open", breakerStates)
	}
	if code, _ := a.adminCall("GET", "/admin/overrides", ""); code != 503 {
		t.Errorf("GET with Postgres down = %d, want 503", code)
	}
	// The effective config is read locally and still answers.
	if code, out := a.adminCall("GET", "/admin/config?format=yaml", ""); code != 200 || !strings.Contains(out, "requests_per_unit: 50") {
		t.Errorf("GET /admin/config with Postgres down = %d\n%s", code, out)
	}

	pg.Start()
	back := b.waitHealth("all pass again", func(d server.DetailedHealth) bool { return d.Status == server.StatusPass })
	t.Logf("Postgres started: health pass after %v", back.Round(time.Millisecond))
	limitertest.Eventually(t, 10*time.Second, "admin writes to resume", func() error {
		if code, out := a.adminCall("PUT", "/admin/overrides", body); code != 200 {
			return fmt.Errorf("%d %s", code, out)
		}
		return nil
	})
	b.waitLimitWithin(5*time.Second, "api", "tenant", "acme", 70)
}

// TestOverridesCLI drives `sluice overrides` against a replica.
func TestOverridesCLI(t *testing.T) {
	redisURL := "redis://" + limitertest.StartRedis(t)
	dsn := limitertest.StartPostgres(t)
	r := startReplica(t, redisURL, dsn)
	e := env{"SLUICE_ADMIN_TOKEN": testAdminToken, "SLUICE_ADMIN_URL": r.admin, "USER": "operator"}
	cli := func(getenv env, args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		var err error
		if code := adminclient.Main(context.Background(), args, getenv.get, &stdout, &stderr); code != 0 {
			err = exitError{code}
		}
		return stdout.String(), stderr.String(), err
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"overrides"}, options{getenv: env{}.get, stdout: &stdout, stderr: &stderr}); !errors.Is(err, exitError{2}) || !strings.Contains(stderr.String(), "sluice overrides <command>") {
		t.Fatalf("sluice overrides with no command: %v %s", err, stderr.String())
	}

	out, errOut, err := cli(e, "set", "-domain", "api", "-descriptor", "tenant=acme",
		"-unit", "second", "-requests-per-unit", "40", "-burst", "80", "-reason", "partner load test", "-expires", "2h")
	if err != nil {
		t.Fatalf("set: %v\n%s", err, errOut)
	}
	var o limiter.Override
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("set printed %q: %v", out, err)
	}
	if o.ID == 0 || o.UpdatedBy != "operator" || o.RateLimit.Burst != 80 || time.Until(o.ExpiresAt) < time.Hour {
		t.Fatalf("set stored %+v", o)
	}
	r.waitLimitWithin(time.Second, "api", "tenant", "acme", 40)
	id := fmt.Sprint(o.ID)

	if out, errOut, err = cli(e, "list"); err != nil || !strings.Contains(out, `"value": "acme"`) {
		t.Fatalf("list: %v %s %s", err, out, errOut)
	}
	if out, errOut, err = cli(e, "get", id); err != nil || !strings.Contains(out, `"reason": "partner load test"`) {
		t.Fatalf("get: %v %s %s", err, out, errOut)
	}
	// A ban, by the -actor given.
	if _, errOut, err = cli(e, "set", "-actor", "oncall", "-domain", "api", "-descriptor", "tenant=acme", "-unit", "minute", "-requests-per-unit", "0"); err != nil {
		t.Fatalf("set ban: %v %s", err, errOut)
	}
	if out, errOut, err = cli(e, "history", id); err != nil || !strings.Contains(out, `"actor": "oncall"`) || !strings.Contains(out, `"action": "update"`) {
		t.Fatalf("history: %v %s %s", err, out, errOut)
	}
	if out, errOut, err = cli(e, "delete", id); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %v %s %s", err, out, errOut)
	}
	r.waitLimitWithin(time.Second, "api", "tenant", "acme", 10)

	for _, c := range []struct {
		name   string
		env    env
		args   []string
		code   int
		stderr string
	}{
		{"bad unit", e, []string{"set", "-domain", "api", "-descriptor", "tenant=x", "-unit", "fortnight", "-requests-per-unit", "1"}, 1, "rate_limit.unit"},
		{"no domain", e, []string{"set", "-descriptor", "tenant=x", "-unit", "second", "-requests-per-unit", "1"}, 1, "domain: required"},
		{"bad descriptor", e, []string{"set", "-descriptor", "tenant"}, 2, "KEY=VALUE"},
		{"unknown id", e, []string{"get", "424242"}, 1, "404"},
		{"bad id", e, []string{"delete", "abc"}, 2, "positive whole number"},
		{"wrong token", env{"SLUICE_ADMIN_TOKEN": "nope", "SLUICE_ADMIN_URL": r.admin}, []string{"list"}, 1, "401"},
		{"no token", env{"SLUICE_ADMIN_URL": r.admin}, []string{"list"}, 2, "SLUICE_ADMIN_TOKEN"},
		{"unknown command", e, []string{"frob"}, 2, "unknown command"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, err := cli(c.env, c.args...)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != c.code || !strings.Contains(errOut, c.stderr) {
				t.Fatalf("err %v, stderr %q; want exit %d mentioning %q", err, errOut, c.code, c.stderr)
			}
		})
	}
}
