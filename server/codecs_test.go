package server_test

import (
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server"
)

// TestCodecsAnswerAlike runs the same calls against a server of each
// grpc.codec, over gRPC: the answers are equal, message for message, and
// a request over the bounds is refused INVALID_ARGUMENT naming the bound
// by both.
func TestCodecsAnswerAlike(t *testing.T) {
	domains := []limiter.DomainConfig{{Domain: "edge", File: "t.yaml", Line: 1, Descriptors: []limiter.DescriptorConfig{
		{Key: "ip", RateLimit: burst(named(rl(2, limiter.Minute), "per-ip"), 2)},
		{Key: "path", Value: "/open", RateLimit: &limiter.RateLimit{Unlimited: true}},
	}}}
	calls := []*rlsv3.RateLimitRequest{
		req("edge", desc(kv{"ip", "a"})),
		req("edge", desc(kv{"ip", "a"}), desc(kv{"path", "/open"})),
		req("edge", desc(kv{"ip", "a"})), // over the limit
		req("edge", withHits(desc(kv{"ip", "b"}), 0)),
		req("other", desc(kv{"ip", "a"})),
	}
	var flood []*ratelimitv3.RateLimitDescriptor
	for range 65 {
		flood = append(flood, desc(kv{"ip", "c"}))
	}
	answers := map[string][]*rlsv3.RateLimitResponse{}
	for _, codec := range []string{server.CodecDirect, server.CodecGRPC} {
		h := start(t, domains, false, withConfig(func(c *server.Config) {
			c.GRPC.Codec = codec
			c.ResponseHeaders.Enabled = true
		}))
		for _, c := range calls {
			resp := h.mustCall(c)
			// The reset depends on the clock only; keep it out of the way.
			for _, st := range resp.Statuses {
				if st.DurationUntilReset != nil {
					st.DurationUntilReset = &durationpb.Duration{}
				}
			}
			answers[codec] = append(answers[codec], resp)
		}
		_, err := h.call(&rlsv3.RateLimitRequest{Domain: "edge", Descriptors: flood})
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != "descriptors: more than the bound of 64" {
			t.Errorf("%s: 65 descriptors: %v, want INVALID_ARGUMENT descriptors: more than the bound of 64", codec, err)
		}
	}
	for i := range calls {
		d, g := answers[server.CodecDirect][i], answers[server.CodecGRPC][i]
		if !proto.Equal(d, g) {
			t.Errorf("call %d: direct answers %v, grpc %v", i, d, g)
		}
	}
	if answers[server.CodecGRPC][2].OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("third call: %v, want OVER_LIMIT", answers[server.CodecGRPC][2])
	}
}
