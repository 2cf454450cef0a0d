// Package wiretest holds request cases shared by the tests of the
// ShouldRateLimit codec (server/internal/wire) and of the server's
// handlers, so both hold their decoders to one table.
package wiretest

import (
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluice-rl/sluice/limiter"
)

// BoundCase is a request and the refusal a decoder owes it under
// TightBounds: Want is "" when the bounds accept it.
type BoundCase struct {
	Name string
	In   *rlsv3.RateLimitRequest
	Want string
}

// TightBounds are small enough for BoundCases to break each bound.
var TightBounds = limiter.Bounds{MaxDescriptors: 2, MaxEntries: 2, MaxKeyLen: 4, MaxValueLen: 4, MaxCost: 1 << 32}

// BoundCases are requests at each bound and one over each, with the
// message of a decoder that stops at the first descriptor, entry, key or
// value over.
func BoundCases() []BoundCase {
	type e = ratelimitv3.RateLimitDescriptor_Entry
	d := func(es ...*e) *ratelimitv3.RateLimitDescriptor { return &ratelimitv3.RateLimitDescriptor{Entries: es} }
	req := func(ds ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
		return &rlsv3.RateLimitRequest{Descriptors: ds}
	}
	kv := &e{Key: "k", Value: "v"}
	return []BoundCase{
		{"at the bounds", req(d(kv, &e{Key: "kkkk", Value: "vvvv"}), d()), ""},
		{"descriptors", req(d(kv), d(kv), d(kv)), "descriptors: more than the bound of 2"},
		{"entries", req(d(kv), d(kv, kv, kv)), "descriptors[1].entries: more than the bound of 2"},
		{"key", req(d(kv, &e{Key: "kkkkk"})), "descriptors[0].entries[1].key: 5 bytes, longer than the bound of 4"},
		{"value", req(d(kv), d(&e{Key: "k", Value: "vvvvv"})), "descriptors[1].entries[0].value: 5 bytes, longer than the bound of 4"},
	}
}
