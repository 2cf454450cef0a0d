package bench

import (
	"math"
	"math/rand/v2"
	"sort"
	"strconv"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// workload builds requests. It is shared read-only by the workers; each
// worker brings its own random source.
type workload struct {
	domain string
	keys   []string // one per descriptor position
	values []string // the distinct values
	cdf    []float64
	hits   uint32
}

func newWorkload(o *Options, prefix string) *workload {
	w := &workload{domain: o.Domain, hits: o.Hits}
	for i := range o.Descriptors {
		w.keys = append(w.keys, o.DescriptorKey(i))
	}
	w.values = make([]string, o.Values)
	for i := range w.values {
		w.values[i] = prefix + strconv.Itoa(i)
	}
	if o.Dist == DistZipf {
		w.cdf = zipfCDF(o.Values, o.ZipfS)
	}
	return w
}

// zipfCDF returns the cumulative distribution of ranks 0..n-1 with weight
// 1/(k+1)^s, normalised to end at 1. math/rand's Zipf needs s > 1; web
// traffic is usually fitted with s near 1, so the harness keeps a table.
func zipfCDF(n int, s float64) []float64 {
	cdf := make([]float64, n)
	sum := 0.0
	for k := range n {
		sum += math.Pow(float64(k+1), -s)
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	cdf[n-1] = 1
	return cdf
}

// pick draws a value index.
func (w *workload) pick(r *rand.Rand) int {
	if w.cdf == nil {
		return r.IntN(len(w.values))
	}
	u := r.Float64()
	return sort.SearchFloat64s(w.cdf, u) // first k with cdf[k] >= u
}

// request is one worker's request, reused for each of its calls: the
// client encodes a message before the call returns and keeps no reference
// (retries resend the encoded bytes). A stats handler or gRPC tracing
// added to the client could hold it; the harness installs neither.
type request struct {
	msg     rlsv3.RateLimitRequest
	descs   []*ratelimitv3.RateLimitDescriptor
	entries []*ratelimitv3.RateLimitDescriptor_Entry
}

// newRequest builds a worker's request with one descriptor per key.
func (w *workload) newRequest() *request {
	q := &request{
		descs:   make([]*ratelimitv3.RateLimitDescriptor, len(w.keys)),
		entries: make([]*ratelimitv3.RateLimitDescriptor_Entry, len(w.keys)),
	}
	for i, k := range w.keys {
		q.entries[i] = &ratelimitv3.RateLimitDescriptor_Entry{Key: k}
		q.descs[i] = &ratelimitv3.RateLimitDescriptor{Entries: q.entries[i : i+1 : i+1]}
	}
	q.msg = rlsv3.RateLimitRequest{Domain: w.domain, Descriptors: q.descs, HitsAddend: w.hits}
	return q
}

// next fills idx (one value index per descriptor) and q, and returns q's
// message.
func (w *workload) next(r *rand.Rand, idx []int, q *request) *rlsv3.RateLimitRequest {
	for i := range w.keys {
		idx[i] = w.pick(r)
		q.entries[i].Value = w.values[idx[i]]
	}
	return &q.msg
}
