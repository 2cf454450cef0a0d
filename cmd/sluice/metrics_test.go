package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server/metrics/metricstest"
)

// scrape fetches /metrics from a running serve.
func (r *running) scrape() (metricstest.Families, string) {
	r.t.Helper()
	resp, err := http.Get("http://" + r.http + "/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		r.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	return metricstest.Parse(r.t, strings.NewReader(string(body))), string(body)
}

// waitMetric scrapes until the series has the value.
func (r *running) waitMetric(name string, want float64, labels ...string) metricstest.Families {
	r.t.Helper()
	var f metricstest.Families
	limitertest.Eventually(r.t, 10*time.Second, fmt.Sprintf("%s{%s} = %v", name, strings.Join(labels, ","), want), func() error {
		f, _ = r.scrape()
		if got := f.Value(r.t, name, labels...); got != want {
			return fmt.Errorf("it is %v; log:\n%s", got, r.logs.String())
		}
		return nil
	})
	return f
}

func TestServeMetrics(t *testing.T) {
	cfg, limits := testConfigFile(t, "")
	r := startServe(t, serveWith(cfg, env{}.get))
	for range 3 {
		r.limitOf("api", "tenant", "t1")
	}
	// gRPC's stats handler counts a call at its end, which can come just
	// after the client has its answer: wait for the third.
	f := r.waitMetric("sluice_grpc_server_handled_total", 3, "method=/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", "code=OK")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_decisions_total", []string{"domain=api", "descriptor=tenant", "code=ok", "shadow=false"}, 3},
		{"sluice_store_requests_total", []string{"store=memory", "result=allowed"}, 3},
		{"sluice_grpc_server_handled_total", []string{"method=/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", "code=OK"}, 3},
		{"sluice_config_last_reload_successful", nil, 1},
		{"sluice_build_info", []string{"version=" + version}, 1},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}

	// A bad limit file is a failed reload; fixing it, a good one.
	writeFile(t, filepath.Join(limits, "api.yaml"), "domain: api\ndescriptors:\n  - key: tenant\n    bogus: 1\n")
	r.waitMetric("sluice_config_reloads_total", 1, "result=failure")
	r.waitMetric("sluice_config_last_reload_successful", 0)
	writeFile(t, filepath.Join(limits, "api.yaml"), limitFile("20"))
	r.waitMetric("sluice_config_reloads_total", 1, "result=success")
	r.waitMetric("sluice_config_last_reload_successful", 1)
}

// TestServeMetricsRedisDown: with Redis unreachable, every decision is a
// Redis error answered by the failure mode, the breaker opens, and the
// backend shows down; the password never shows.
func TestServeMetricsRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, _ := testConfigFile(t, "health: {check_interval: 50ms, check_timeout: 100ms}\nredis: {failure_mode: local}\n")
	r := startServe(t, serveWith(cfg, env{"SLUICE_REDIS_URL": "redis://:pw-hidden@" + addr}.get))
	const n = 8
	for range n {
		if got := r.limitOf("api", "tenant", "t1"); got != 10 {
			t.Fatalf("limit %d, want 10 from the local failure mode", got)
		}
	}
	f := r.waitMetric("sluice_backend_up", 0, "backend=redis")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_store_requests_total", []string{"store=redis", "result=error"}, n},
		{"sluice_store_requests_total", []string{"store=local", "result=allowed"}, n},
		{"sluice_failure_mode_decisions_total", []string{"mode=local"}, n},
		{"sluice_breaker_state", []string{"breaker=redis"}, 2},
		{"sluice_breaker_transitions_total", []string{"breaker=redis", "from=closed", "to=open"}, 1},
		{"sluice_decisions_total", []string{"domain=api", "descriptor=tenant", "code=ok"}, n},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	// The default breaker opens after 5 failures; the rest are refused.
	if got := f.Value(t, "sluice_breaker_rejections_total", "breaker=redis"); got != n-5 {
		t.Errorf("breaker rejections %v, want %d", got, n-5)
	}
	if _, body := r.scrape(); strings.Contains(body, "pw-hidden") {
		t.Error("/metrics shows the Redis password")
	}
}
