package bench

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"
)

// FuzzVerdict holds the lean client's reading of an answer to
// proto.Unmarshal: whatever proto.Unmarshal reads, parse reads the same
// overall code and status codes; whatever parse refuses, proto.Unmarshal
// refuses too.
func FuzzVerdict(f *testing.F) {
	for _, r := range []*rlsv3.RateLimitResponse{
		{},
		{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{
			{Code: rlsv3.RateLimitResponse_OK, LimitRemaining: 3, CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{Name: "n", RequestsPerUnit: 5}},
			{Code: rlsv3.RateLimitResponse_OVER_LIMIT}, {}}},
		{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT, ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "k", Value: "v"}}, RawBody: []byte("x")},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x08, 0x01, 0x08, 0x02})       // the last code wins
	f.Add([]byte{0x0d, 1, 0, 0, 0, 0x12, 0x00}) // code as fixed32: unknown
	f.Add([]byte{0x12, 0x02, 0x08})             // truncated status
	f.Fuzz(func(t *testing.T, data []byte) {
		var m rlsv3.RateLimitResponse
		perr := proto.Unmarshal(data, &m)
		var v verdict
		verr := v.parse(data)
		if perr == nil && verr != nil {
			t.Fatalf("proto.Unmarshal reads %x, parse refuses: %v", data, verr)
		}
		if perr != nil {
			return
		}
		if v.code != m.GetOverallCode() || len(v.statuses) != len(m.GetStatuses()) {
			t.Fatalf("parse: %v %v; proto.Unmarshal: %v", v.code, v.statuses, &m)
		}
		for i, st := range m.GetStatuses() {
			if v.statuses[i] != st.GetCode() {
				t.Fatalf("status %d: parse %v, proto.Unmarshal %v", i, v.statuses[i], st.GetCode())
			}
		}
	})
}
