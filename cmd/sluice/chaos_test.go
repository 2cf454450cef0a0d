//go:build integration

package main

// Chaos tests: a real redis-server (and postgres) killed, frozen with
// SIGSTOP and restarted under a running Sluice. Each is bounded to a few
// seconds; timings are compared with generous margins, and what they
// measured is logged (go test -v -run Chaos).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server"
)

// chaosReadTimeout is Redis's read timeout in these tests: it bounds every
// call to Redis.
const chaosReadTimeout = 400 * time.Millisecond

// startChaos runs `sluice serve` on redisURL with the failure mode, fast
// health checks and a quick breaker, plus a limit of 50 per hour on
// (client) in domain chaos. extraEnv adds environment variables.
func startChaos(t *testing.T, redisURL, mode string, extraEnv env) *running {
	t.Helper()
	cfg, limits := testConfigFile(t, fmt.Sprintf(`health: {check_interval: 50ms, check_timeout: 200ms}
redis:
  read_timeout: %v
  write_timeout: %v
  dial_timeout: %v
  failure_mode: %s
  breaker: {consecutive_failures: 3, open_duration: 300ms, half_open_max_calls: 2}
postgres:
  query_timeout: 300ms
  connect_timeout: 300ms
  breaker: {consecutive_failures: 2, open_duration: 300ms, half_open_max_calls: 1}
`, chaosReadTimeout, chaosReadTimeout, chaosReadTimeout, mode))
	writeFile(t, filepath.Join(limits, "chaos.yaml"),
		"domain: chaos\ndescriptors:\n  - key: client\n    rate_limit: {unit: hour, requests_per_unit: 50}\n")
	e := env{"SLUICE_REDIS_URL": redisURL}
	for k, v := range extraEnv {
		e[k] = v
	}
	return startServe(t, serveWith(cfg, e.get))
}

func chaosRequest(client string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "chaos", Descriptors: []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "client", Value: client}}},
	}}
}

// take asks once for client's bucket, with a generous deadline of its own.
func (r *running) take(client string) (*rlsv3.RateLimitResponse, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := r.client.ShouldRateLimit(ctx, chaosRequest(client))
	return resp, time.Since(start), err
}

// load is a closed loop of callers on distinct clients, each call with its
// own 5s deadline.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	calls   int
	errs    map[codes.Code]int
	lastErr error
	slowest time.Duration
}

