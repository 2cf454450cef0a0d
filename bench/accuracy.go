package bench

import (
	"cmp"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// clockDrift is the relative rate difference between the harness's clock
// and the server's that the accuracy bounds allow for: 0.1%, a hundred
// times what an unsynchronised quartz clock drifts.
const clockDrift = 1e-3

// worstBuckets is how many buckets the report names.
const worstBuckets = 10

// Accuracy compares what the server admitted, bucket by bucket, with what an
// exact token bucket of the known limit can admit over the same time.
//
// A bucket is one (descriptor position, value) pair: the server is assumed
// to keep one bucket for each, with the limit given by -limit. For every
// request that got a decision the harness knows when it sent it and when the
// answer came, on its own monotonic clock; the server decided somewhere in
// between. For a bucket, let S1 and S2 be the first and last send times of
// the requests that touched it and R1 and R2 the first and last receive
// times.
//
//   - Every decision for the bucket happened within [S1, R2], so an exact
//     token bucket, full at the start, admits at most
//     allowance = burst + rate x ((R2 - S1) x (1 + 0.001) + slack)
//     tokens. The 0.1% covers a server clock that runs faster than ours and
//     slack (-clock-slack, default 1 ms) covers a server that reads its
//     clock coarsely. Over-admission is max(0, admitted - floor(allowance)):
//     a correct server never exceeds it, however the calls interleave, so
//     it must be 0.
//   - The decisions span at least S2 - R1, so the narrow allowance is
//     burst + rate x max(0, (S2 - R1) x (1 - 0.001) - slack), rounded down
//     to whole requests. Under-admission is
//     max(0, min(offered, narrow allowance) - admitted). It is an
//     indicator, not a proof: it is exact only when the bucket was fully
//     used (offered above the limit all the time); bursts after idle time,
//     or a bucket left drained by an earlier run with the same values, make
//     a correct server show some.
//
// Counts are in tokens (requests x hits). A request with several
// descriptors is all-or-nothing: every bucket it touches counts it as
// admitted when the overall code is OK and not admitted otherwise. For
// under-admission, a denied request is offered only to the buckets whose own
// status was OVER_LIMIT (or all of them if the server sent no per-descriptor
// statuses): a bucket that held enough tokens was not asked to give them.
// Under-admission still overstates with several descriptors: a bucket
// whose requests keep being denied for another one fills up and wastes
// refill, which looks the same as a server refusing tokens it had.
// Over-admission counts every admitted request, so it does not depend on
// what the server says about the cause.
//
// Accuracy covers the whole run, warmup included, because the buckets
// remember the warmup; by default every run uses fresh values (a random
// -value-prefix), so every bucket starts full. Requests that failed (an
// error or a timeout) are left out; a server may have admitted some of
// them, which can hide over-admission but never invent it.
type Accuracy struct {
	Limit           string  `json:"limit"`            // as given, REQUESTS/UNIT,BURST
	RatePerSecond   float64 `json:"rate_per_second"`  // refill rate
	Burst           uint64  `json:"burst"`            // capacity
	ClockSlackMS    float64 `json:"clock_slack_ms"`   // added to each bucket's span
	Buckets         int     `json:"buckets"`          // buckets that saw at least one decision
	OfferedTokens   int64   `json:"offered_tokens"`   // tokens asked for in decided requests
	AdmittedTokens  int64   `json:"admitted_tokens"`  // tokens of requests answered OK
	AllowanceTokens float64 `json:"allowance_tokens"` // sum of the wide allowances
	OverAdmission   int64   `json:"over_admission"`   // sum of max(0, admitted - floor(allowance))
	OverBuckets     int     `json:"over_buckets"`     // buckets with over-admission
	UnderAdmission  int64   `json:"under_admission"`  // sum of max(0, min(offered, narrow allowance) - admitted)
	UnderBuckets    int     `json:"under_buckets"`    // buckets with under-admission
	// Worst lists up to 10 buckets with over-admission, the largest first;
	// when none over-admitted, the ones with the most under-admission.
	Worst []BucketAccuracy `json:"worst"`
}

// BucketAccuracy is one bucket's figures.
type BucketAccuracy struct {
	Key             string  `json:"key"`
	Value           string  `json:"value"`
	OfferedTokens   int64   `json:"offered_tokens"`
	AdmittedTokens  int64   `json:"admitted_tokens"`
	SpanSeconds     float64 `json:"span_s"`    // R2 - S1
	Allowance       float64 `json:"allowance"` // wide allowance
	NarrowAllowance float64 `json:"narrow_allowance"`
	Over            int64   `json:"over"`
	Under           int64   `json:"under"`
}

// bucketSample is what the harness saw of one bucket; times are offsets
// from the run's start on the harness's monotonic clock.
type bucketSample struct {
	key, value          string
	firstSend, lastSend time.Duration
	firstRecv, lastRecv time.Duration
	admitted, offered   int64 // tokens
	underOffered        int64 // tokens offered for the under-admission figure
	decided             bool  // saw at least one decision
}

// computeAccuracy applies the rules documented on Accuracy. hits is the
// cost of one request to each of its buckets.
func computeAccuracy(l Limit, hits uint32, slack time.Duration, samples []bucketSample) *Accuracy {
	rate := l.Rate()
	burst := float64(l.Burst)
	h := int64(max(hits, 1))
	a := &Accuracy{
		Limit: l.String(), RatePerSecond: rate, Burst: l.Burst,
		ClockSlackMS: float64(slack) / float64(time.Millisecond),
	}
	var all []BucketAccuracy
	for _, s := range samples {
		if !s.decided {
			continue
		}
		a.Buckets++
		wide := (s.lastRecv - s.firstSend).Seconds()
		allowance := burst + rate*(wide*(1+clockDrift)+slack.Seconds())
		narrow := (s.lastSend-s.firstRecv).Seconds()*(1-clockDrift) - slack.Seconds()
		narrowAllowance := burst + rate*max(0, narrow)

		over := max(0, s.admitted-int64(math.Floor(allowance+1e-9)))
		whole := int64(math.Floor(narrowAllowance/float64(h)+1e-9)) * h
		under := max(0, min(s.underOffered, whole)-s.admitted)

		a.OfferedTokens += s.offered
		a.AdmittedTokens += s.admitted
		a.AllowanceTokens += allowance
		a.OverAdmission += over
		a.UnderAdmission += under
		if over > 0 {
			a.OverBuckets++
		}
		if under > 0 {
			a.UnderBuckets++
		}
		if over > 0 || under > 0 {
			all = append(all, BucketAccuracy{
				Key: s.key, Value: s.value,
				OfferedTokens: s.offered, AdmittedTokens: s.admitted,
				SpanSeconds: wide, Allowance: allowance, NarrowAllowance: narrowAllowance,
				Over: over, Under: under,
			})
		}
	}
	slices.SortFunc(all, func(x, y BucketAccuracy) int {
		if c := cmp.Compare(y.Over, x.Over); c != 0 {
			return c
		}
		if c := cmp.Compare(y.Under, x.Under); c != 0 {
			return c
		}
		return cmp.Compare(x.Key+"\x00"+x.Value, y.Key+"\x00"+y.Value)
	})
	if a.OverBuckets > 0 {
		all = all[:a.OverBuckets]
	}
	a.Worst = all[:min(len(all), worstBuckets)]
	if a.Worst == nil {
		a.Worst = []BucketAccuracy{}
	}
	return a
}

// bucketStat collects one bucket's times and counts from many workers.
// Times are nanoseconds since the run's start.
type bucketStat struct {
	firstSend, lastSend atomic.Int64
	firstRecv, lastRecv atomic.Int64
	admitted, offered   atomic.Int64
	underOffered        atomic.Int64
}

// tracker holds one bucketStat per (descriptor position, value).
type tracker struct {
	values int
	stats  []bucketStat
}

func newTracker(descriptors, values int) *tracker {
	t := &tracker{values: values, stats: make([]bucketStat, descriptors*values)}
	for i := range t.stats {
		t.stats[i].firstSend.Store(math.MaxInt64)
		t.stats[i].firstRecv.Store(math.MaxInt64)
		t.stats[i].lastSend.Store(-1)
		t.stats[i].lastRecv.Store(-1)
	}
	return t
}

func storeMin(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v >= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// record notes one decided request touching bucket (pos, value).
func (t *tracker) record(pos, value int, send, recv time.Duration, tokens int64, admitted, underOffered bool) {
	s := &t.stats[pos*t.values+value]
	storeMin(&s.firstSend, int64(send))
	storeMax(&s.lastSend, int64(send))
	storeMin(&s.firstRecv, int64(recv))
	storeMax(&s.lastRecv, int64(recv))
	s.offered.Add(tokens)
	if admitted {
		s.admitted.Add(tokens)
	}
	if admitted || underOffered {
		s.underOffered.Add(tokens)
	}
}

// samples returns a copy of every bucket's figures; call it after every
// worker has stopped.
func (t *tracker) samples(w *workload) []bucketSample {
	out := make([]bucketSample, len(t.stats))
	for i := range t.stats {
		s := &t.stats[i]
		pos, v := i/t.values, i%t.values
		out[i] = bucketSample{
			key: w.keys[pos], value: w.values[v],
			firstSend: time.Duration(s.firstSend.Load()), lastSend: time.Duration(s.lastSend.Load()),
			firstRecv: time.Duration(s.firstRecv.Load()), lastRecv: time.Duration(s.lastRecv.Load()),
			admitted: s.admitted.Load(), offered: s.offered.Load(), underOffered: s.underOffered.Load(),
			decided: s.lastRecv.Load() >= 0,
		}
	}
	return out
}
