package memory_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// BenchmarkApply is one take on one bucket: the same few keys over and
// over (hot), or a new key every call (distinct; past the default bound of
// a million buckets it evicts a bucket on every insert). full-64k is
// distinct on a store bounded at 65536 buckets, so nearly every call
// evicts.
func BenchmarkApply(b *testing.B) {
	rl := limiter.RateLimit{Unit: limiter.Year, RequestsPerUnit: 1 << 20}
	rate, err := rl.Rate()
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "edge\x00remote_address\x0010.0." + strconv.Itoa(i)
	}
	distinct := func(i int) string { return keys[i&(len(keys)-1)] + "/" + strconv.Itoa(i) }
	for _, bc := range []struct {
		name string
		key  func(i int) string
		max  int
	}{
		{"hot", func(i int) string { return keys[i&63] }, memory.DefaultMaxBuckets},
		{"distinct", distinct, memory.DefaultMaxBuckets},
		{"full-64k", distinct, 1 << 16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := memory.NewWithConfig(nil, memory.Config{MaxBuckets: bc.max})
			if err != nil {
				b.Fatal(err)
			}
			reqs := []limiter.BucketRequest{{Rate: rate, Cost: 1, Op: limiter.OpTake}}
			res := make([]limiter.BucketResult, 1)
			names := make([]string, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%len(names) == 0 {
					// Build keys outside the timed part: the store is measured,
					// not strconv.
					b.StopTimer()
					for j := range names {
						names[j] = bc.key(i + j)
					}
					b.StartTimer()
				}
				reqs[0].Key = names[i%len(names)]
				if _, err := s.Apply(context.Background(), reqs, res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBucketMemory fills a store of the default bound with buckets
// of realistic keys (41 bytes, as limiter.AppendKey makes them for one
// remote_address) and reports the live heap per bucket, then again after
// three times as many more keys have churned through it. Run it with
// -benchtime 1x: each iteration fills a million buckets.
func BenchmarkBucketMemory(b *testing.B) {
	rl := limiter.RateLimit{Unit: limiter.Year, RequestsPerUnit: 100}
	rate, err := rl.Rate()
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		s := memory.New(nil)
		var key []byte
		res := make([]limiter.BucketResult, 1)
		apply := func(i int) {
			v := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + "/" + strconv.Itoa(i>>24)
			key = limiter.AppendKey(key[:0], "sl:", "edge", []limiter.KeyPart{{Key: "remote_address", Value: v}}, nil)
			if _, err := s.Apply(context.Background(), []limiter.BucketRequest{{Key: string(key), Rate: rate, Cost: 1, Op: limiter.OpTake}}, res); err != nil {
				b.Fatal(err)
			}
		}
		base := heapInUse()
		n := s.MaxBuckets()
		for i := range n {
			apply(i)
		}
		full := heapInUse()
		for i := n; i < 4*n; i++ {
			apply(i)
		}
		end := heapInUse()
		b.ReportMetric(float64(full-base)/float64(n), "B/bucket")
		b.ReportMetric(float64(end-base)/float64(n), "B/bucket-churned")
		b.ReportMetric(float64(s.Stats().Buckets), "buckets")
	}
}
