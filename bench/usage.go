package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Workloads.
const (
	// WorkloadAdmission: every request asks for -hits tokens per descriptor
	// and is admitted or not (the default).
	WorkloadAdmission = "admission"
	// WorkloadUsage: budgets charged after the work (LLM tokens, bytes).
	// Each of Concurrency streams loops: a check (descriptor hits_addend
	// 0), and when it is OK a report of a cost drawn uniformly from
	// [CostMin, CostMax] as the descriptor's hits_addend, on the same
	// bucket. The server's rule is meant to have `charge: usage`.
	WorkloadUsage = "usage"
)

// usageMinFraction is the least share of the allowance a usage run must
// use: a server that refuses checks it could have granted wastes budget.
const usageMinFraction = 0.8

// ParseCost parses "-cost": "N" or "MIN-MAX", positive integers.
func ParseCost(s string) (lo, hi uint64, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if lo, err = strconv.ParseUint(strings.TrimSpace(a), 10, 64); err != nil || lo == 0 {
		return 0, 0, fmt.Errorf("cost %q: want a positive integer N or a range MIN-MAX", s)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.ParseUint(strings.TrimSpace(b), 10, 64); err != nil || hi < lo {
			return 0, 0, fmt.Errorf("cost %q: want MIN-MAX with 1 <= MIN <= MAX", s)
		}
	}
	if hi > math.MaxUint32 {
		return 0, 0, fmt.Errorf("cost %q: at most %d", s, uint64(math.MaxUint32))
	}
	return lo, hi, nil
}

// Usage is the outcome of a usage-workload run: the tokens the streams
// reported against the budget, and the budget's allowance over the run.
//
// Each stream has at most one report outstanding, and a report follows a
// check that found at least one token; so however the calls interleave, a
// correct server lets the streams use at most the allowance plus
// Concurrency x CostMax (Bound): every stream may have passed its check
// just before the bucket ran dry, and then reports its largest cost. The
// allowance per bucket is computed as Accuracy's wide allowance: burst +
// rate x ((R2 - S1) x 1.001 + slack), from the first send to the last
// answer on the bucket, warmup included (the bucket remembers it).
//
// Reports whose call failed are left out of UsedTokens (the server may
// have charged them), which can hide overuse but never invent it; they are
// counted in ReportErrors.
type Usage struct {
	Limit           string  `json:"limit"`
	RatePerSecond   float64 `json:"rate_per_second"`
	Burst           uint64  `json:"burst"`
	Streams         int     `json:"streams"`
	CostMin         uint64  `json:"cost_min"`
	CostMax         uint64  `json:"cost_max"`
	Buckets         int     `json:"buckets"` // buckets that saw at least one answer
	Checks          int64   `json:"checks"`  // answered checks, warmup included
	ChecksOK        int64   `json:"checks_ok"`
	Reports         int64   `json:"reports"`       // answered reports (each followed an OK check)
	ReportsOK       int64   `json:"reports_ok"`    // of them, answered OK
	ReportErrors    int64   `json:"report_errors"` // reports whose call failed
	UsedTokens      int64   `json:"used_tokens"`   // sum of the answered reports' costs
	AllowanceTokens float64 `json:"allowance_tokens"`
	BoundTokens     float64 `json:"bound_tokens"`   // Streams x CostMax
	UsedFraction    float64 `json:"used_fraction"`  // UsedTokens / AllowanceTokens
	WithinBound     bool    `json:"within_bound"`   // UsedTokens <= AllowanceTokens + BoundTokens
	UsesAllowance   bool    `json:"uses_allowance"` // UsedTokens >= 0.8 x AllowanceTokens
}

// usageStat is one bucket's figures, from many streams; times are
// nanoseconds since the run's start.
type usageStat struct {
	firstSend, lastRecv atomic.Int64
	used                atomic.Int64
}

// usageTracker gathers a usage run's figures.
type usageTracker struct {
	stats                        []usageStat
	checks, checksOK             atomic.Int64
	reports, reportsOK, reportEr atomic.Int64
}

func newUsageTracker(values int) *usageTracker {
	t := &usageTracker{stats: make([]usageStat, values)}
	for i := range t.stats {
		t.stats[i].firstSend.Store(math.MaxInt64)
		t.stats[i].lastRecv.Store(-1)
	}
	return t
}

