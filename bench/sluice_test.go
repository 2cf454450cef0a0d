//go:build integration

package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/bench"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/redis"
	"github.com/sluice-rl/sluice/server"
)

// startSluice runs a real Sluice server on a real Redis with one limit,
// 20 per second with a burst of 10, on key "k" of domain "bench".
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
