package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server"
)

// running is a `sluice serve` started by a test.
type running struct {
	t         *testing.T
	grpc      string
	http      string
	adminAddr string // the admin API's address: http's unless separate
	logs      *limitertest.SyncBuffer
	cancel    context.CancelFunc
	done      chan error
	conn      *grpc.ClientConn
	client    rlsv3.RateLimitServiceClient
}

// startServe runs fn (serve or run) with options whose listen hook tells
// the addresses, and waits for them; fn sets getenv.
func startServe(t *testing.T, fn func(ctx context.Context, o options) error) *running {
	t.Helper()
	r := &running{t: t, logs: &limitertest.SyncBuffer{}, done: make(chan error, 1)}
	addrs := make(chan [3]string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	o := options{stdout: io.Discard, stderr: r.logs, onListen: func(g, h, a net.Addr) {
		addrs <- [3]string{g.String(), h.String(), a.String()}
	}}
	go func() { r.done <- fn(ctx, o) }()
	select {
	case a := <-addrs:
		r.grpc, r.http, r.adminAddr = a[0], a[1], a[2]
	case err := <-r.done:
		cancel()
		t.Fatalf("serve returned before listening: %v\n%s", err, r.logs.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("serve did not listen\n%s", r.logs.String())
	}
	conn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	r.client = rlsv3.NewRateLimitServiceClient(conn)
	t.Cleanup(func() { _ = r.stop() }) // tests that care call stop themselves
	return r
}

// serveWith is a startServe fn: `sluice serve -config cfg` with the
// environment getenv.
func serveWith(cfg string, getenv func(string) string) func(context.Context, options) error {
	return func(ctx context.Context, o options) error {
		o.getenv = getenv
		return serve(ctx, cfg, o)
	}
}

func (r *running) stop() error {
	r.t.Helper()
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
	r.cancel()
	if r.done == nil {
		return nil
	}
	select {
	case err := <-r.done:
		r.done = nil
		return err
	case <-time.After(15 * time.Second):
		r.t.Fatalf("serve did not return after cancel\n%s", r.logs.String())
	}
	return nil
}

// limitOf asks for one descriptor and returns its current_limit's
// requests_per_unit (0 when none).
func (r *running) limitOf(domain, key, value string) uint32 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: key, Value: value}}},
	}})
	if err != nil {
		r.t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
}

func (r *running) waitLog(substr string) {
	r.t.Helper()
	limitertest.Eventually(r.t, 10*time.Second, fmt.Sprintf("log to show %q", substr), func() error {
		if logs := r.logs.String(); !strings.Contains(logs, substr) {
			return fmt.Errorf("log:\n%s", logs)
		}
		return nil
	})
}

func (r *running) waitLimit(domain, key, value string, want uint32) {
	r.t.Helper()
	limitertest.Eventually(r.t, 10*time.Second, fmt.Sprintf("limit %d", want), func() error {
		if got := r.limitOf(domain, key, value); got != want {
			return fmt.Errorf("limit is %d; log:\n%s", got, r.logs.String())
		}
		return nil
	})
}

func limitFile(rpu string) string {
	return "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: " + rpu + "}\n"
}

