package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketIndexBounds(t *testing.T) {
	// Every value lies within its own bucket's bounds, bucket indices grow
	// with the value, and each bucket is at most 1/128 of its lower bound
	// wide.
	check := func(v int64) {
		i := bucketIndex(v)
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Fatalf("value %d: bucket %d is [%d, %d]", v, i, lo, hi)
		}
		if lo >= subCount && float64(hi-lo+1) > float64(lo)/subCount {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d of %d", i, lo, hi, subCount, lo)
		}
		if i > 0 {
			_, prevHi := bucketBounds(i - 1)
			if prevHi != lo-1 {
				t.Fatalf("bucket %d starts at %d, bucket %d ends at %d", i, lo, i-1, prevHi)
			}
		}
	}
	for v := int64(0); v < 5000; v++ {
		check(v)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(r.Int64N(1 << 62))
	}
	check(1<<63 - 1)
}

func TestHistogramPercentiles(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		// Below 128 ns every value has its own bucket: percentiles are exact.
		// Nearest rank: p50 of 1..100 is the 50th value, p99 the 99th.
		{"p50 of 1..100", seq(1, 100), 50, 50},
		{"p90 of 1..100", seq(1, 100), 90, 90},
		{"p99 of 1..100", seq(1, 100), 99, 99},
		{"p99.9 of 1..100", seq(1, 100), 99.9, 100},
		{"p100 of 1..100", seq(1, 100), 100, 100},
		{"tiny p of 1..100", seq(1, 100), 0.001, 1},
		{"one value", []time.Duration{42}, 50, 42},
		// 1000 ns is in bucket [1000, 1003] (width 4 above 512): p50 reports
		// the bucket's top, 1003, but never more than the exact maximum.
		{"upper bound of the bucket", []time.Duration{1000, 1000, 5000}, 50, 1003},
		{"capped at max", []time.Duration{1000}, 50, 1000},
		// 99 values of 1 ms and one of 1 s: p99 is 1 ms (within 1/128),
		// p99.9 is the outlier.
		{"outlier p99", append(repeat(time.Millisecond, 99), time.Second), 99, 1_003_519},
		{"outlier p99.9", append(repeat(time.Millisecond, 99), time.Second), 99.9, time.Second},
		{"negative is zero", []time.Duration{-5}, 50, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Record(v)
			}
			if got := h.Percentile(tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %d, want %d", tt.p, got, tt.want)
			}
		})
	}
}

func TestHistogramRelativeError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h Histogram
	var vals []time.Duration
	for range 20000 {
		v := time.Duration(r.ExpFloat64() * float64(3*time.Millisecond))
		h.Record(v)
		vals = append(vals, v)
	}
	slices.Sort(vals)
	for _, p := range []float64{50, 90, 99, 99.9} {
		rank := int(float64(len(vals))*p/100+0.999999) - 1
		exact := vals[rank]
		got := h.Percentile(p)
		if got < exact || float64(got-exact) > float64(exact)/subCount+1 {
			t.Errorf("p%v = %v, exact %v: outside [exact, exact x (1 + 1/%d)]", p, got, exact, subCount)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Errorf("min/max = %v/%v, want %v/%v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
}

func TestHistogramMergeReset(t *testing.T) {
	var a, b, all Histogram
	for v := range time.Duration(1000) {
		if v%2 == 0 {
			a.Record(v * time.Microsecond)
		} else {
			b.Record(v * time.Microsecond)
		}
		all.Record(v * time.Microsecond)
	}
	a.Merge(&b)
	for _, p := range []float64{1, 50, 90, 99, 100} {
		if a.Percentile(p) != all.Percentile(p) {
			t.Errorf("merged p%v = %v, want %v", p, a.Percentile(p), all.Percentile(p))
		}
	}
	if a.Count() != 1000 || a.Mean() != all.Mean() || a.Max() != all.Max() || a.Min() != 0 {
		t.Errorf("merged count %d mean %v max %v min %v", a.Count(), a.Mean(), a.Max(), a.Min())
	}
	var empty Histogram
	a.Merge(&empty)
	if a.Count() != 1000 {
		t.Errorf("merging an empty histogram changed the count to %d", a.Count())
	}
	a.Reset()
	if a.Count() != 0 || a.Percentile(50) != 0 || a.Max() != 0 || len(a.Bins()) != 0 {
		t.Errorf("after Reset: count %d p50 %v max %v", a.Count(), a.Percentile(50), a.Max())
	}
	a.Record(7)
	if a.Min() != 7 || a.Max() != 7 {
		t.Errorf("after Reset and Record(7): min %v max %v", a.Min(), a.Max())
	}
}

func seq(from, to int) []time.Duration {
	var out []time.Duration
	for v := from; v <= to; v++ {
		out = append(out, time.Duration(v))
	}
	return out
}

func repeat(v time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = v
	}
	return out
}
