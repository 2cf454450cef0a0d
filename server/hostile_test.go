package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/internal/wire"
	"github.com/sluice-rl/sluice/server/internal/wire/wiretest"
)

// floodSize is the size of the hostile requests below: the default bound
// on a gRPC message and on a /json body.
const floodSize = 1 << 20

// grpcFlood is a RateLimitRequest of domain "edge" and size bytes of empty
// descriptors (0x12 0x00), about size/2 of them.
func grpcFlood(size int) []byte {
	b := append(make([]byte, 0, size), 0x0a, 4, 'e', 'd', 'g', 'e')
	for len(b)+2 <= size {
		b = append(b, 0x12, 0x00)
	}
	return b
}

// jsonFlood is the same as a /json body: {} repeated.
func jsonFlood(size int) []byte {
	b := append(make([]byte, 0, size), `{"domain":"edge","descriptors":[{}`...)
	for len(b)+5 <= size {
		b = append(b, ",{}"...)
	}
	return append(b, "]}"...)
}

// noGC turns the collector off for the test: a collection empties the
// pools the tests look into (two do it entirely).
func noGC(t *testing.T) {
	old := debug.SetGCPercent(-1)
	t.Cleanup(func() { debug.SetGCPercent(old) })
}

// allocated is the bytes f allocates. TotalAlloc counts every allocation,
// whether or not a collection frees it; the tests run one at a time.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func testRLS(t *testing.T, b limiter.Bounds) *rls {
	t.Helper()
	lims, err := limiter.Compile([]limiter.DomainConfig{{Domain: "edge", File: "t.yaml", Line: 1,
		Descriptors: []limiter.DescriptorConfig{{Key: "k", RateLimit: &limiter.RateLimit{RequestsPerUnit: 1 << 30, Unit: limiter.Second}}}}},
		limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{Bounds: b})
	lim.SetLimits(lims)
	return newRLS(lim, DefaultConfig())
}

// callGRPC runs the gRPC handler of codec on an encoded request, decoded
// by the server's codec.
func callGRPC(r *rls, codec string, data []byte) error {
	dec := func(v any) error { return wire.NewCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v) }
	_, err := serviceDesc(codec).Methods[0].Handler(r, context.Background(), dec, nil)
	return err
}

// callWire is callGRPC with the direct codec.
func callWire(r *rls, data []byte) error { return callGRPC(r, CodecDirect, data) }

// codecs are the values of grpc.codec.
var codecs = []string{CodecDirect, CodecGRPC}

// pooled takes every scratch out of r's pool and returns the largest
// number of descriptors and entries one of them has room for (0 for an
// empty pool). Call noGC first.
func pooled(r *rls) (descriptors, entries int) {
	fresh := new(scratch)
	r.pool.New = func() any { return fresh }
	defer func() { r.pool.New = func() any { return new(scratch) } }()
	for i := 0; i < 1000; i++ {
		s := r.pool.Get().(*scratch)
		if s == fresh {
			break
		}
		for d := 1; d <= 1<<20; d *= 2 {
			if s.in.Outgrown(d-1, 1<<30) {
				descriptors = max(descriptors, d)
			}
			if s.in.Outgrown(1<<30, d-1) {
				entries = max(entries, d)
			}
		}
	}
	return descriptors, entries
}

// TestGRPCFloodBounded sends 1 MiB of empty descriptors to the gRPC
// handler of each codec: it is refused at the 65th descriptor, naming the
// bound, having allocated at most about the copy of the message (the
// direct codec's request strings share one), and leaves no grown scratch
// in the pool. proto.Unmarshal alone allocates about 70 MB for it.
func TestGRPCFloodBounded(t *testing.T) {
	for _, codec := range codecs {
		t.Run(codec, func(t *testing.T) { testGRPCFloodBounded(t, codec) })
	}
}

func testGRPCFloodBounded(t *testing.T, codec string) {
	noGC(t)
	r := testRLS(t, limiter.Bounds{})
	flood := grpcFlood(floodSize)
	if err := callGRPC(r, codec, grpcFlood(64)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("warm-up: %v", err) // 29 descriptors without entries
	}
	var err error
	n := allocated(func() { err = callGRPC(r, codec, flood) })
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != "descriptors: more than the bound of 64" {
		t.Fatalf("flood: %v, want INVALID_ARGUMENT descriptors: more than the bound of 64", err)
	}
	t.Logf("a %d-byte flood allocated %d bytes", len(flood), n)
	if n > 2*floodSize {
		t.Errorf("decoding a %d-byte flood allocated %d bytes, more than twice its size", len(flood), n)
	}
	if d, e := pooled(r); d > keepDescriptors || e > keepEntries {
		t.Errorf("the pool keeps a scratch with room for %d descriptors and %d entries", d, e)
	}
}

