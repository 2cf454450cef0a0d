//go:build integration

package redis

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestUsageThreeReplicasExact: three replicas (a Limiter and a Store each,
// with their own connections and pipelines) on one Redis take concurrent
// usage reports for one budget; at the end the bucket holds exactly the
// capacity less every report, plus at most the refill during the test. The
// refill is one token a second, so the tolerance is a few tokens in
// 100000. The balance is read from the key (slack and PEXPIRETIME, see
// lua/tokenbucket.lua) and, the same way, from a usage check's retry time.
func TestUsageThreeReplicasExact(t *testing.T) {
	addr := limitertest.StartRedis(t)
	const (
		replicas = 3
		workers  = 3 // per replica
		reports  = 60
		capacity = 86400 // a day's refill: one token a second
	)
	domain := "usage3-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	lims, err := limiter.Compile([]limiter.DomainConfig{{Domain: domain, Descriptors: []limiter.DescriptorConfig{
		{Key: "tenant", RateLimit: &limiter.RateLimit{RequestsPerUnit: capacity, Unit: limiter.Day, Charge: limiter.ChargeUsage}}}}},
		limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lims3 [replicas]*limiter.Limiter
	for i := range lims3 {
		lims3[i] = limiter.New(newTestStore(t, addr, "on"), limiter.Config{KeyPrefix: "sl:"})
		lims3[i].SetLimits(lims)
	}
	entries := []limiter.Entry{{Key: "tenant", Value: "acme"}}
	cost := func(w, i int) uint64 { return 1 + uint64((w*reports+i)*37%500) }
	var want uint64
	for w := 0; w < replicas*workers; w++ {
		for i := 0; i < reports; i++ {
			want += cost(w, i)
		}
	}
	if want <= capacity {
		t.Fatalf("reports of %d tokens do not reach into debt", want)
	}

	raw := rawClient(t, addr)
	start := redisNow(t, raw)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		cut      uint64
		denied   int
		firstErr error
	)
	for w := 0; w < replicas*workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			l := lims3[w%replicas]
			var resp limiter.Response
			for i := 0; i < reports; i++ {
				req := &limiter.Request{Domain: domain, Descriptors: []limiter.Descriptor{{Entries: entries, Cost: cost(w, i), HasCost: true}}}
				if err := l.Decide(context.Background(), req, &resp); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				cut += resp.Statuses[0].Cut
				if resp.Code == limiter.OverLimit {
					denied++
				}
				mu.Unlock()
				if i%10 == 0 { // checks interleaved: they charge nothing
					req.Descriptors[0].Cost = 0
					if err := l.Decide(context.Background(), req, &resp); err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if cut != 0 {
		t.Fatalf("%d tokens cut; the floor (1000 x capacity) is far away", cut)
	}
	if denied == 0 {
		t.Fatal("no report was answered OVER_LIMIT: the budget never ran out")
	}

	// The balance from the key: debt = (PEXPIRETIME*1000 - now)*num - slack.
	rate, _ := lims.Match(domain, entries, nil)
	key := string(limiter.AppendKey(nil, "sl:", domain, []limiter.KeyPart{{Key: "tenant", Value: "acme"}}, nil))
	pipe := raw.TxPipeline()
	tm := pipe.Time(context.Background())
	full := pipe.PExpireTime(context.Background(), key)
	slack := pipe.Get(context.Background(), key)
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatalf("read bucket %q: %v", key, err)
	}
	now := tm.Val().UnixMicro()
	s, err := slack.Int64()
	if err != nil {
		t.Fatalf("slack of %q: %v", key, err)
	}
	r := rate.Rate
	debt := (full.Val().Milliseconds()*1000-now)*int64(r.Num) - s
	// Tokens, in millionths: capacity less the debt.
	balance := (int64(r.Cap)*int64(r.Den) - debt) * 1_000_000 / int64(r.Den)
	exact := (int64(capacity) - int64(want)) * 1_000_000
	refill := (now - start) * int64(r.Num) * 1_000_000 / int64(r.Den) // the most the test's time refilled
	t.Logf("%d reports of %d tokens through %d replicas in %v; balance %.6f tokens, exact %d, refill at most %.6f",
		replicas*workers*reports, want, replicas, time.Duration(now-start)*time.Microsecond,
		float64(balance)/1e6, exact/1_000_000, float64(refill)/1e6)
	if balance < exact || balance > exact+refill+1 {
		t.Fatalf("balance %.6f tokens, want %d plus at most %.6f of refill", float64(balance)/1e6, exact/1_000_000, float64(refill)/1e6)
	}

	// The same from a check: OVER_LIMIT, retry when one token is back.
	var resp limiter.Response
	req := &limiter.Request{Domain: domain, Descriptors: []limiter.Descriptor{{Entries: entries, HasCost: true}}}
	if err := lims3[0].Decide(context.Background(), req, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Code != limiter.OverLimit {
		t.Fatalf("check on a balance of %d: %v", exact/1_000_000, resp.Code)
	}
	// One token a second: the retry time in µs is 1 - balance tokens.
	fromCheck := 1_000_000 - resp.Statuses[0].ResetMicros
	end := redisNow(t, raw)
	refill = (end - start) * int64(r.Num) * 1_000_000 / int64(r.Den)
	if fromCheck < exact || fromCheck > exact+refill+2 {
		t.Fatalf("check: balance %.6f tokens, want %d plus at most %.6f of refill", float64(fromCheck)/1e6, exact/1_000_000, float64(refill)/1e6)
	}
}
