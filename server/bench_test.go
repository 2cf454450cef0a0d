package server_test

import (
	"context"
	"strconv"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"
)

// BenchmarkShouldRateLimit measures the gRPC handler in process (no
// network, no codec): translation, the decision on the memory store, and
// the response with headers.
func BenchmarkShouldRateLimit(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(strconv.Itoa(n)+"desc", func(b *testing.B) {
			lim := limiter.New(memory.New(nil), limiter.Config{})
			var ds []limiter.DescriptorConfig
			for i := 0; i < 4; i++ {
				ds = append(ds, node("k"+strconv.Itoa(i), "", burst(rl(1<<30, limiter.Second), 1<<30)))
			}
			lims, err := limiter.Compile([]limiter.DomainConfig{domain("bench", ds...)}, limiter.CompileOptions{})
			if err != nil {
				b.Fatal(err)
			}
			lim.SetLimits(lims)
			cfg := server.DefaultConfig()
			srv, err := server.New(cfg, lim, server.Options{})
			if err != nil {
				b.Fatal(err)
			}
			svc := srv.RateLimitService()
			r := &rlsv3.RateLimitRequest{Domain: "bench"}
			for i := 0; i < n; i++ {
				r.Descriptors = append(r.Descriptors, &ratelimitv3.RateLimitDescriptor{
					Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k" + strconv.Itoa(i), Value: "client-42"}},
				})
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := svc.ShouldRateLimit(ctx, r)
				if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
					b.Fatalf("%v %v", resp, err)
				}
			}
		})
	}
}

// BenchmarkGRPCMetrics measures a ShouldRateLimit call over loopback gRPC
// (client, transport, codec and server), without and with metrics: the
// cost of counting every call.
func BenchmarkGRPCMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run("metrics="+strconv.FormatBool(on), func(b *testing.B) {
			var opts []option
			if on {
				m := metrics.New(prometheus.NewRegistry(), metrics.Options{})
				opts = append(opts, withOptions(func(o *server.Options) { o.Metrics = m }))
			}
			h := start(b, []limiter.DomainConfig{domain("bench", node("k", "", burst(rl(1<<30, limiter.Second), 1<<30)))}, false, opts...)
			r := req("bench", desc(kv{"k", "client-42"}))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := h.client.ShouldRateLimit(ctx, r)
				if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
					b.Fatalf("%v %v", resp, err)
				}
			}
		})
	}
}