// TestJSONFloodBounded is TestWireFloodBounded for POST /json.
func TestJSONFloodBounded(t *testing.T) {
	noGC(t)
	lim := testRLS(t, limiter.Bounds{}).lim
	srv, err := New(DefaultConfig(), lim, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	post := func(body []byte) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/json", bytes.NewReader(body)))
		return rec
	}
	if rec := post([]byte(`{"domain":"edge","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}`)); rec.Code != http.StatusOK {
		t.Fatalf("valid request: %d %s", rec.Code, rec.Body)
	}
	flood := jsonFlood(floodSize)
	var rec *httptest.ResponseRecorder
	n := allocated(func() { rec = post(flood) })
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"descriptors: more than the bound of 64"`) {
		t.Fatalf("flood: %d %s, want 400 descriptors: more than the bound of 64", rec.Code, rec.Body)
	}
	t.Logf("a %d-byte flood allocated %d bytes", len(flood), n)
	if n > 2*floodSize {
		t.Errorf("a %d-byte flood allocated %d bytes, more than twice its size", len(flood), n)
	}
	if d, e := pooled(srv.rls); d > keepDescriptors || e > keepEntries {
		t.Errorf("the pool keeps a scratch with room for %d descriptors and %d entries", d, e)
	}
}

// TestPoolDropsOutliers raises the bounds so that a valid request grows a
// scratch past the keep sizes: it is not put back.
func TestPoolDropsOutliers(t *testing.T) {
	noGC(t)
	r := testRLS(t, limiter.Bounds{MaxDescriptors: 100_000})
	in := &rlsv3.RateLimitRequest{Domain: "edge"}
	for i := 0; i < 2*keepDescriptors; i++ {
		in.Descriptors = append(in.Descriptors, &ratelimitv3.RateLimitDescriptor{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k", Value: fmt.Sprint(i)}}})
	}
	data, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := callWire(r, data); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ShouldRateLimit(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if d, e := pooled(r); d > keepDescriptors || e > keepEntries {
		t.Errorf("the pool keeps a scratch with room for %d descriptors and %d entries", d, e)
	}
	// An ordinary request's scratch is kept. Under the race detector
	// sync.Pool drops a quarter of the Puts at random: try a few times.
	one, err := proto.Marshal(&rlsv3.RateLimitRequest{Domain: "edge", Descriptors: in.Descriptors[:1]})
	if err != nil {
		t.Fatal(err)
	}
	// Under the race detector sync.Pool drops a quarter of what is put
	// back, at random: one of many ordinary calls must be kept.
	kept := false
	for i := 0; i < 20 && !kept; i++ {
		if err := callWire(r, one); err != nil {
			t.Fatal(err)
		}
		d, _ := pooled(r)
		kept = d > 0
	}
	if !kept {
		t.Error("an ordinary request's scratch was never put back")
	}
}

// TestDecodeBounds holds the gRPC handlers of both codecs to the bounds,
// each stopping at the first descriptor, entry, key or value over, with
// the same message, and the /json scan to the counts (protojson's strings
// cost their size; Validate measures them).
func TestDecodeBounds(t *testing.T) {
	bd := wiretest.TightBounds
	for _, c := range wiretest.BoundCases() {
		t.Run(c.Name, func(t *testing.T) {
			data, err := proto.Marshal(c.In)
			if err != nil {
				t.Fatal(err)
			}
			js, err := protojson.Marshal(c.In)
			if err != nil {
				t.Fatal(err)
			}
			r := testRLS(t, bd)
			errs := map[string]error{"scanJSONRequest": scanJSONRequest(js, &bd)}
			for _, codec := range codecs {
				err := callGRPC(r, codec, data)
				if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
					err = errors.New(st.Message())
				}
				errs[codec] = err
			}
			for name, err := range errs {
				want := c.Want
				if name == "scanJSONRequest" && (c.Name == "key" || c.Name == "value") {
					want = ""
				}
				if want == "" && err != nil && !strings.Contains(err.Error(), "bound") {
					continue // Validate's, after decoding: this request has no domain
				}
				if want == "" && err != nil || want != "" && (err == nil || err.Error() != want) {
					t.Errorf("%s: %v, want %q", name, err, want)
				}
			}
		})
	}
}

// TestScanJSONNames: names with escapes are the names protojson reads, and
// nesting deeper than any request is refused.
func TestScanJSONNames(t *testing.T) {
	bd := limiter.Bounds{MaxDescriptors: 1, MaxEntries: 1}
	for _, c := range []struct {
		body string
		want string
	}{
		{`{"descriptors":[{},{}]}`, "descriptors: more than the bound of 1"},
		{`{"d\u0065scriptors":[{},{}]}`, "descriptors: more than the bound of 1"},
		{`{"domain":"x\"descriptors","descriptors":[{}]}`, ""},
		{`{"descriptors":[{"entries":[{}, {}]}]}`, "descriptors[0].entries: more than the bound of 1"},
		{`{"descriptors":[{"limit":{"entries":[1,2]}, "entries":[1]}]}`, ""},
		{`{"descriptors":[null,null]}`, "descriptors: more than the bound of 1"},
		{`{"x":[{"descriptors":[{},{}]}]}`, ""},
		{strings.Repeat("[", 17), "body: nested deeper than 16 levels"},
	} {
		err := scanJSONRequest([]byte(c.body), &bd)
		if c.want == "" && err != nil || c.want != "" && (err == nil || err.Error() != c.want) {
			t.Errorf("%s: %v, want %q", c.body, err, c.want)
		}
	}
}

// tightBounds are small enough for fuzzed requests to break them.
var tightBounds = limiter.Bounds{MaxDescriptors: 3, MaxEntries: 2, MaxKeyLen: 6, MaxValueLen: 8, MaxCost: 1 << 32}

// FuzzScanJSONRequest holds scanJSONRequest to protojson: a body protojson
// reads and Validate accepts is accepted; a body refused for a bound is
// refused by protojson or Validate.
func FuzzScanJSONRequest(f *testing.F) {
	f.Add([]byte(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"1.2.3.4"}]}]}`))
	f.Add([]byte(`{"domain":"edge","hitsAddend":4294967295,"descriptors":[{"entries":[{"key":"weekly","value":"x"}],"limit":{"requestsPerUnit":1,"unit":"SECOND"}}]}`))
	f.Add([]byte(`{"domain":"e","descriptors":[{"entries":[{"key":"a","value":"1"},{"key":"b"}]},{"entries":[{"key":"c"}],"hits_addend":"3"},{"entries":[{"key":"\u0064"}]},{}]}`))
	f.Add([]byte(`{"domain":"edge","descriptors":[{},{},{},{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, bd := range []limiter.Bounds{limiter.DefaultBounds, tightBounds} {
			err := scanJSONRequest(data, &bd)
			var in rlsv3.RateLimitRequest
			if protojson.Unmarshal(data, &in) != nil {
				continue
			}
			var s wire.Request
			s.FromProto(&in)
			verr := limiter.New(nil, limiter.Config{Bounds: bd}).Validate(&s.Req)
			if verr == nil && err != nil {
				t.Fatalf("scanJSONRequest refuses %v; protojson and Validate accept", err)
			}
			if inv := (*limiter.InvalidRequestError)(nil); errors.As(err, &inv) && verr == nil {
				t.Fatalf("scanJSONRequest refuses %v; Validate accepts", err)
			}
			if err != nil && len(in.Descriptors) <= bd.MaxDescriptors && strings.HasPrefix(err.Error(), "descriptors:") {
				t.Fatalf("scanJSONRequest refuses %v for %d descriptors", err, len(in.Descriptors))
			}
		}
	})
}

// BenchmarkJSONScan compares the count scanJSONRequest adds to a valid
// /json body's decoding with protojson.Unmarshal of the same body.
func BenchmarkJSONScan(b *testing.B) {
	body := []byte(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.1"}]},{"entries":[{"key":"tenant","value":"acme-1"},{"key":"plan","value":"free"}]}]}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := scanJSONRequest(body, &limiter.DefaultBounds); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var in rlsv3.RateLimitRequest
			if err := protojson.Unmarshal(body, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
}
