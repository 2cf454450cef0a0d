package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits linear steps, so a recorded value is known to within 1/128
// (0.78%) of itself. Values below 2^subBits nanoseconds are kept exactly.
const subBits = 7

const subCount = 1 << subBits

// Histogram is a log-linear latency histogram in the manner of HdrHistogram:
// exact below 128 ns, then 128 linear buckets per power of two up to the
// largest int64. It grows on demand, so an idle histogram costs a few
// bytes and one that saw 10 s costs about 28 KiB. The zero value is ready
// to use. It is not safe for concurrent use.
type Histogram struct {
	counts []uint64 // counts[i] is the number of values with index(v) == i
	total  uint64
	sum    float64 // nanoseconds, for the mean
	min    int64
	max    int64
}

// bucketIndex maps a non-negative value to its bucket.
func bucketIndex(v int64) int {
	if v < subCount {
		return int(v)
	}
	u := uint64(v)
	e := bits.Len64(u) - subBits - 1 // u is in [2^(e+subBits), 2^(e+subBits+1))
	return (e+1)<<subBits + int(u>>uint(e)) - subCount
}

// bucketBounds returns the smallest and largest value that map to bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	e := i>>subBits - 1
	top := int64(i - e<<subBits) // the value's top subBits+1 bits
	lo = top << uint(e)
	return lo, lo + (int64(1) << uint(e)) - 1
}

// Record adds one value. Negative values are recorded as 0.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	i := bucketIndex(v)
	if i >= len(h.counts) {
		n := max(2*len(h.counts), i+1, 2*subCount)
		grown := make([]uint64, n)
		copy(grown, h.counts)
		h.counts = grown
	}
	h.counts[i]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		grown := make([]uint64, len(o.counts))
		copy(grown, h.counts)
		h.counts = grown
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.total += o.total
	h.sum += o.sum
}

// Reset empties h and keeps its storage.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.total, h.sum, h.min, h.max = 0, 0, 0, 0
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest recorded value, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min is the smallest recorded value, exactly; 0 when empty.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Mean is the mean of the recorded values; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Percentile returns the nearest-rank percentile p (0 < p <= 100): the
// smallest recorded value v such that at least p% of the values are <= v,
// reported as the upper bound of v's bucket (so never below the true value
// and at most 0.78% above it) and capped at the exact maximum. It returns 0
// when the histogram is empty.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.total)))
	rank = max(rank, 1)
	rank = min(rank, h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			return time.Duration(min(hi, h.max))
		}
	}
	return time.Duration(h.max)
}

// HistogramBin is one non-empty bucket of a Histogram: Count values lie in
// [Lo, Hi].
type HistogramBin struct {
	Lo, Hi time.Duration
	Count  uint64
}

// Bins returns the non-empty buckets in increasing order.
func (h *Histogram) Bins() []HistogramBin {
	var out []HistogramBin
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, hi := bucketBounds(i)
		out = append(out, HistogramBin{Lo: time.Duration(lo), Hi: time.Duration(hi), Count: c})
	}
	return out
}
