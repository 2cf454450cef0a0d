package server_test

import (
	"strings"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server"
)

// TestDynamicMetadata: with grpc.response_dynamic_metadata, both codecs
// answer quota-based service selection with the same dynamic_metadata
// (the domain, the descriptors, the merged metadata of the limits that
// passed), and /json carries it too; without it, none is sent.
func TestDynamicMetadata(t *testing.T) {
	quota := func(value string, rpu uint32, name string) limiter.DescriptorConfig {
		return limiter.DescriptorConfig{Key: "backend", Value: value, QuotaMode: true, RateLimit: rl(rpu, limiter.Hour),
			Metadata: map[string]any{"name": name, "pool": map[string]any{value: true}}}
	}
	domains := []limiter.DomainConfig{domain("edge", quota("a", 1, "service_1"), quota("b", 5, "service_2"))}
	call := req("edge", desc(kv{"backend", "a"}), desc(kv{"backend", "b"}))
	meta := func(passed map[string]any) *structpb.Struct {
		m := map[string]any{"domain": "edge", "descriptors": []any{
			map[string]any{"entries": []any{"backend=a"}},
			map[string]any{"entries": []any{"backend=b"}},
		}}
		if passed != nil {
			m["metadata"] = passed
		}
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wants := []*structpb.Struct{
		meta(map[string]any{"name": "service_1", "pool": map[string]any{"a": true, "b": true}}),
		meta(map[string]any{"name": "service_2", "pool": map[string]any{"b": true}}), // a is over
		meta(map[string]any{"name": "service_2", "pool": map[string]any{"b": true}}),
	}
	for _, codec := range []string{server.CodecDirect, server.CodecGRPC} {
		h := start(t, domains, false, withConfig(func(c *server.Config) {
			c.GRPC.Codec = codec
			c.GRPC.ResponseDynamicMetadata = true
		}))
		for i, want := range wants {
			resp := h.mustCall(call)
			if resp.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Fatalf("%s call %d: %v, want OK while quota b passes", codec, i, resp.OverallCode)
			}
			if !proto.Equal(resp.DynamicMetadata, want) {
				t.Fatalf("%s call %d: dynamic metadata\n got %v\nwant %v", codec, i, resp.DynamicMetadata, want)
			}
		}
		_, body := h.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"backend","value":"a"}]},{"entries":[{"key":"backend","value":"b"}]}]}`)
		var jr rlsv3.RateLimitResponse
		if err := protojson.Unmarshal([]byte(body), &jr); err != nil {
			t.Fatalf("%s /json: %v: %s", codec, err, body)
		}
		if !proto.Equal(jr.DynamicMetadata, wants[2]) {
			t.Fatalf("%s /json: dynamic metadata %v, want %v", codec, jr.DynamicMetadata, wants[2])
		}
		h.stop()

		off := start(t, domains, false, withConfig(func(c *server.Config) { c.GRPC.Codec = codec }))
		if resp := off.mustCall(call); resp.DynamicMetadata != nil {
			t.Fatalf("%s: dynamic metadata sent while off: %v", codec, resp.DynamicMetadata)
		}
		if _, body := off.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"backend","value":"a"}]}]}`); strings.Contains(body, "dynamic") {
			t.Fatalf("%s /json: dynamic metadata sent while off: %s", codec, body)
		}
		off.stop()
	}
}
