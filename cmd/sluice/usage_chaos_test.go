//go:build integration

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestChaosUsageUnrecorded: usage reports made while Redis is down are
// counted by the failure mode that answered them, none silently: allow and
// error record them nowhere, local only in the replica's own store. The
// limit takes usage from SLUICE_DEFAULT_CHARGE (its file does not say).
func TestChaosUsageUnrecorded(t *testing.T) {
	for _, mode := range []string{"local", "allow", "error"} {
		t.Run(mode, func(t *testing.T) {
			rs := limitertest.NewRedisServer(t)
			cfg, limits := testConfigFile(t, fmt.Sprintf(`redis:
  read_timeout: %[1]v
  write_timeout: %[1]v
  dial_timeout: %[1]v
  failure_mode: %[2]s
  breaker: {consecutive_failures: 2, open_duration: 1m}
`, chaosReadTimeout, mode))
			writeFile(t, filepath.Join(limits, "llm.yaml"),
				"domain: llm\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 1000}\n")
			r := startServe(t, serveWith(cfg, env{"SLUICE_REDIS_URL": "redis://" + rs.Addr, "SLUICE_DEFAULT_CHARGE": "usage"}.get))
			report := func(cost uint32) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := r.client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "llm", HitsAddend: cost,
					Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "tenant", Value: "acme"}}}}})
				return err
			}
			// Recorded in Redis: not counted.
			if err := report(7); err != nil {
				t.Fatal(err)
			}
			rs.Stop()
			for range 4 {
				err := report(25)
				if mode == "error" {
					if status.Code(err) != codes.Unavailable {
						t.Fatalf("error mode with Redis down: %v, want Unavailable", err)
					}
				} else if err != nil {
					t.Fatal(err)
				}
			}
			f := r.waitMetric("sluice_usage_unrecorded_tokens_total", 100, "mode="+mode)
			for _, other := range []string{"local", "allow", "error"} {
				if other != mode {
					if got := f.Value(t, "sluice_usage_unrecorded_tokens_total", "mode="+other); got != 0 {
						t.Errorf("unrecorded{mode=%s} = %v, want 0", other, got)
					}
				}
			}
		})
	}
}
