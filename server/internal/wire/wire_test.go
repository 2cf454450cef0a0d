package wire

import (
	"bytes"
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
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-rl/sluice/limiter"
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
// proto.Unmarshal), with the bound ScanRequest names.
func FuzzWireRequest(f *testing.F) {
	for _, b := range wireSeeds(f) {
		f.Add(b)
	}
	var fast, ref Request
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, bd := range []limiter.Bounds{limiter.DefaultBounds, tightBounds} {
			lim := limiter.New(nil, limiter.Config{Bounds: bd})
			var in rlsv3.RateLimitRequest
			perr := proto.Unmarshal(data, &in)
			werr := fast.Parse(data, &bd)
			if inv := (*limiter.InvalidRequestError)(nil); errors.As(werr, &inv) {
				if perr != nil {
					continue
				}
				ref.FromProto(&in)
				if lim.Validate(&ref.Req) == nil {
					t.Fatalf("parse refused %v, which Validate accepts", inv)
				}
				if _, _, serr := ScanRequest(data, &bd); serr == nil || serr.Error() != werr.Error() {
					t.Fatalf("parse refused %v; ScanRequest: %v", werr, serr)
				}
				continue
			}
			if (perr == nil) != (werr == nil) {
				t.Fatalf("proto.Unmarshal: %v; parse: %v", perr, werr)
			}
			if perr != nil {
				continue
			}
			ref.FromProto(&in)
			if d := sameRequest(&fast.Req, &ref.Req); d != "" {
				t.Fatal(d)
			}
		}
	})
}

