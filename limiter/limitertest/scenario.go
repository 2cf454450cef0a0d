package limitertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
)

// The LLM-token budget scenario of usage mode: streams each check the
// budget (hits_addend 0), do the work, and report its real cost, which is
// only known afterwards. Against a usage limit the tokens used stay within
// the allowance (burst plus refill over the run) plus one report per
// stream in flight, and the budget is not left idle either.
const (
	scenarioStreams = 16
	scenarioRate    = 1000 // tokens per second
	scenarioBurst   = 2000
	scenarioMinCost = 100
	scenarioMaxCost = 300
	scenarioRun     = 3 * time.Second
)

// UsageScenarioResult is what one run of RunUsageScenario measured.
type UsageScenarioResult struct {
	Used      uint64        // tokens reported by the streams
	Allowance uint64        // burst + rate x elapsed
	Elapsed   time.Duration // from the first check to the last one
	Checks    int
	Denied    int
}

// RunUsageScenario runs 16 streams, each checking then reporting 100 to 300
// tokens, against 1000 tokens/s with a burst of 2000 for 3 s of the
// store's time, and asserts: used <= allowance + streams x largest cost,
// and used >= 80% of the allowance. On a store with a fake clock
// (h.Advance) it is a discrete-event simulation; otherwise real goroutines
// sleep through real time.
func RunUsageScenario(t *testing.T, h Harness) UsageScenarioResult {
	t.Helper()
	r := rl(scenarioRate, limiter.Second, scenarioBurst)
	r.Charge = limiter.ChargeUsage
	e := newEnv(t, h, domain("llm", node("tenant", "", r)))
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var res UsageScenarioResult
	if h.Advance != nil {
		res = e.scenarioSimulated(rand.New(rand.NewPCG(seed, 7)))
	} else {
		res = e.scenarioReal(seed)
	}
	// The ceiling counts refill up to the last check (no check passes
	// later, so no more work starts); the floor counts the whole run.
	res.Allowance = scenarioBurst + uint64(scenarioRun.Microseconds())*scenarioRate/1e6
	ceiling := scenarioBurst + uint64(res.Elapsed.Microseconds())*scenarioRate/1e6 + scenarioStreams*scenarioMaxCost
	t.Logf("used %d tokens, last check at %v: allowance %d, ceiling %d, %.0f%% of the allowance; %d checks, %d denied",
		res.Used, res.Elapsed, res.Allowance, ceiling, 100*float64(res.Used)/float64(res.Allowance), res.Checks, res.Denied)
	if res.Used > ceiling {
		t.Errorf("used %d tokens, more than the allowance up to the last check plus %d streams x %d (%d)", res.Used, scenarioStreams, scenarioMaxCost, ceiling)
	}
	if res.Used*10 < res.Allowance*8 {
		t.Errorf("used %d tokens, less than 80%% of the allowance %d", res.Used, res.Allowance)
	}
	if res.Denied == 0 {
		t.Errorf("no check was denied: the budget never ran out")
	}
	return res
}

func scenarioCost(rng *rand.Rand) uint64 {
	return scenarioMinCost + uint64(rng.IntN(scenarioMaxCost-scenarioMinCost+1))
}

// scenarioWork is how long a stream works between its check and its report.
func scenarioWork(rng *rand.Rand) time.Duration {
	return time.Duration(10+rng.IntN(41)) * time.Millisecond
}

type scenarioEvent struct {
	at     time.Duration // since the start
	stream int
	report uint64 // 0: a check
}

func (e *env) scenarioSimulated(rng *rand.Rand) UsageScenarioResult {
	var res UsageScenarioResult
	var now time.Duration
	events := make([]scenarioEvent, 0, scenarioStreams)
	for i := 0; i < scenarioStreams; i++ {
		events = append(events, scenarioEvent{at: time.Duration(i) * time.Millisecond, stream: i})
	}
	for len(events) > 0 {
		sort.Slice(events, func(a, b int) bool { return events[a].at < events[b].at })
		ev := events[0]
		events = events[1:]
		if ev.at > now {
			e.h.Advance(ev.at - now)
			now = ev.at
		}
		k := one("tenant", "acme")
		if ev.report > 0 {
			e.decide(req("llm", cost(k, ev.report)))
			res.Used += ev.report
			events = append(events, scenarioEvent{at: now, stream: ev.stream})
			continue
		}
		if now >= scenarioRun {
			continue // the stream stops
		}
		resp := e.decide(req("llm", check(k)))
		res.Checks++
		res.Elapsed = now
		if resp.Statuses[0].Code == limiter.OK {
			events = append(events, scenarioEvent{at: now + scenarioWork(rng), stream: ev.stream, report: scenarioCost(rng)})
			continue
		}
		res.Denied++
		wait := max(time.Duration(resp.Statuses[0].ResetMicros)*time.Microsecond, time.Millisecond)
		events = append(events, scenarioEvent{at: now + wait, stream: ev.stream})
	}
	return res
}

func (e *env) scenarioReal(seed uint64) UsageScenarioResult {
	var (
		used, checks, denied atomic.Uint64
		last                 atomic.Int64 // store time of the last check
		wg                   sync.WaitGroup
		errs                 = make(chan error, scenarioStreams)
	)
	start := e.h.Now()
	deadline := time.Now().Add(scenarioRun)
	for i := 0; i < scenarioStreams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			k := one("tenant", "acme")
			var resp limiter.Response
			for time.Now().Before(deadline) {
				if err := e.lim.Decide(context.Background(), req("llm", check(k)), &resp); err != nil {
					errs <- err
					return
				}
				checks.Add(1)
				last.Store(e.h.Now())
				if resp.Statuses[0].Code != limiter.OK {
					denied.Add(1)
					wait := time.Duration(resp.Statuses[0].ResetMicros) * time.Microsecond
					time.Sleep(min(max(wait, time.Millisecond), time.Until(deadline)+time.Millisecond))
					continue
				}
				time.Sleep(scenarioWork(rng))
				c := scenarioCost(rng)
				if err := e.lim.Decide(context.Background(), req("llm", cost(k, c)), &resp); err != nil {
					errs <- fmt.Errorf("report: %w", err)
					return
				}
				used.Add(c)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatalf("decide: %v", err)
	}
	return UsageScenarioResult{
		Used: used.Load(), Elapsed: time.Duration(last.Load()-start) * time.Microsecond,
		Checks: int(checks.Load()), Denied: int(denied.Load()),
	}
}
