package limiter_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
)

// denyAll is a next store whose every bucket is short for a long time, so
// the deny cache remembers each key it is asked about.
type denyAll struct{}

func (denyAll) Apply(_ context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	for i := range reqs {
		res[i] = limiter.BucketResult{ResetMicros: 3_600_000_000}
	}
	return false, nil
}

// BenchmarkDenyCacheEntryMemory fills a deny cache of the default size with
// keys as limiter.AppendKey makes them, of 45 bytes (one remote_address)
// and of about 120 (a route and a remote_address, as Envoy Gateway's
// descriptors have them; limiter.MaxKeyLen bounds every key),
// and reports the live heap per remembered bucket: the figure
// LOCAL_CACHE_SIZE_IN_BYTES is divided by in compat mode
// (compat.DenyCacheEntryBytes). Run it with -benchtime 1x.
func BenchmarkDenyCacheEntryMemory(b *testing.B) {
	b.Run("key=45B", func(b *testing.B) { benchDenyCacheEntryMemory(b, "") })
	b.Run("key=long", func(b *testing.B) { benchDenyCacheEntryMemory(b, strings.Repeat("r", 60)) })
}

func benchDenyCacheEntryMemory(b *testing.B, pad string) {
	rl := limiter.RateLimit{Unit: limiter.Minute, RequestsPerUnit: 100}
	rate, err := rl.Rate()
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		base := liveHeap()
		c := limiter.NewDenyCache(denyAll{}, limiter.DenyCacheConfig{})
		var key []byte
		res := make([]limiter.BucketResult, 1)
		for i := range limiter.DefaultDenyCacheSize {
			v := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + "/" + strconv.Itoa(i>>24)
			parts := []limiter.KeyPart{{Key: "remote_address", Value: v}}
			if pad != "" {
				parts = append(parts, limiter.KeyPart{Key: "route", Value: pad})
			}
			key = limiter.AppendKey(key[:0], "sl:", "edge", parts, nil)
			if _, err := c.Apply(context.Background(), []limiter.BucketRequest{{Key: string(key), Rate: rate, Cost: 1, Op: limiter.OpTake}}, res); err != nil {
				b.Fatal(err)
			}
		}
		n := c.Stats().Entries
		if n < limiter.DefaultDenyCacheSize*9/10 {
			b.Fatalf("the cache remembers %d buckets, want about %d", n, limiter.DefaultDenyCacheSize)
		}
		b.ReportMetric(float64(liveHeap()-base)/float64(n), "B/entry")
		b.ReportMetric(float64(n), "entries")
		b.ReportMetric(float64(len(key)), "key-bytes")
		runtime.KeepAlive(c)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
