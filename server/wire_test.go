package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

func wireSeeds(t testing.TB) [][]byte {
	entry := func(k, v string) *ratelimitv3.RateLimitDescriptor_Entry {
		return &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v}
	}
	reqs := []*rlsv3.RateLimitRequest{
		{},
		{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("remote_address", "10.0.0.1")}}}},
		{Domain: "edge", HitsAddend: 7, Descriptors: []*ratelimitv3.RateLimitDescriptor{
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("tenant", "acme"), entry("plan", "free")},
				HitsAddend: wrapperspb.UInt64(0)},
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("user", "ü")}, IsNegativeHits: true,
				Limit: &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_MINUTE,
					UnitMultiplier: wrapperspb.UInt32(3)}},
			{},
			{Limit: &ratelimitv3.RateLimitDescriptor_RateLimitOverride{Unit: typev3.RateLimitUnit(99)}, HitsAddend: wrapperspb.UInt64(1 << 40)},
		}},
	}
	var out [][]byte
	for _, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Hand-made encodings the generated marshaller never writes.
	var b []byte
	// a limit given twice merges; a hits_addend given twice merges
	d := protowire.AppendTag(nil, 2, protowire.BytesType)
	d = protowire.AppendBytes(d, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 9))
	d = protowire.AppendTag(d, 2, protowire.BytesType)
	d = protowire.AppendBytes(d, protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1))
	d = protowire.AppendTag(d, 3, protowire.BytesType)
	d = protowire.AppendBytes(d, nil)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, d)
	out = append(out, b)
	// wrong wire types read as unknown fields; an unknown group
	b = protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, 3, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 5)
	b = protowire.AppendTag(b, 9, protowire.StartGroupType)
	b = protowire.AppendTag(b, 9, protowire.EndGroupType)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<33+4)
	out = append(out, b)
	// invalid UTF-8 in a key; a truncated descriptor; a top-level end group
	e := protowire.AppendTag(nil, 1, protowire.BytesType)
	e = protowire.AppendBytes(e, []byte{0xff, 'a'})
	d = protowire.AppendTag(nil, 1, protowire.BytesType)
	d = protowire.AppendBytes(d, e)
	tag := func() []byte { return protowire.AppendTag(nil, 2, protowire.BytesType) }
	out = append(out, protowire.AppendBytes(tag(), d), tag(), append(tag(), 3, 1), protowire.AppendTag(nil, 4, protowire.EndGroupType))
	return out
}

// sameRequest reports how two translated requests differ, or "".
func sameRequest(a, b *limiter.Request) string {
	if a.Domain != b.Domain || a.HitsAddend != b.HitsAddend || len(a.Descriptors) != len(b.Descriptors) {
		return fmt.Sprintf("request %q/%d/%d descriptors, want %q/%d/%d",
			a.Domain, a.HitsAddend, len(a.Descriptors), b.Domain, b.HitsAddend, len(b.Descriptors))
	}
	for i := range a.Descriptors {
		x, y := &a.Descriptors[i], &b.Descriptors[i]
		if x.Cost != y.Cost || x.HasCost != y.HasCost || x.Refund != y.Refund {
			return fmt.Sprintf("descriptor %d: cost %d/%v refund %v, want %d/%v %v", i, x.Cost, x.HasCost, x.Refund, y.Cost, y.HasCost, y.Refund)
		}
		if fmt.Sprint(x.Entries) != fmt.Sprint(y.Entries) {
			return fmt.Sprintf("descriptor %d: entries %q, want %q", i, x.Entries, y.Entries)
		}
		if (x.Override == nil) != (y.Override == nil) || x.Override != nil && fmt.Sprintf("%+v", *x.Override) != fmt.Sprintf("%+v", *y.Override) {
			return fmt.Sprintf("descriptor %d: override %+v, want %+v", i, x.Override, y.Override)
		}
	}
	return ""
}

// tightBounds are small enough for fuzzed requests to break them.
var tightBounds = limiter.Bounds{MaxDescriptors: 3, MaxEntries: 2, MaxKeyLen: 6, MaxValueLen: 8, MaxCost: 1 << 32}

// FuzzWireRequest holds the gRPC path's decoding to the protobuf runtime:
// the same bytes are refused by both or read into the same request. A
// request parse refuses for a bound is one Validate refuses too (or
// proto.Unmarshal), with the bound scanRequest names.
func FuzzWireRequest(f *testing.F) {
	for _, b := range wireSeeds(f) {
		f.Add(b)
	}
	var fast, ref scratch
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, bd := range []limiter.Bounds{limiter.DefaultBounds, tightBounds} {
			lim := limiter.New(nil, limiter.Config{Bounds: bd})
			var in rlsv3.RateLimitRequest
			perr := proto.Unmarshal(data, &in)
			werr := fast.parse(data, &bd)
			if inv := (*limiter.InvalidRequestError)(nil); errors.As(werr, &inv) {
				if perr != nil {
					continue
				}
				ref.translate(&in)
				if lim.Validate(&ref.req) == nil {
					t.Fatalf("parse refused %v, which Validate accepts", inv)
				}
				if _, _, serr := scanRequest(data, &bd); serr == nil || serr.Error() != werr.Error() {
					t.Fatalf("parse refused %v; scanRequest: %v", werr, serr)
				}
				continue
			}
			if (perr == nil) != (werr == nil) {
				t.Fatalf("proto.Unmarshal: %v; parse: %v", perr, werr)
			}
			if perr != nil {
				continue
			}
			ref.translate(&in)
			if d := sameRequest(&fast.req, &ref.req); d != "" {
				t.Fatal(d)
			}
		}
	})
}

