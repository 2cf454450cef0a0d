package server

import (
	"context"
	"fmt"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/internal/wire"
)

// BenchmarkCodec compares a ShouldRateLimit call's decoding, decision (on
// the memory store) and encoding through the protobuf runtime (proto: what
// gRPC's own codec and the generated handler do) and through this file
// (direct, server/internal/wire), with rate-limit headers on.
func BenchmarkCodec(b *testing.B) {
	for _, n := range []int{1, 4} {
		var ds []limiter.DescriptorConfig
		in := &rlsv3.RateLimitRequest{Domain: "bench"}
		for i := 0; i < n; i++ {
			k := fmt.Sprint("k", i)
			ds = append(ds, limiter.DescriptorConfig{Key: k, RateLimit: &limiter.RateLimit{RequestsPerUnit: 1 << 30, Burst: 1 << 30, Unit: limiter.Second}})
			in.Descriptors = append(in.Descriptors, &ratelimitv3.RateLimitDescriptor{
				Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: k, Value: "client-42"}},
			})
		}
		lims, err := limiter.Compile([]limiter.DomainConfig{{Domain: "bench", Descriptors: ds, File: "b.yaml", Line: 1}}, limiter.CompileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		lim := limiter.New(memory.New(nil), limiter.Config{})
		lim.SetLimits(lims)
		cfg := DefaultConfig()
		cfg.ResponseHeaders.Enabled = true
		r := newRLS(lim, cfg)
		data, err := proto.Marshal(in)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(fmt.Sprint(n, "desc/proto"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var req rlsv3.RateLimitRequest
				if err := proto.Unmarshal(data, &req); err != nil {
					b.Fatal(err)
				}
				resp, err := r.ShouldRateLimit(ctx, &req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := proto.Marshal(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprint(n, "desc/direct"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := r.pool.Get().(*scratch)
				s.query = wire.Query{Req: &s.in, Bounds: &r.bounds, Owner: s, Size: len(data)}
				if err := s.in.Parse(data, &r.bounds); err != nil {
					b.Fatal(err)
				}
				if _, err := r.answerDirect(ctx, s); err != nil {
					b.Fatal(err)
				}
				r.put(s)
			}
		})
	}
}