// TestWireSeeds checks the seeds the fuzz target starts from cover both
// outcomes, so the differential check above is not vacuous.
func TestWireSeeds(t *testing.T) {
	var s Request
	var ok, bad int
	for _, b := range wireSeeds(t) {
		if s.Parse(b, &limiter.DefaultBounds) == nil {
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
	if err := s.Parse(seeds[len(seeds)-4], &limiter.DefaultBounds); err == nil || !strings.Contains(err.Error(), "descriptors[0]: string field contains invalid UTF-8") {
		t.Fatalf("invalid UTF-8 in the first descriptor's key: %v", err)
	}
	// The merged limit and hits_addend of the hand-made seed.
	if err := s.Parse(wireSeeds(t)[3], &limiter.DefaultBounds); err != nil {
		t.Fatal(err)
	}
	d := s.Req.Descriptors[0]
	if d.Override == nil || d.Override.RequestsPerUnit != 9 || d.Override.Unit != limiter.Second || !d.HasCost || d.Cost != 0 {
		t.Fatalf("merged descriptor %+v (override %+v)", d, d.Override)
	}
}

// TestWireResponse holds AppendResponse and AppendHeader to proto.Marshal
// of the message NewResponse builds, over random decisions and headers.
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
	keys := []string{"RateLimit-Limit", "X-RateLimit-Remaining", "", "Retry-After"}
	values := []string{"", "0", "100, 100;w=1", strings.Repeat("9", 200)}
	for i := 0; i < 4000; i++ {
		var resp limiter.Response
		resp.Code = limiter.Code(rng.IntN(3))
		for n := rng.IntN(5); n > 0; n-- {
			resp.Statuses = append(resp.Statuses, limiter.Status{
				Code:        limiter.Code(rng.IntN(3)),
				Limit:       limits[rng.IntN(len(limits))],
				Remaining:   []uint32{0, 1, 1 << 31}[rng.IntN(3)],
				ResetMicros: resets[rng.IntN(len(resets))],
				Shadow:      rng.IntN(4) == 0,
			})
		}
		rb := NewResponse(&resp)
		got := AppendResponse(nil, &resp)
		n := rng.IntN(5)
		for h := range n {
			k, v := keys[rng.IntN(len(keys))], values[rng.IntN(len(values))]
			rb.SetHeader(h, k, v)
			got = AppendHeader(got, k, []byte(v))
		}
		rb.SetHeaders(n)
		if rng.IntN(2) == 0 {
			m := randomMetadata(rng, 3)
			rb.Msg.DynamicMetadata = StructOf(m)
			var err error
			if got, err = AppendDynamicMetadata(got, m); err != nil {
				t.Fatal(err)
			}
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&rb.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			var g rlsv3.RateLimitResponse
			uerr := proto.Unmarshal(got, &g)
			t.Fatalf("decision %+v:\n got %x (%v %v)\nwant %x (%v)", resp, got, &g, uerr, want, &rb.Msg)
		}
	}
}

// randomMetadata is a random Struct-shaped map, nested up to depth.
func randomMetadata(rng *rand.Rand, depth int) map[string]any {
	keys := []string{"", "name", "ü", "route", strings.Repeat("k", 130)}
	m := map[string]any{}
	for n := rng.IntN(4); n > 0; n-- {
		m[keys[rng.IntN(len(keys))]] = randomValue(rng, depth)
	}
	return m
}

func randomValue(rng *rand.Rand, depth int) any {
	k := rng.IntN(8)
	if depth == 0 {
		k %= 5
	}
	switch k {
	case 0:
		return nil
	case 1:
		return rng.IntN(2) == 0
	case 2:
		return []string{"", "service_1", strings.Repeat("v", 200)}[rng.IntN(3)]
	case 3:
		return []float64{0, -1.5, 1 << 60, 3}[rng.IntN(4)]
	case 4:
		return rng.IntN(5) // a decoder's int: a number too
	case 5, 6:
		return randomMetadata(rng, depth-1)
	}
	var l []any
	for n := rng.IntN(4); n > 0; n-- {
		l = append(l, randomValue(rng, depth-1))
	}
	return l
}

// TestDynamicMetadata: the fields and shapes envoyproxy/ratelimit writes.
func TestDynamicMetadata(t *testing.T) {
	req := &limiter.Request{Domain: "edge", HitsAddend: 3, Descriptors: []limiter.Descriptor{
		{Entries: []limiter.Entry{{Key: "tenant", Value: "acme"}, {Key: "plan", Value: ""}}},
		{Entries: []limiter.Entry{{Key: "user", Value: "u=1"}}, Cost: 0, HasCost: true,
			Override: &limiter.RateLimit{RequestsPerUnit: 5, Unit: limiter.Minute, UnitMultiplier: 3}},
	}}
	rule := &limiter.Rule{Limit: limiter.RateLimit{RequestsPerUnit: 1, Unit: limiter.Second},
		Metadata: map[string]any{"name": "service_1"}}
	resp := &limiter.Response{Code: limiter.OK, Statuses: []limiter.Status{
		{Code: limiter.OK, Rule: rule, Limit: &rule.Limit}, {Code: limiter.OK}}}
	got := StructOf(DynamicMetadata(req, resp))
	want, err := structpb.NewStruct(map[string]any{
		"domain":     "edge",
		"hitsAddend": 3,
		"descriptors": []any{
			map[string]any{"entries": []any{"tenant=acme", "plan="}},
			map[string]any{"entries": []any{"user=u=1"}, "hitsAddend": 0,
				"limit": "requests_per_unit:5 unit:MINUTE unit_multiplier:{value:3}"},
		},
		"metadata": map[string]any{"name": "service_1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("dynamic metadata\n got %v\nwant %v", got, want)
	}
	// envoyproxy/ratelimit's text of the same override, spaces aside.
	o := &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_MINUTE, UnitMultiplier: wrapperspb.UInt32(3)}
	if txt := strings.Join(strings.Fields(o.String()), " "); txt != got.Fields["descriptors"].GetListValue().Values[1].GetStructValue().Fields["limit"].GetStringValue() {
		t.Fatalf("limit text %q, the runtime writes %q", got.Fields["descriptors"].GetListValue().Values[1].GetStructValue().Fields["limit"].GetStringValue(), txt)
	}
}
