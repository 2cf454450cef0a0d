package deploy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/metrics"
	"github.com/sluice-rl/sluice/server/metrics/metricstest"
)

// family is one metric family Sluice exports: its name, type and labels.
type family struct {
	name   string
	typ    string
	labels []string
}

// methodStream is the server transport stream of a call to one method.
type methodStream string

func (s methodStream) Method() string             { return string(s) }
func (methodStream) SetHeader(metadata.MD) error  { return nil }
func (methodStream) SendHeader(metadata.MD) error { return nil }
func (methodStream) SetTrailer(metadata.MD) error { return nil }

// exportedMetrics lists the metric families of a real metrics registry,
// after touching every metric once so each vector shows its labels.
func exportedMetrics(t *testing.T) map[string]family {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{Version: "test"})

	dc, err := limiter.ParseLimitFile("edge.yaml", []byte("domain: edge\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	lims, err := limiter.Compile([]limiter.DomainConfig{dc}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms := memory.New(nil)
	m.WatchMemoryStore("memory", func() metrics.MemoryStats {
		st := ms.Stats()
		return metrics.MemoryStats{Buckets: st.Buckets, Evictions: st.Evictions, EvictedDebt: st.EvictedDebt}
	})
	lim := limiter.New(m.Store("memory", ms), limiter.Config{})
	lim.SetLimits(lims)
	req := &limiter.Request{Domain: "edge", Descriptors: []limiter.Descriptor{{Entries: []limiter.Entry{{Key: "k", Value: "v"}}}}}
	var resp limiter.Response
	if err := lim.Decide(context.Background(), req, &resp); err != nil {
		t.Fatal(err)
	}
	m.ObserveDecision(lims, req, &resp, time.Millisecond)
	m.ObserveBatchSize(1)
	m.FailureModeDecision(limiter.FailLocal, errors.New("down"))
	b, err := breaker.New("redis", breaker.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	m.WatchBreaker(b)
	m.BreakerTransition("redis", breaker.StateClosed, breaker.StateOpen)
	m.BackendCheck("redis", nil, time.Millisecond)
	m.ConfigReload(nil)
	gs := m.GRPCStats()
	gs.Serve("/s/m")
	gs.HandleRPC(grpc.NewContextWithServerTransportStream(context.Background(), methodStream("/s/m")), &stats.End{})

	out := map[string]family{}
	for name, mf := range metricstest.Gather(t, reg) {
		f := family{name: name, typ: strings.ToLower(mf.GetType().String()), labels: metricstest.Families{name: mf}.Labels(name)}
		out[name] = f
	}
	// DESIGN.md section 9 names these; the test of the test.
	for _, name := range []string{"sluice_decisions_total", "sluice_decision_duration_seconds",
		"sluice_store_requests_total", "sluice_store_duration_seconds", "sluice_store_batch_size",
		"sluice_local_cache_hits_total", "sluice_failure_mode_decisions_total", "sluice_breaker_state",
		"sluice_breaker_transitions_total", "sluice_breaker_rejections_total", "sluice_backend_up",
		"sluice_backend_check_duration_seconds", "sluice_config_reloads_total", "sluice_overrides",
		"sluice_memory_buckets", "sluice_memory_evictions_total", "sluice_memory_evicted_debt_tokens_total",
		"sluice_grpc_server_handled_total", "sluice_build_info", "go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := out[name]; !ok {
			t.Errorf("the registry lacks %s", name)
		}
	}
	return out
}
