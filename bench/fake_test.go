package bench_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
)

// fakeRLS is a small rate-limit server for the tests: an exact token bucket
// per (domain, descriptor entries), all-or-nothing across a request's
// descriptors, on the process's monotonic clock. Capacity and refill rate
// are per bucket. With a sleep it is also a slow server of bounded
// concurrency.
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer

	rate     float64 // tokens per second; 0: no limiting at all
	capacity float64
	sleep    time.Duration // per call, holding one of the slots
	slots    chan struct{} // bounds concurrent calls when not nil

	mu      sync.Mutex
	buckets map[string]*fakeBucket
}

type fakeBucket struct {
	tokens float64
	at     time.Time
}

func (f *fakeRLS) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if f.slots != nil {
		select {
		case f.slots <- struct{}{}:
			defer func() { <-f.slots }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.sleep > 0 {
		time.Sleep(f.sleep)
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	statuses := make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(in.GetDescriptors()))
	if f.rate == 0 {
		for i := range statuses {
			statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		}
		resp.Statuses = statuses
		return resp, nil
	}
	cost := float64(max(in.GetHitsAddend(), 1))

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buckets == nil {
		f.buckets = map[string]*fakeBucket{}
	}
	now := time.Now()
	touched := make([]*fakeBucket, len(statuses))
	for i, d := range in.GetDescriptors() {
		var k strings.Builder
		k.WriteString(in.GetDomain())
		for _, e := range d.GetEntries() {
			k.WriteString("\x00" + e.GetKey() + "\x00" + e.GetValue())
		}
		b := f.buckets[k.String()]
		if b == nil {
			b = &fakeBucket{tokens: f.capacity, at: now}
			f.buckets[k.String()] = b
		}
		b.tokens = min(f.capacity, b.tokens+f.rate*now.Sub(b.at).Seconds())
		b.at = now
		touched[i] = b
		statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		if b.tokens < cost {
			statuses[i].Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		}
	}
	if resp.OverallCode == rlsv3.RateLimitResponse_OK {
		for _, b := range touched {
			b.tokens -= cost
		}
	}
	resp.Statuses = statuses
	return resp, nil
}

// serve starts srv on a loopback port and returns its address.
func serve(t *testing.T, srv rlsv3.RateLimitServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(g, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis) // returns when the test stops the server
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

// countingRLS answers OK and counts the calls it got.
type countingRLS struct {
	fakeRLS
	n atomic.Int64
}

func (c *countingRLS) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	c.n.Add(1)
	return c.fakeRLS.ShouldRateLimit(ctx, in)
}