func testConfigFile(t *testing.T, extra string) (cfgPath, limitsDir string) {
	t.Helper()
	dir := t.TempDir()
	limitsDir = filepath.Join(dir, "limits")
	if err := os.Mkdir(limitsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(limitsDir, "api.yaml"), limitFile("10"))
	cfgPath = filepath.Join(dir, "config.yaml")
	writeFile(t, cfgPath, `grpc: {addr: "127.0.0.1:0"}
http: {addr: "127.0.0.1:0"}
limits:
  path: limits
  watch_interval: 20ms
shutdown: {drain_delay: 0s, timeout: 5s}
`+extra)
	return cfgPath, limitsDir
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestRunServe runs the whole program as main does, serving the shipped
// config.yaml on loopback ports, and checks that cancelling stops it with
// no goroutine left behind.
func TestRunServe(t *testing.T) {
	t.Setenv("SLUICE_GRPC_ADDR", "127.0.0.1:0")
	t.Setenv("SLUICE_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("SLUICE_ADMIN_TOKEN", "very-secret-token-0123456789abcdef")
	// os/signal starts one goroutine for the process on first use; start
	// it before counting.
	warm := make(chan os.Signal, 1)
	signal.Notify(warm, os.Interrupt)
	signal.Stop(warm)
	before := runtime.NumGoroutine()

	r := startServe(t, func(ctx context.Context, o options) error {
		o.getenv = os.Getenv
		return run(ctx, []string{"serve", "-config", "../../config.yaml"}, o)
	})
	if got := r.limitOf("edge", "remote_address", "1.2.3.4"); got != 10 {
		t.Errorf("edge remote_address limit = %d, want 10", got)
	}
	hc := healthpb.NewHealthClient(r.conn)
	if resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v", resp, err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + r.http + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("ready = %d", resp.StatusCode)
	}

	if err := r.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := r.logs.String()
	if strings.Contains(logs, "very-secret-token-0123456789abcdef") {
		t.Errorf("logs show the admin token:\n%s", logs)
	}
	for _, w := range []string{"limits loaded", "serving", "draining", "stopped"} {
		if !strings.Contains(logs, w) {
			t.Errorf("logs lack %q:\n%s", w, logs)
		}
	}
	limitertest.Eventually(t, 5*time.Second, "goroutines to end", func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func TestReloadOnFileChange(t *testing.T) {
	cfg, limits := testConfigFile(t, "")
	r := startServe(t, serveWith(cfg, env{}.get))
	if got := r.limitOf("api", "tenant", "t1"); got != 10 {
		t.Fatalf("limit = %d, want 10", got)
	}
	writeFile(t, filepath.Join(limits, "api.yaml"), limitFile("25"))
	r.waitLimit("api", "tenant", "t1", 25)
	r.waitLog("reason=\"file change\"")

	// A bad file keeps the running limits.
	writeFile(t, filepath.Join(limits, "api.yaml"), "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 5}\n    bogus: 1\n")
	r.waitLog("reload failed; keeping the running limits")
	if !strings.Contains(r.logs.String(), "api.yaml:5: ") {
		t.Errorf("reload error does not name file and line:\n%s", r.logs.String())
	}
	if got := r.limitOf("api", "tenant", "t1"); got != 25 {
		t.Errorf("limit after a bad reload = %d, want 25", got)
	}
	// A new file in the directory is picked up once the bad one is fixed.
	writeFile(t, filepath.Join(limits, "api.yaml"), limitFile("30"))
	writeFile(t, filepath.Join(limits, "web.yaml"), "domain: web\ndescriptors:\n  - key: ip\n    rate_limit: {unit: minute, requests_per_unit: 7}\n")
	r.waitLimit("web", "ip", "x", 7)
	r.waitLimit("api", "tenant", "t1", 30)

	// A change to config.yaml itself reloads too.
	data, _ := os.ReadFile(cfg)
	writeFile(t, cfg, strings.Replace(string(data), "  path: limits\n",
		"  path: limits\n  domains:\n    - domain: inline\n      descriptors:\n        - key: k\n          rate_limit: {unit: hour, requests_per_unit: 3}\n", 1))
	r.waitLimit("inline", "k", "v", 3)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestServeRefusesBadLimits(t *testing.T) {
	cfg, limits := testConfigFile(t, "")
	writeFile(t, filepath.Join(limits, "api.yaml"), limitFile("-1"))
	var stderr limitertest.SyncBuffer
	err := serve(context.Background(), cfg, options{getenv: env{}.get, stderr: &stderr})
	if err == nil {
		t.Fatal("serve started with a bad limit file")
	}
	if !strings.Contains(stderr.String(), "api.yaml:4: ") {
		t.Errorf("stderr = %q", stderr.String())
	}
}

// TestServeRedisUnreachable: Sluice starts and serves without Redis. In
// local mode it is ready and decides; in error mode it is live, not ready.
func TestServeRedisUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, c := range []struct {
		mode  string
		ready int
	}{{"local", 200}, {"error", 503}} {
		t.Run(c.mode, func(t *testing.T) {
			cfg, _ := testConfigFile(t, "health: {check_interval: 50ms, check_timeout: 100ms}\nredis: {failure_mode: "+c.mode+"}\n")
			r := startServe(t, serveWith(cfg, env{"SLUICE_REDIS_URL": "redis://:pw-hidden@" + addr}.get))
			r.waitLog("backend check failing")
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for _, p := range []struct {
				path string
				code int
			}{{"/health/live", 200}, {"/health/ready", c.ready}} {
				resp, err := client.Get("http://" + r.http + p.path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != p.code {
					t.Errorf("%s = %d, want %d", p.path, resp.StatusCode, p.code)
				}
			}
			if strings.Contains(r.logs.String(), "pw-hidden") {
				t.Errorf("logs show the Redis password:\n%s", r.logs.String())
			}
		})
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"version"}, options{getenv: env{}.get, stdout: &out, stderr: &errb}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "sluice dev (revision ") {
		t.Errorf("version = %q", out.String())
	}
	version, revision = "v1.2.3", "abc123"
	defer func() { version, revision = "dev", "" }()
	out.Reset()
	if err := run(context.Background(), []string{"version"}, options{getenv: env{}.get, stdout: &out, stderr: &errb}); err != nil {
		t.Fatalf("version: %v", err)
	}
	if !strings.HasPrefix(out.String(), "sluice v1.2.3 (revision abc123, go") {
		t.Errorf("version = %q", out.String())
	}
	for _, args := range [][]string{nil, {"frobnicate"}, {"serve", "-bogus"}, {"check", "extra"}} {
		errb.Reset()
		err := run(context.Background(), args, options{getenv: env{}.get, stdout: &out, stderr: &errb})
		if ee := (exitError{}); !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("run(%q) = %v, want exit 2", args, err)
		}
		if errb.Len() == 0 {
			t.Errorf("run(%q) printed no usage", args)
		}
	}
}

func TestRunCheck(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"check", "-config", "../../config.yaml"}, options{getenv: env{}.get, stdout: &out, stderr: &errb}); err != nil {
		t.Fatalf("check config.yaml: %v\n%s", err, errb.String())
	}
	if !strings.HasPrefix(out.String(), "../../config.yaml: ok: 1 domain, 4 rules, version sha256:") {
		t.Errorf("summary = %q", out.String())
	}
}

