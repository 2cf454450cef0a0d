package limiter_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

func benchLimits(b *testing.B) *limiter.Limits {
	b.Helper()
	rl := func(rpu uint32) *limiter.RateLimit {
		return &limiter.RateLimit{RequestsPerUnit: rpu, Unit: limiter.Second}
	}
	var paths []limiter.DescriptorConfig
	for i := 0; i < 50; i++ {
		paths = append(paths, limiter.DescriptorConfig{Key: "path", Value: "/api/v" + strconv.Itoa(i) + "/*", RateLimit: rl(1000)})
	}
	paths = append(paths, limiter.DescriptorConfig{Key: "path", RateLimit: rl(100)})
	l, err := limiter.Compile([]limiter.DomainConfig{{Domain: "edge", Descriptors: append(paths,
		limiter.DescriptorConfig{Key: "remote_address", RateLimit: rl(1 << 30)},
		limiter.DescriptorConfig{Key: "tenant", Value: "acme*", Descriptors: []limiter.DescriptorConfig{
			{Key: "plan", Value: "free", RateLimit: rl(1 << 30)},
		}},
	)}}, limiter.CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func BenchmarkMatch(b *testing.B) {
	l := benchLimits(b)
	cases := []struct {
		name    string
		entries []limiter.Entry
	}{
		{"exact-key-only", []limiter.Entry{{Key: "remote_address", Value: "10.0.0.1"}}},
		{"wildcard-50th", []limiter.Entry{{Key: "path", Value: "/api/v49/users"}}},
		{"nested", []limiter.Entry{{Key: "tenant", Value: "acme-7"}, {Key: "plan", Value: "free"}}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			parts := make([]limiter.KeyPart, 0, 4)
			b.ReportAllocs()
			for b.Loop() {
				if r, _ := l.Match("edge", c.entries, parts[:0]); r == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkDecideMemory(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run("descriptors="+strconv.Itoa(n), func(b *testing.B) {
			lim := limiter.New(memory.New(nil), limiter.Config{})
			lim.SetLimits(benchLimits(b))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := &limiter.Request{Domain: "edge"}
				for i := 0; i < n; i++ {
					req.Descriptors = append(req.Descriptors, limiter.Descriptor{Entries: []limiter.Entry{{Key: "remote_address", Value: "10.0.0." + strconv.Itoa(i)}}})
				}
				var resp limiter.Response
				for pb.Next() {
					if err := lim.Decide(context.Background(), req, &resp); err != nil || resp.Code != limiter.OK {
						b.Fatal(err, resp.Code)
					}
				}
			})
		})
	}
}
