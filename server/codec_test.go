package server

import (
	"context"
	"fmt"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
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

// TestCodecInterceptors: with grpc.codec grpc an interceptor sees the
// request and response messages; with direct, the *wire.Query and the
// encoded answer. Either way the call is decided once, through it.
func TestCodecInterceptors(t *testing.T) {
	r := testRLS(t, limiter.DefaultBounds)
	data, err := proto.Marshal(&rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		codec     string
		req, resp string
	}{
		{CodecGRPC, "*ratelimitv3.RateLimitRequest", "*ratelimitv3.RateLimitResponse"},
		{CodecDirect, "*wire.Query", "[]uint8"},
	} {
		var seen []string
		icpt := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			seen = append(seen, fmt.Sprintf("%T", req), fmt.Sprintf("%T", resp), info.FullMethod)
			return resp, err
		}
		dec := func(v any) error { return wire.NewCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v) }
		resp, err := serviceDesc(c.codec).Methods[0].Handler(r, context.Background(), dec, icpt)
		if err != nil {
			t.Fatalf("%s: %v", c.codec, err)
		}
		want := []string{c.req, c.resp, shouldRateLimitFullMethod}
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Errorf("%s: the interceptor saw %q, want %q", c.codec, seen, want)
		}
		// Both answers encode the same: OK for the one descriptor.
		var got rlsv3.RateLimitResponse
		b, err := wire.NewCodec().Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(b.Materialize(), &got); err != nil || got.OverallCode != rlsv3.RateLimitResponse_OK || len(got.Statuses) != 1 {
			t.Errorf("%s: answer %v (%v), want OK with one status", c.codec, &got, err)
		}
	}
}
