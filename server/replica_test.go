//go:build integration

package server_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/redis"
)

// replicas starts n Sluice servers, each with its own Redis client, all on
// one Redis.
func replicas(t *testing.T, n int, domains []limiter.DomainConfig) []*harness {
	t.Helper()
	addr := limitertest.StartRedis(t)
	var hs []*harness
	for i := 0; i < n; i++ {
		cfg := redis.DefaultConfig()
		cfg.URL = "redis://" + addr
		// The read timeout bounds each call, pool wait and dial included;
		// these tests are about exactness, so give a cold pool on a busy
		// machine room to fill.
		cfg.ReadTimeout = 2 * time.Second
		st, err := redis.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		hs = append(hs, start(t, domains, false, withStore(st)))
	}
	return hs
}

func replicaDomain(rpu uint32, unit limiter.Unit, burst uint32) []limiter.DomainConfig {
	return []limiter.DomainConfig{{Domain: "replicas", File: "test.yaml", Descriptors: []limiter.DescriptorConfig{
		{Key: "client", RateLimit: &limiter.RateLimit{RequestsPerUnit: rpu, Unit: unit, Burst: burst}},
	}}}
}

func replicaRequest(value string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "replicas", Descriptors: []*commonv3.RateLimitDescriptor{
		{Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "client", Value: value}}},
	}}
}

// TestReplicasAdmitExactly: three servers on one Redis, 300 concurrent
// requests for one bucket of 100 that does not refill in the test's time:
// exactly 100 are admitted.
func TestReplicasAdmitExactly(t *testing.T) {
	hs := replicas(t, 3, replicaDomain(100, limiter.Hour, 0))
	var ok, over atomic.Int64
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startLine
			resp, err := hs[i%3].call(replicaRequest("hot"))
			if err != nil {
				t.Error(err)
				return
			}
			switch resp.OverallCode {
			case rlsv3.RateLimitResponse_OK:
				ok.Add(1)
			case rlsv3.RateLimitResponse_OVER_LIMIT:
				over.Add(1)
			}
		}()
	}
	close(startLine)
	wg.Wait()
	if ok.Load() != 100 || over.Load() != 200 {
		t.Fatalf("admitted %d, denied %d of 300; want exactly 100 and 200", ok.Load(), over.Load())
	}
}

// TestReplicasSustained: a sustained run across three servers admits no
// more than burst + rate x elapsed (+1), with elapsed measured generously
// (first send to last answer).
func TestReplicasSustained(t *testing.T) {
	const rate, burst = 50, 10 // per second
	hs := replicas(t, 3, replicaDomain(rate, limiter.Second, burst))
	var admitted, calls atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	deadline := begin.Add(3 * time.Second)
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := hs[g%3].call(replicaRequest("steady"))
				if err != nil {
					t.Error(err)
					return
				}
				calls.Add(1)
				if resp.OverallCode == rlsv3.RateLimitResponse_OK {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	allowance := burst + int64(elapsed.Seconds()*rate) + 1
	t.Logf("%d calls in %v, %d admitted, allowance %d", calls.Load(), elapsed, admitted.Load(), allowance)
	if admitted.Load() > allowance {
		t.Fatalf("admitted %d, more than burst + rate x elapsed = %d", admitted.Load(), allowance)
	}
	if admitted.Load() <= burst || calls.Load() <= admitted.Load() {
		t.Fatalf("admitted %d of %d calls: the run never reached the limit or never refilled", admitted.Load(), calls.Load())
	}
}