// TestWireSeeds checks the seeds the fuzz target starts from cover both
// outcomes, so the differential check above is not vacuous.
func TestWireSeeds(t *testing.T) {
	var s scratch
	var ok, bad int
	for _, b := range wireSeeds(t) {
		if s.parse(b, &limiter.DefaultBounds) == nil {
			ok++
		} else {
			bad++
		}
	}
	if ok < 5 || bad < 3 {
		t.Fatalf("%d seeds decode and %d do not; want at least 5 and 3", ok, bad)
	}
	// Errors name the field: the bad key is in the first descriptor.
	seeds := wireSeeds(t)
	if err := s.parse(seeds[len(seeds)-4], &limiter.DefaultBounds); err == nil || !strings.Contains(err.Error(), "descriptors[0]: string field contains invalid UTF-8") {
		t.Fatalf("invalid UTF-8 in the first descriptor's key: %v", err)
	}
	// The merged limit and hits_addend of the hand-made seed.
	if err := s.parse(wireSeeds(t)[3], &limiter.DefaultBounds); err != nil {
		t.Fatal(err)
	}
	d := s.req.Descriptors[0]
	if d.Override == nil || d.Override.RequestsPerUnit != 9 || d.Override.Unit != limiter.Second || !d.HasCost || d.Cost != 0 {
		t.Fatalf("merged descriptor %+v (override %+v)", d, d.Override)
	}
}

// TestWireResponse holds the gRPC path's encoding to proto.Marshal of the
// messages response builds, over random decisions, with headers on and off.
func TestWireResponse(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	limits := []*limiter.RateLimit{
		nil,
		{Name: "per-ip", RequestsPerUnit: 100, Unit: limiter.Second, UnitMultiplier: 1},
		{RequestsPerUnit: 0, Unit: limiter.Week, UnitMultiplier: 7},
		{Name: "ü", RequestsPerUnit: 1 << 31, Unit: limiter.Year},
		{RequestsPerUnit: 3, Unit: limiter.Minute, UnitMultiplier: 1 << 30},
	}
	resets := []int64{0, 1, 999_999, 1_000_000, 1_500_000, 86_400_000_000, 1 << 50}
	for _, hdr := range []HeaderConfig{{}, {Enabled: true, Limit: "RateLimit-Limit", Remaining: "RateLimit-Remaining", Reset: "RateLimit-Reset"}} {
		r := &rls{headers: hdr}
		for i := 0; i < 2000; i++ {
			var s scratch
			s.resp.Code = limiter.Code(rng.IntN(3))
			for n := rng.IntN(5); n > 0; n-- {
				s.resp.Statuses = append(s.resp.Statuses, limiter.Status{
					Code:        limiter.Code(rng.IntN(3)),
					Limit:       limits[rng.IntN(len(limits))],
					Remaining:   []uint32{0, 1, 1 << 31}[rng.IntN(3)],
					ResetMicros: resets[rng.IntN(len(resets))],
					Shadow:      rng.IntN(4) == 0,
				})
			}
			want, err := proto.Marshal(r.response(&s))
			if err != nil {
				t.Fatal(err)
			}
			got := r.appendResponse(nil, &s)
			if !bytes.Equal(got, want) {
				var g rlsv3.RateLimitResponse
				uerr := proto.Unmarshal(got, &g)
				t.Fatalf("decision %+v:\n got %x (%v %v)\nwant %x (%v)", s.resp, got, &g, uerr, want, r.response(&s))
			}
		}
	}
}

// BenchmarkCodec compares a ShouldRateLimit call's decoding, decision (on
// the memory store) and encoding through the protobuf runtime (proto: what
// gRPC's own codec and the generated handler do) and through this file
// (wire), with rate-limit headers on.
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
		b.Run(fmt.Sprint(n, "desc/wire"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := r.pool.Get().(*scratch)
				s.query.s = s
				s.query.size = len(data)
				if err := s.parse(data, &r.bounds); err != nil {
					b.Fatal(err)
				}
				if _, err := r.answerWire(ctx, &s.query); err != nil {
					b.Fatal(err)
				}
				r.pool.Put(s)
			}
		})
	}
}
