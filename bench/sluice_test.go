//go:build integration

package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/bench"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/redis"
	"github.com/sluice-rl/sluice/server"
)

// startSluice runs a real Sluice server on a real Redis with two limits
// in domain "bench": 20 per second with a burst of 10 on key "k", and a
// usage budget of 1000 per second with a burst of 2000 on key "budget".
func startSluice(t *testing.T) string {
	t.Helper()
	rcfg := redis.DefaultConfig()
	rcfg.URL = "redis://" + limitertest.StartRedis(t)
	// Generous: the race detector on a shared machine is slow, and this
	// test is about the harness's figures, not Redis's timeouts.
	rcfg.ReadTimeout, rcfg.WriteTimeout = 5*time.Second, 5*time.Second
	st, err := redis.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	lim := limiter.New(st, limiter.Config{})
	limits, err := limiter.Compile([]limiter.DomainConfig{{Domain: "bench", File: "test", Descriptors: []limiter.DescriptorConfig{
		{Key: "k", RateLimit: &limiter.RateLimit{RequestsPerUnit: 20, Unit: limiter.Second, Burst: 10}},
		{Key: "budget", RateLimit: &limiter.RateLimit{RequestsPerUnit: 1000, Unit: limiter.Second, Burst: 2000, Charge: limiter.ChargeUsage}},
	}}}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim.SetLimits(limits)
	cfg := server.DefaultConfig()
	cfg.GRPC.Addr, cfg.HTTP.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Shutdown.DrainDelay = 0
	srv, err := server.New(cfg, lim, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return srv.GRPCAddr().String()
}

// TestAgainstSluice drives a real Sluice on Redis in both loop modes and
// checks the harness's JSON: no errors, no over-admission, and the hot
// buckets really were limited.
func TestAgainstSluice(t *testing.T) {
	addr := startSluice(t)
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"closed", []string{"-concurrency", "8"}},
		{"open", []string{"-rate", "600"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"-addr", addr, "-duration", "2s", "-warmup", "300ms", "-q",
				"-domain", "bench", "-key", "k", "-values", "2", "-limit", "20/second,10",
				"-json", t.TempDir() + "/report.json", "-timeout", "10s", "-max-over-admission", "0", "-max-error-rate", "0"}, mode.args...)
			code := bench.Main(context.Background(), args, &out, &errOut)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out.String(), errOut.String())
			}
			var rep bench.Report
			b, err := readFile(args)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.ErrorCount != 0 || rep.Accuracy == nil || rep.Accuracy.OverAdmission != 0 {
				t.Fatalf("errors %d, accuracy %+v", rep.ErrorCount, rep.Accuracy)
			}
			if rep.Codes["OVER_LIMIT"] == 0 || rep.Codes["OK"] == 0 {
				t.Fatalf("codes %v: the workload should be partly over its limit", rep.Codes)
			}
			if rep.Mode != mode.name {
				t.Fatalf("mode %q, want %q", rep.Mode, mode.name)
			}
		})
	}
}

func readFile(args []string) ([]byte, error) {
	for i, a := range args {
		if a == "-json" {
			return os.ReadFile(args[i+1])
		}
	}
	return nil, nil
}

// TestUsageAgainstSluice runs the usage workload against the budget rule:
// the streams use at least 80% of the allowance and no more than the
// allowance plus one report per stream.
func TestUsageAgainstSluice(t *testing.T) {
	addr := startSluice(t)
	var out, errOut bytes.Buffer
	code := bench.Main(context.Background(), []string{"-addr", addr, "-workload", "usage", "-duration", "1500ms", "-warmup", "0", "-q",
		"-domain", "bench", "-key", "budget", "-values", "1", "-limit", "1000/second,2000", "-cost", "100-300",
		"-concurrency", "16", "-timeout", "10s", "-max-error-rate", "0"}, &out, &errOut)
	t.Logf("\n%s", out.String())
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "usage-max") || !strings.Contains(out.String(), "usage-min") {
		t.Fatal("the report lacks the usage verdict")
	}
}
