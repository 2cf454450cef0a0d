package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// FuzzRequest sends arbitrary bytes as a gRPC RateLimitRequest (when they
// decode as one) and as a POST /json body. Every answer is a decision or a
// named refusal (INVALID_ARGUMENT, HTTP 400/413), never UNKNOWN, INTERNAL or
// a 5xx, and the server keeps deciding afterwards.
func FuzzRequest(f *testing.F) {
	h := start(f, edgeDomains(), false)
	seeds := []*rlsv3.RateLimitRequest{
		{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(kv{"remote_address", "10.0.0.1"})}},
		{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(kv{"tenant", "acme-1"}, kv{"plan", "free"}), withHits(desc(kv{"path", "/login"}), 0)}},
		{Domain: "rep", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(kv{"x", "a"}), desc(kv{"y", "b"})}, HitsAddend: 3},
		{Domain: "", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(kv{"", "v"})}},
		{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{IsNegativeHits: true, Entries: desc(kv{"user", "u"}).Entries}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"1.2.3.4"}]}]}`))
	f.Add([]byte(`{"domain":"edge","hitsAddend":4294967295,"descriptors":[{"entries":[{"key":"weekly","value":"x"}],"limit":{"requestsPerUnit":1,"unit":"SECOND"}}]}`))
	f.Add([]byte(`{"domain":"edge","descriptors":[{}]}`))
	good := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(kv{"internal", "x"})}}

	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var req rlsv3.RateLimitRequest
		if proto.Unmarshal(data, &req) == nil {
			_, err := h.client.ShouldRateLimit(ctx, &req)
			switch c := status.Code(err); c {
			case codes.OK:
			case codes.InvalidArgument:
				if status.Convert(err).Message() == "" {
					t.Fatalf("INVALID_ARGUMENT without a message for %v", &req)
				}
			default:
				t.Fatalf("gRPC %v (%v) for %v", c, err, &req)
			}
		}
		resp, err := http.Post(h.base+"/json", "application/json", strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("POST /json: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200, 429:
		case 400, 413:
			if !strings.Contains(string(body), `"error"`) {
				t.Fatalf("POST /json = %d without an error message: %s", resp.StatusCode, body)
			}
		default:
			t.Fatalf("POST /json = %d %s for %q", resp.StatusCode, body, data)
		}
		// Still deciding.
		if r, err := h.client.ShouldRateLimit(ctx, good); err != nil || r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("a good request after %q: %v %v", data, r, err)
		}
	})
}
