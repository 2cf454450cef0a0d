package memory_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// BenchmarkApply is one take on one bucket: the same few keys over and
// over (hot), or a new key every call (distinct), which past the bound
// evicts a bucket on every insert.
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
	for _, bc := range []struct {
		name string
		key  func(i int) string
	}{
		{"hot", func(i int) string { return keys[i&63] }},
		{"distinct", func(i int) string { return keys[i&(len(keys)-1)] + "/" + strconv.Itoa(i) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := memory.New(nil)
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
