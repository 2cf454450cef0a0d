//go:build integration

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/compat"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestCompatModeStart runs the binary as /bin/ratelimit with an Envoy
// Gateway-like environment: Redis from REDIS_*, limits from RUNTIME_*,
// Prometheus from USE_PROMETHEUS, and checks it decides over gRPC with the
// file's limit, answers /healthcheck, serves the metrics on
// PROMETHEUS_ADDR and names the unimplemented settings in one warning.
func TestCompatModeStart(t *testing.T) {
	redisAddr := limitertest.StartRedis(t)
	root := t.TempDir()
	dir := filepath.Join(root, "ratelimit", "config")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	limits := "domain: gw\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 2}\n"
	if err := os.WriteFile(filepath.Join(dir, "gw.yaml"), []byte(limits), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	env := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "GRPC_HOST": "127.0.0.1", "GRPC_PORT": "0",
		"REDIS_SOCKET_TYPE": "tcp", "REDIS_TYPE": "SINGLE", "REDIS_URL": redisAddr, "REDIS_POOL_SIZE": "4",
		"RUNTIME_ROOT": root, "RUNTIME_SUBDIRECTORY": "ratelimit", "RUNTIME_IGNOREDOTFILES": "true", "RUNTIME_WATCH_ROOT": "false",
		"LOG_LEVEL": "info", "USE_STATSD": "false", "CONFIG_TYPE": "FILE",
		"USE_PROMETHEUS": "true", "PROMETHEUS_ADDR": promAddr,
		"LIMIT_RESPONSE_HEADERS_ENABLED": "true",
		// Not implemented, and not deciding: named in the warning.
		"MERGE_DOMAIN_CONFIG": "true", "CONFIG_GRPC_XDS_NODE_ID": "envoy-ratelimit",
		// Replaced by the compat settings.
		"SLUICE_LIMITS": "/nonexistent",
	}
	r := startServe(t, func(ctx context.Context, o options) error {
		o.getenv = func(k string) string { return env[k] }
		return run(ctx, compat.Args([]string{"/bin/ratelimit"}), o)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ask := func() *rlsv3.RateLimitResponse {
		resp, err := r.client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "gw", Descriptors: []*ratelimitv3.RateLimitDescriptor{
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "user", Value: "u1"}}},
		}})
		if err != nil {
			t.Fatalf("ShouldRateLimit: %v\n%s", err, r.logs.String())
		}
		return resp
	}
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp := ask()
		if resp.GetOverallCode() != want {
			t.Fatalf("call %d: %v, want %v", i, resp.GetOverallCode(), want)
		}
		if got := resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit(); got != 2 {
			t.Fatalf("call %d: limit %d, want the file's 2", i, got)
		}
	}
	if !strings.Contains(r.logs.String(), "store: redis") {
		t.Errorf("the store is not Redis:\n%s", r.logs.String())
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, "http://"+r.http+"/healthcheck")
		if code == 200 && body == "OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthcheck = %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := httpGet(t, "http://"+promAddr+"/metrics")
	if code != 200 || !strings.Contains(body, "sluice_decisions_total") {
		t.Fatalf("PROMETHEUS_ADDR /metrics: %d %.300q", code, body)
	}

	logs := r.logs.String()
	var warnLines []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "not implemented, ignored") {
			warnLines = append(warnLines, l)
		}
	}
	if len(warnLines) != 1 || !strings.Contains(warnLines[0], "MERGE_DOMAIN_CONFIG") ||
		!strings.Contains(warnLines[0], "CONFIG_GRPC_XDS_NODE_ID") {
		t.Errorf("want one warning naming MERGE_DOMAIN_CONFIG and CONFIG_GRPC_XDS_NODE_ID, got %q\n%s", warnLines, logs)
	}
	if !strings.Contains(logs, "SLUICE_LIMITS is ignored") {
		t.Errorf("no note that SLUICE_LIMITS is ignored:\n%s", logs)
	}
	if err := r.stop(); err != nil {
		t.Errorf("serve: %v\n%s", err, logs)
	}
}