// TestServeHealthShowsNoCredentials: with Redis and Postgres down,
// /health/detailed names each backend by host:port, and neither it nor
// the logs show a user name or password.
func TestServeHealthShowsNoCredentials(t *testing.T) {
	var addrs [2]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close() // nothing listens there now
	}
	cfg, _ := testConfigFile(t, "health: {check_interval: 50ms, check_timeout: 200ms}\n")
	e := env{
		"SLUICE_REDIS_URL":    "redis://redis-user:pw%2Fhidden%3A1@" + addrs[0] + "/0",
		"SLUICE_POSTGRES_DSN": "postgres://pg-user:pg%2Fsecret%40@" + addrs[1] + "/sluice?sslmode=disable",
	}
	r := startServe(t, serveWith(cfg, e.get))
	r.waitHealth("both checks failing", func(d server.DetailedHealth) bool {
		return d.Checks["redis"].Status == "fail" && d.Checks["postgres"].Status == "fail"
	})
	_, d, body := r.detailed()
	if d.Checks["redis"].Address != addrs[0] || d.Checks["postgres"].Address != addrs[1] {
		t.Errorf("addresses = %+v, want redis %s, postgres %s", d.Checks, addrs[0], addrs[1])
	}
	for _, secret := range []string{"redis-user", "pg-user", "hidden", "secret"} {
		if strings.Contains(body, secret) {
			t.Errorf("/health/detailed shows %q:\n%s", secret, body)
		}
	}
	for _, secret := range []string{"hidden", "secret"} {
		if strings.Contains(r.logs.String(), secret) {
			t.Errorf("logs show %q:\n%s", secret, r.logs.String())
		}
	}
}

func (r *running) detailed() (int, server.DetailedHealth, string) {
	r.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + r.http + "/health/detailed")
	if err != nil {
		r.t.Fatalf("GET /health/detailed: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var d server.DetailedHealth
	if err := json.Unmarshal(body, &d); err != nil {
		r.t.Fatalf("decode /health/detailed %q: %v", body, err)
	}
	return resp.StatusCode, d, string(body)
}

func (r *running) getCode(path string) int {
	r.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + r.http + path)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitHealth polls /health/detailed until cond holds, for up to 10s, and
// returns how long that took.
func (r *running) waitHealth(what string, cond func(server.DetailedHealth) bool) time.Duration {
	r.t.Helper()
	start := time.Now()
	limitertest.Eventually(r.t, 10*time.Second, "health to show "+what, func() error {
		if _, d, body := r.detailed(); !cond(d) {
			return fmt.Errorf("last:\n%s\nlog:\n%s", body, r.logs.String())
		}
		return nil
	})
	return time.Since(start)
}