// seen notes an answered call on bucket v.
func (t *usageTracker) seen(v int, send, recv time.Duration) {
	s := &t.stats[v]
	storeMin(&s.firstSend, int64(send))
	storeMax(&s.lastRecv, int64(recv))
}

// usageRequests is one stream's pair of requests on its current bucket:
// the check (hits_addend 0) and the report (hits_addend the cost).
type usageRequests struct {
	check, report   rlsv3.RateLimitRequest
	checkE, reportE ratelimitv3.RateLimitDescriptor_Entry
	cost            wrapperspb.UInt64Value
}

func (w *workload) newUsageRequests() *usageRequests {
	u := &usageRequests{}
	u.checkE.Key, u.reportE.Key = w.keys[0], w.keys[0]
	u.check = rlsv3.RateLimitRequest{Domain: w.domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{&u.checkE}, HitsAddend: wrapperspb.UInt64(0),
	}}}
	u.report = rlsv3.RateLimitRequest{Domain: w.domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{&u.reportE}, HitsAddend: &u.cost,
	}}}
	return u
}

// drawCost picks a report's cost.
func drawCost(r *rand.Rand, lo, hi uint64) uint64 {
	return lo + r.Uint64N(hi-lo+1)
}

// usageStep runs one iteration of a usage stream: a check and, when it is
// OK, a report.
func (r *runner) usageStep(ctx context.Context, wk *worker, measured bool) {
	v := r.w.pick(wk.rnd)
	u := wk.usage
	u.checkE.Value = r.w.values[v]
	c := r.do(ctx, wk, &u.check, time.Time{}, measured)
	if c.stopped || c.err != nil || wk.v.code == rlsv3.RateLimitResponse_UNKNOWN {
		return
	}
	t := r.usage
	t.checks.Add(1)
	t.seen(v, c.sent, c.recv)
	if wk.v.code != rlsv3.RateLimitResponse_OK {
		return
	}
	t.checksOK.Add(1)
	cost := drawCost(wk.rnd, r.o.CostMin, r.o.CostMax)
	u.reportE.Value = r.w.values[v]
	u.cost.Value = cost
	rc := r.do(ctx, wk, &u.report, time.Time{}, measured)
	if rc.err != nil || wk.v.code == rlsv3.RateLimitResponse_UNKNOWN {
		t.reportEr.Add(1) // stopped or failed: it may have been charged
		return
	}
	t.reports.Add(1)
	if wk.v.code == rlsv3.RateLimitResponse_OK {
		t.reportsOK.Add(1)
	}
	t.seen(v, rc.sent, rc.recv)
	t.stats[v].used.Add(int64(cost))
}

// computeUsage applies the rules documented on Usage.
func computeUsage(o *Options, t *usageTracker) *Usage {
	l := *o.Limit
	rate, burst := l.Rate(), float64(l.Burst)
	u := &Usage{
		Limit: l.String(), RatePerSecond: rate, Burst: l.Burst, Streams: o.Concurrency,
		CostMin: o.CostMin, CostMax: o.CostMax,
		Checks: t.checks.Load(), ChecksOK: t.checksOK.Load(),
		Reports: t.reports.Load(), ReportsOK: t.reportsOK.Load(), ReportErrors: t.reportEr.Load(),
		BoundTokens: float64(o.Concurrency) * float64(o.CostMax),
	}
	for i := range t.stats {
		s := &t.stats[i]
		last := s.lastRecv.Load()
		if last < 0 {
			continue
		}
		u.Buckets++
		span := time.Duration(last - s.firstSend.Load()).Seconds()
		u.AllowanceTokens += burst + rate*(span*(1+clockDrift)+o.ClockSlack.Seconds())
		u.UsedTokens += s.used.Load()
	}
	if u.AllowanceTokens > 0 {
		u.UsedFraction = float64(u.UsedTokens) / u.AllowanceTokens
	}
	u.WithinBound = float64(u.UsedTokens) <= u.AllowanceTokens+u.BoundTokens
	u.UsesAllowance = u.Buckets > 0 && u.UsedFraction >= usageMinFraction
	return u
}
