package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"
)

// TestHealthcheckRoute: with http.healthcheck, GET /healthcheck answers
// as envoyproxy/ratelimit's does: 200 "OK" while ready, 500 while a
// required backend fails; 503 before any limits are loaded; without it
// the path is not served.
func TestHealthcheckRoute(t *testing.T) {
	var failing atomic.Bool
	chk := server.Check{Name: "redis", Fn: func(ctx context.Context) error {
		if failing.Load() {
			return errors.New("connection refused")
		}
		return nil
	}}
	h := start(t, edgeDomains(), false, withChecks(chk),
		withConfig(func(c *server.Config) { c.HTTP.Healthcheck = true }))
	limitertest.Eventually(t, 5*time.Second, "healthy", func() bool { c, _ := h.get("/healthcheck"); return c == 200 })
	if _, body := h.get("/healthcheck"); body != "OK" {
		t.Errorf("healthy body = %q, want OK", body)
	}
	failing.Store(true)
	limitertest.Eventually(t, 5*time.Second, "unhealthy", func() bool { c, _ := h.get("/healthcheck"); return c == 500 })

	// Before any limits (waiting for the first xDS config): 503, then 200
	// once they are set.
	w := start(t, nil, false, withoutLimits(), withConfig(func(c *server.Config) { c.HTTP.Healthcheck = true }))
	if code, _ := w.get("/healthcheck"); code != http.StatusServiceUnavailable {
		t.Errorf("before any limits: %d, want 503", code)
	}
	lims, err := limiter.Compile(edgeDomains(), limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.lim.SetLimits(lims)
	limitertest.Eventually(t, 5*time.Second, "ready once limits are set", func() bool { c, _ := w.get("/healthcheck"); return c == 200 })

	plain := start(t, edgeDomains(), false)
	if code, _ := plain.get("/healthcheck"); code != http.StatusNotFound {
		t.Errorf("without http.healthcheck: %d, want 404", code)
	}
}

// TestMetricsListener: http.metrics_addr serves the registry's metrics at
// http.metrics_path on a listener of its own; other paths are 404 there.
func TestMetricsListener(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "v1"})
	h := start(t, edgeDomains(), false,
		withConfig(func(c *server.Config) {
			c.HTTP.MetricsAddr = "127.0.0.1:0"
			c.HTTP.MetricsPath = "/stats/prometheus"
		}),
		withOptions(func(o *server.Options) { o.Metrics = m }))
	h.mustCall(req("edge", desc(kv{"remote_address", "10.0.0.1"})))
	addr := h.srv.MetricsAddr()
	if addr == nil || addr.String() == h.srv.HTTPAddr().String() {
		t.Fatalf("metrics addr = %v, want a listener of its own", addr)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/stats/prometheus")
	if code != 200 || !strings.Contains(body, "sluice_") {
		t.Fatalf("metrics listener: %d, %.200q", code, body)
	}
	if code, _ := get("/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the metrics listener with another path: %d, want 404", code)
	}
	if code, _ := get("/json"); code != http.StatusNotFound {
		t.Errorf("/json on the metrics listener: %d, want 404", code)
	}
}

// TestMetricsListenerConfig: a metrics path without an address, or one
// not starting with /, is refused naming the field.
func TestMetricsListenerConfig(t *testing.T) {
	for _, tc := range []struct {
		addr, path, want string
	}{
		{"", "/m", "http.metrics_path: needs http.metrics_addr"},
		{"127.0.0.1:0", "m", `http.metrics_path: "m" must start with /`},
	} {
		cfg := testConfig()
		cfg.HTTP.MetricsAddr, cfg.HTTP.MetricsPath = tc.addr, tc.path
		_, err := server.New(cfg, limiter.New(nil, limiter.Config{}), server.Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("addr %q path %q: %v, want %q", tc.addr, tc.path, err, tc.want)
		}
	}
	cfg := testConfig()
	cfg.HTTP.MetricsAddr = "127.0.0.1:0"
	if _, err := server.New(cfg, limiter.New(nil, limiter.Config{}), server.Options{}); err == nil ||
		!strings.Contains(err.Error(), "http.metrics_addr") {
		t.Errorf("metrics_addr without metrics: %v", err)
	}
}
