package wire

import (
	"errors"
	"runtime"
	"runtime/debug"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server/internal/wire/wiretest"
)

// grpcFlood is a RateLimitRequest of domain "edge" and size bytes of empty
// descriptors (0x12 0x00), about size/2 of them.
func grpcFlood(size int) []byte {
	b := append(make([]byte, 0, size), 0x0a, 4, 'e', 'd', 'g', 'e')
	for len(b)+2 <= size {
		b = append(b, 0x12, 0x00)
	}
	return b
}

// allocated is the bytes f allocates, with the collector off.
func allocated(f func()) uint64 {
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestUnmarshalFloodBounded: the protobuf runtime's decoding, held to the
// bounds by ScanRequest, refuses a 1 MiB flood before allocating for it
// (proto.Unmarshal alone allocates about 70 MB).
func TestUnmarshalFloodBounded(t *testing.T) {
	flood := grpcFlood(1 << 20)
	var err error
	n := allocated(func() {
		var in rlsv3.RateLimitRequest
		err = UnmarshalRequest(flood, &in, &limiter.DefaultBounds)
	})
	if err == nil || err.Error() != "descriptors: more than the bound of 64" {
		t.Fatalf("flood: %v, want descriptors: more than the bound of 64", err)
	}
	if n > 64<<10 {
		t.Errorf("a %d-byte flood allocated %d bytes", len(flood), n)
	}
}

// TestScanBounds holds Parse and ScanRequest to the bounds, each stopping
// at the first descriptor, entry, key or value over, with the same message.
func TestScanBounds(t *testing.T) {
	bd := wiretest.TightBounds
	for _, c := range wiretest.BoundCases() {
		t.Run(c.Name, func(t *testing.T) {
			data, err := proto.Marshal(c.In)
			if err != nil {
				t.Fatal(err)
			}
			var s Request
			var in rlsv3.RateLimitRequest
			_, _, serr := ScanRequest(data, &bd)
			for name, err := range map[string]error{"Parse": s.Parse(data, &bd), "ScanRequest": serr, "UnmarshalRequest": UnmarshalRequest(data, &in, &bd)} {
				if c.Want == "" && err != nil || c.Want != "" && (err == nil || err.Error() != c.Want) {
					t.Errorf("%s: %v, want %q", name, err, c.Want)
				}
			}
		})
	}
}

// FuzzScanRequest holds ScanRequest to proto.Unmarshal: bytes it accepts
// and Validate accepts are accepted with the same counts; bytes it refuses
// for a bound are refused by Validate; bytes proto.Unmarshal reads are
// never malformed to it.
func FuzzScanRequest(f *testing.F) {
	for _, b := range wireSeeds(f) {
		f.Add(b)
	}
	f.Add(grpcFlood(64))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, bd := range []limiter.Bounds{limiter.DefaultBounds, tightBounds} {
			var in rlsv3.RateLimitRequest
			perr := proto.Unmarshal(data, &in)
			var uin rlsv3.RateLimitRequest
			uerr := UnmarshalRequest(data, &uin, &bd)
			nd, ne, serr := ScanRequest(data, &bd)
			if perr != nil {
				if uerr == nil {
					t.Fatalf("UnmarshalRequest accepts what proto.Unmarshal refuses: %v", perr)
				}
				continue
			}
			if errors.Is(serr, ErrMalformed) {
				t.Fatalf("ScanRequest finds malformed what proto.Unmarshal reads")
			}
			var s Request
			s.FromProto(&in)
			verr := limiter.New(nil, limiter.Config{Bounds: bd}).Validate(&s.Req)
			if serr != nil {
				if verr == nil {
					t.Fatalf("ScanRequest refuses %v; Validate accepts", serr)
				}
				if uerr == nil || uerr.Error() != serr.Error() {
					t.Fatalf("UnmarshalRequest: %v; ScanRequest: %v", uerr, serr)
				}
				continue
			}
			if uerr != nil || !proto.Equal(&in, &uin) {
				t.Fatalf("UnmarshalRequest: %v", uerr)
			}
			entries := 0
			for _, d := range in.Descriptors {
				entries += len(d.Entries)
			}
			if nd != len(in.Descriptors) || ne != entries {
				t.Fatalf("ScanRequest counts %d descriptors and %d entries; proto.Unmarshal %d and %d", nd, ne, len(in.Descriptors), entries)
			}
		}
	})
}