func startLoad(r *running, workers int) *load {
	l := &load{stop: make(chan struct{}), errs: map[codes.Code]int{}}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				// A new client each time keeps every bucket far from its
				// limit: only failures show.
				_, d, err := r.take(fmt.Sprintf("load-%d-%d", w, i))
				l.mu.Lock()
				l.calls++
				l.slowest = max(l.slowest, d)
				if err != nil {
					l.errs[status.Code(err)]++
					l.lastErr = err
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) finish() *load {
	close(l.stop)
	l.wg.Wait()
	return l
}

func (l *load) failed() int {
	n := 0
	for _, c := range l.errs {
		n += c
	}
	return n
}

// TestChaosRedisKilled kills Redis under load in each failure mode.
func TestChaosRedisKilled(t *testing.T) {
	for _, c := range []struct {
		mode      string
		overall   string
		readyCode int
	}{
		{"local", server.StatusWarn, 200},
		{"allow", server.StatusWarn, 200},
		{"error", server.StatusFail, 503},
	} {
		t.Run(c.mode, func(t *testing.T) {
			rs := limitertest.NewRedisServer(t)
			r := startChaos(t, "redis://"+rs.Addr, c.mode, nil)
			r.waitHealth("redis pass", func(d server.DetailedHealth) bool { return d.Checks["redis"].Status == server.StatusPass })

			before := startLoad(r, 4)
			time.Sleep(300 * time.Millisecond)
			before.finish()
			if before.failed() > 0 || before.calls == 0 {
				t.Fatalf("before the kill: %d of %d calls failed: %v", before.failed(), before.calls, before.lastErr)
			}

			l := startLoad(r, 4)
			time.Sleep(100 * time.Millisecond)
			killed := time.Now()
			rs.Stop()
			opened := r.waitHealth("breaker open", func(d server.DetailedHealth) bool { return d.Breakers["redis"].State != "closed" })
			shown := r.waitHealth("redis fail", func(d server.DetailedHealth) bool {
				return d.Checks["redis"].Status == server.StatusFail && d.Status == c.overall
			}) + opened
			time.Sleep(time.Until(killed.Add(1500 * time.Millisecond)))
			l.finish()
			t.Logf("%s: %d calls in the 1.6s around the kill, errors %v, slowest %v; breaker open %v and health %s %v after the kill",
				c.mode, l.calls, l.errs, l.slowest.Round(time.Millisecond), opened.Round(time.Millisecond), c.overall, shown.Round(time.Millisecond))
			switch c.mode {
			case "local", "allow":
				if l.failed() > 0 {
					t.Errorf("%d of %d calls failed in %s mode: %v", l.failed(), l.calls, c.mode, l.lastErr)
				}
			case "error":
				if l.errs[codes.Unavailable] == 0 || l.failed() != l.errs[codes.Unavailable] {
					t.Errorf("errors %v, want only UNAVAILABLE (last: %v)", l.errs, l.lastErr)
				}
			}
			if !strings.Contains(r.logs.String(), "breaker=redis from=closed to=open") {
				t.Errorf("no log of the breaker opening:\n%s", r.logs.String())
			}
			code, d, body := r.detailed()
			if d.Breakers["redis"].State == "closed" || d.Breakers["redis"].OpenedAt == nil {
				t.Errorf("breaker after the kill: %+v", d.Breakers["redis"])
			}
			if (code == 503) != (c.overall == server.StatusFail) {
				t.Errorf("/health/detailed = %d with status %s", code, d.Status)
			}
			if *d.FailureMode != c.mode || d.Checks["redis"].LastError == nil {
				t.Errorf("detailed:\n%s", body)
			}
			if got := r.getCode("/health/ready"); got != c.readyCode {
				t.Errorf("/health/ready = %d, want %d", got, c.readyCode)
			}
			if got := r.getCode("/health/live"); got != 200 {
				t.Errorf("/health/live = %d", got)
			}
		})
	}
}

// TestChaosRedisFrozen freezes Redis (SIGSTOP): the server keeps its
// sockets but never answers. Every call is still answered within the read
// timeout plus a margin, and the breaker opens.
func TestChaosRedisFrozen(t *testing.T) {
	rs := limitertest.NewRedisServer(t)
	r := startChaos(t, "redis://"+rs.Addr, "local", nil)
	r.waitHealth("redis pass", func(d server.DetailedHealth) bool { return d.Checks["redis"].Status == server.StatusPass })
	warm := startLoad(r, 8)
	time.Sleep(200 * time.Millisecond)
	warm.finish()

	l := startLoad(r, 8)
	time.Sleep(50 * time.Millisecond)
	rs.Pause()
	time.Sleep(1500 * time.Millisecond)
	l.finish()
	frozenCalls, slowest := l.calls, l.slowest
	t.Logf("frozen: %d calls, errors %v, slowest answer %v (read timeout %v)",
		frozenCalls, l.errs, slowest.Round(time.Millisecond), chaosReadTimeout)
	if l.failed() > 0 {
		t.Errorf("%d calls failed in local mode: %v", l.failed(), l.lastErr)
	}
	if slowest > chaosReadTimeout+500*time.Millisecond {
		t.Errorf("slowest answer %v, want within the read timeout %v plus a margin", slowest, chaosReadTimeout)
	}
	// With the breaker open most calls skip Redis: far more calls than
	// 8 callers waiting out the timeout one after another could make.
	if waited := 8 * int(1500*time.Millisecond/chaosReadTimeout); frozenCalls < 3*waited {
		t.Errorf("only %d calls in 1.5s: calls are waiting for Redis (%d if all did)", frozenCalls, waited)
	}
	if !strings.Contains(r.logs.String(), "breaker=redis from=closed to=open") {
		t.Errorf("breaker never opened:\n%s", r.logs.String())
	}

	rs.Resume()
	took := recoverBoth(t, r)
	t.Logf("after SIGCONT: breaker closed and decisions back on Redis in %v", took.Round(time.Millisecond))
}

// recoverBoth sends traffic to the replicas (the breaker probes on
// requests) until every one's Redis breaker is closed and its check
// passes, and returns how long that took.
func recoverBoth(t *testing.T, rs ...*running) time.Duration {
	t.Helper()
	start := time.Now()
	for i := 0; ; i++ {
		done := true
		for _, r := range rs {
			if _, _, err := r.take(fmt.Sprintf("probe-%d", i)); err != nil {
				t.Fatalf("probe call: %v", err)
			}
			_, d, _ := r.detailed()
			if d.Breakers["redis"].State != "closed" || d.Checks["redis"].Status != server.StatusPass {
				done = false
			}
		}
		if done {
			return time.Since(start)
		}
		if time.Since(start) > 10*time.Second {
			_, _, body := rs[0].detailed()
			t.Fatalf("not recovered after 10s:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exactShared checks that two replicas share one Redis bucket of 50: 20
// takes on a, then 30 on b, count down one sequence, and the 51st is
// denied on either.
func exactShared(t *testing.T, a, b *running, client string) {
	t.Helper()
	for i := 0; i < 50; i++ {
		r := a
		if i >= 20 {
			r = b
		}
		resp, _, err := r.take(client)
		if err != nil {
			t.Fatalf("take %d: %v", i, err)
		}
		st := resp.Statuses[0]
		if resp.OverallCode != rlsv3.RateLimitResponse_OK || st.LimitRemaining != uint32(49-i) {
			t.Fatalf("take %d on replica %s: %v remaining %d, want OK remaining %d (not the shared Redis bucket)",
				i, map[bool]string{true: "a", false: "b"}[r == a], resp.OverallCode, st.LimitRemaining, 49-i)
		}
	}
	for _, r := range []*running{a, b} {
		resp, _, err := r.take(client)
		if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("take 51: %v, %v; want OVER_LIMIT", resp.GetOverallCode(), err)
		}
	}
}

// TestChaosRedisRestart kills and restarts Redis under two replicas in
// local mode: each decides alone while it is down, then both breakers
// close and they share Redis's buckets again, exactly. SCRIPT FLUSH is
// absorbed without a failure.
func TestChaosRedisRestart(t *testing.T) {
	rs := limitertest.NewRedisServer(t)
	a := startChaos(t, "redis://"+rs.Addr, "local", nil)
	b := startChaos(t, "redis://"+rs.Addr, "local", nil)
	exactShared(t, a, b, "before")

	rs.Stop()
	// Down: each replica decides locally, with its own bucket.
	for _, r := range []*running{a, b} {
		for i := 0; i < 5; i++ {
			resp, _, err := r.take("during")
			if err != nil {
				t.Fatalf("take while Redis is down: %v", err)
			}
			if want := uint32(49 - i); resp.Statuses[0].LimitRemaining != want {
				t.Fatalf("local remaining = %d, want %d", resp.Statuses[0].LimitRemaining, want)
			}
		}
	}
	for _, r := range []*running{a, b} {
		r.waitHealth("breaker open", func(d server.DetailedHealth) bool { return d.Breakers["redis"].State != "closed" })
	}

	rs.Start()
	took := recoverBoth(t, a, b)
	t.Logf("after restart: both breakers closed and decisions back on Redis in %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("recovery took %v, want a few seconds", took)
	}
	exactShared(t, a, b, "after-restart")
	if !strings.Contains(a.logs.String(), "breaker=redis from=half_open to=closed") {
		t.Errorf("no log of the breaker closing:\n%s", a.logs.String())
	}

	// SCRIPT FLUSH: the next call reloads the script; nothing fails and
	// the breaker stays closed.
	raw := goredis.NewClient(&goredis.Options{Addr: rs.Addr, MaxRetries: -1})
	defer raw.Close()
	if err := raw.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	exactShared(t, a, b, "after-flush")
	for _, r := range []*running{a, b} {
		if _, d, _ := r.detailed(); d.Breakers["redis"].State != "closed" || d.Breakers["redis"].Failures != 0 {
			t.Errorf("breaker after SCRIPT FLUSH: %+v", d.Breakers["redis"])
		}
	}
}

// TestChaosStartWithRedisDown starts Sluice before Redis: local mode
// answers, then decisions move to Redis once it starts.
func TestChaosStartWithRedisDown(t *testing.T) {
	rs := limitertest.NewRedisServer(t)
	rs.Stop()
	r := startChaos(t, "redis://"+rs.Addr, "local", nil)
	for i := 0; i < 5; i++ {
		resp, _, err := r.take("early")
		if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("take with Redis down: %v, %v", resp.GetOverallCode(), err)
		}
	}
	r.waitHealth("redis fail, warn", func(d server.DetailedHealth) bool {
		return d.Checks["redis"].Status == server.StatusFail && d.Status == server.StatusWarn
	})
	if got := r.getCode("/health/ready"); got != 200 {
		t.Errorf("ready = %d in local mode with Redis down", got)
	}

	rs.Start()
	took := recoverBoth(t, r)
	t.Logf("Redis started: decisions on Redis after %v", took.Round(time.Millisecond))
	raw := goredis.NewClient(&goredis.Options{Addr: rs.Addr, MaxRetries: -1})
	defer raw.Close()
	n0 := raw.DBSize(context.Background()).Val()
	for i := 0; i < 3; i++ {
		if _, _, err := r.take(fmt.Sprintf("late-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := raw.DBSize(context.Background()).Val(); n != n0+3 {
		t.Errorf("Redis holds %d keys after 3 takes on new clients, had %d: decisions are not on Redis", n, n0)
	}
	_, d, _ := r.detailed()
	if d.Status != server.StatusPass {
		t.Errorf("status = %s after Redis started", d.Status)
	}
}

// TestChaosPostgresStopped stops Postgres: decisions go on, health warns,
// readiness holds; when it is back health passes again.
func TestChaosPostgresStopped(t *testing.T) {
	rs := limitertest.NewRedisServer(t)
	pg := limitertest.NewPostgresServer(t)
	r := startChaos(t, "redis://"+rs.Addr, "error", env{"SLUICE_POSTGRES_DSN": pg.DSN})
	r.waitHealth("all pass", func(d server.DetailedHealth) bool { return d.Status == server.StatusPass })
	_, d, _ := r.detailed()
	if p := d.Checks["postgres"]; p.Overrides == nil || p.Breaker != "closed" {
		t.Errorf("checks.postgres = %+v", p)
	}

	pg.Stop()
	l := startLoad(r, 4)
	took := r.waitHealth("postgres fail, warn", func(d server.DetailedHealth) bool {
		return d.Checks["postgres"].Status == server.StatusFail && d.Status == server.StatusWarn
	})
	r.waitHealth("postgres breaker open", func(d server.DetailedHealth) bool { return d.Breakers["postgres"].State != "closed" })
	time.Sleep(200 * time.Millisecond)
	l.finish()
	t.Logf("postgres stopped: health warn after %v; %d decisions meanwhile, errors %v, slowest %v",
		took.Round(time.Millisecond), l.calls, l.errs, l.slowest.Round(time.Millisecond))
	if l.failed() > 0 {
		t.Errorf("%d decisions failed with Postgres down: %v", l.failed(), l.lastErr)
	}
	if l.slowest > time.Second {
		t.Errorf("a decision took %v with Postgres down", l.slowest)
	}
	if got := r.getCode("/health/ready"); got != 200 {
		t.Errorf("ready = %d with Postgres down", got)
	}
	if !strings.Contains(r.logs.String(), "breaker=postgres from=closed to=open") {
		t.Errorf("no log of the Postgres breaker opening:\n%s", r.logs.String())
	}

	pg.Start()
	back := r.waitHealth("all pass again", func(d server.DetailedHealth) bool { return d.Status == server.StatusPass })
	t.Logf("postgres started: health pass after %v", back.Round(time.Millisecond))
}

// TestChaosSecretsHidden runs with a Redis password and a Postgres DSN
// password, takes both backends down, and looks for either secret in
// everything Sluice shows or logs.
func TestChaosSecretsHidden(t *testing.T) {
	const redisPass, pgPass = "rd-Secret-4711", "pg-Secret-0815"
	rs := limitertest.NewRedisServer(t)
	raw := goredis.NewClient(&goredis.Options{Addr: rs.Addr, MaxRetries: -1})
	defer raw.Close()
	if err := raw.ConfigSet(context.Background(), "requirepass", redisPass).Err(); err != nil {
		t.Fatal(err)
	}
	pg := limitertest.NewPostgresServer(t)
	// Trust authentication on loopback ignores the password, so the DSN
	// works while carrying a secret to look for.
	dsn := strings.Replace(pg.DSN, "postgres@", "postgres:"+pgPass+"@", 1)
	if dsn == pg.DSN {
		t.Fatalf("cannot put a password into %s", pg.DSN)
	}
	r := startChaos(t, "redis://:"+redisPass+"@"+rs.Addr, "local", env{"SLUICE_POSTGRES_DSN": dsn})
	r.waitHealth("all pass", func(d server.DetailedHealth) bool { return d.Status == server.StatusPass })
	var shown []string
	_, _, body := r.detailed()
	shown = append(shown, body)

	rs.Stop()
	pg.Stop()
	for i := 0; i < 5; i++ {
		_, _, _ = r.take(fmt.Sprintf("secret-%d", i)) // traffic for the breakers; answers do not matter
	}
	r.waitHealth("both fail", func(d server.DetailedHealth) bool {
		return d.Checks["redis"].Status == server.StatusFail && d.Checks["postgres"].Status == server.StatusFail
	})
	_, _, body = r.detailed()
	shown = append(shown, body)
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + r.http + "/health/ready")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		shown = append(shown, string(b))
	}
	if err := r.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	shown = append(shown, r.logs.String())
	all := strings.Join(shown, "\n")
	for _, secret := range []string{redisPass, pgPass} {
		if strings.Contains(all, secret) {
			t.Errorf("%s appears in health output or logs:\n%s", secret, all)
		}
	}
	if !strings.Contains(all, "xxxxx") {
		t.Errorf("no redacted URL anywhere; the test is not looking at the right output:\n%s", all)
	}
}

// TestChaosRedisRecoversWithoutTraffic opens the Redis breaker, restarts
// Redis, and then sends only requests that need no Redis (an unknown
// domain): the background check must close the breaker and health must
// pass again, within the open period and a check interval or so.
func TestChaosRedisRecoversWithoutTraffic(t *testing.T) {
	rs := limitertest.NewRedisServer(t)
	r := startChaos(t, "redis://"+rs.Addr, "local", nil)
	r.waitHealth("all pass", func(d server.DetailedHealth) bool { return d.Status == server.StatusPass })

	rs.Stop()
	for i := 0; i < 3; i++ { // consecutive_failures: 3
		if _, _, err := r.take("trip"); err != nil {
			t.Fatalf("take while Redis is down: %v", err)
		}
	}
	r.waitHealth("redis breaker open", func(d server.DetailedHealth) bool { return d.Breakers["redis"].State == "open" })

	rs.Start()
	back := time.Now()
	idle := &rlsv3.RateLimitRequest{Domain: "unconfigured", Descriptors: []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "client", Value: "x"}}},
	}}
	var last string
	for deadline := back.Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := r.client.ShouldRateLimit(ctx, idle)
		cancel()
		if err != nil {
			t.Fatalf("request to an unconfigured domain: %v", err)
		}
		_, d, body := r.detailed()
		last = body
		if d.Status == server.StatusPass && d.Breakers["redis"].State == "closed" {
			break
		}
		if s := d.Breakers["redis"]; s.State == "open" && s.NextProbeAt != nil && time.Since(*s.NextProbeAt) > time.Second {
			t.Fatalf("breaker reports open a second after its next_probe_at:\n%s", body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 10s after Redis came back with only unconfigured-domain traffic; last:\n%s\nlog:\n%s", last, r.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// open_duration 300ms plus a 50ms check interval bound the wait after
	// Redis is back; logged, not asserted, on a shared machine.
	t.Logf("health pass and breaker closed %v after Redis came back", time.Since(back).Round(time.Millisecond))
}
