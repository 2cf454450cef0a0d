package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// SchemaVersion names the JSON report's schema; it changes only when a
// field changes meaning or goes away (new fields may be added).
const SchemaVersion = "sluice-bench/v1"

// Report is the outcome of one run. Its JSON form is documented in
// README.md; every field is always present.
type Report struct {
	Schema      string    `json:"schema"`
	StartedAt   time.Time `json:"started_at"`
	Interrupted bool      `json:"interrupted"` // the run was stopped before its end
	Mode        string    `json:"mode"`        // "closed" or "open"
	Config      Config    `json:"config"`

	ElapsedSeconds float64          `json:"elapsed_s"`      // measured phase: its start to the last answer
	Requests       int64            `json:"requests"`       // measured requests answered or failed
	Decisions      int64            `json:"decisions"`      // of them, answered OK or OVER_LIMIT
	ThroughputRPS  float64          `json:"throughput_rps"` // decisions per second
	Codes          map[string]int64 `json:"codes"`          // overall_code name -> count: OK, OVER_LIMIT, UNKNOWN
	Errors         map[string]int64 `json:"errors"`         // gRPC status code name -> count
	ErrorCount     int64            `json:"error_count"`    // failed calls plus UNKNOWN answers
	ErrorRate      float64          `json:"error_rate"`     // ErrorCount / Requests

	// Latency of the decisions: from the intended send time in the open
	// loop, from the actual send in the closed loop.
	Latency LatencySummary `json:"latency_ms"`
	// ServiceTime is from the actual send to the answer; in the closed
	// loop it equals Latency.
	ServiceTime LatencySummary `json:"service_time_ms"`
	// SchedulerLagMaxMS is the largest lateness of the open loop's
	// scheduler timer: the harness's own, not charged to Latency. 0 in the
	// closed loop.
	SchedulerLagMaxMS float64 `json:"scheduler_lag_max_ms"`

	Histogram []Bin   `json:"histogram"` // Latency's non-empty buckets, ascending
	Series    []Point `json:"series"`    // over time, by answer time

	Accuracy *Accuracy `json:"accuracy"` // null without -limit, and in the usage workload
	Usage    *Usage    `json:"usage"`    // the usage workload's figures; null in the admission one

	Targets []TargetResult `json:"targets"` // the targets checked, in flag order
	Pass    bool           `json:"pass"`    // every target held
	Failed  []string       `json:"failed"`  // the names of the targets that did not hold
}

// Config records what ran.
type Config struct {
	Addrs           []string `json:"addrs"`
	ConnsPerAddr    int      `json:"conns_per_addr"`
	Client          string   `json:"client"`      // grpc or lean
	Concurrency     int      `json:"concurrency"` // closed loop; 0 in the open loop
	Rate            float64  `json:"rate"`        // open loop, requests/s; 0 in the closed loop
	Arrival         string   `json:"arrival"`     // open loop; "" in the closed loop
	Workers         int      `json:"workers"`     // open loop; 0 in the closed loop
	DurationSeconds float64  `json:"duration_s"`  // measured phase length, or its cap when Requests is set; 0: none
	Requests        int64    `json:"requests"`    // measured phase length in requests; 0: DurationSeconds alone
	WarmupSeconds   float64  `json:"warmup_s"`
	TimeoutMS       float64  `json:"timeout_ms"`
	Domain          string   `json:"domain"`
	Keys            []string `json:"keys"` // one per descriptor
	Values          int      `json:"values"`
	ValuePrefix     string   `json:"value_prefix"`
	Dist            string   `json:"dist"`
	ZipfS           float64  `json:"zipf_s"` // 0 with the uniform distribution
	Hits            uint32   `json:"hits"`
	Workload        string   `json:"workload"` // admission or usage
	Cost            string   `json:"cost"`     // usage workload: MIN-MAX; "" otherwise
	Seed            uint64   `json:"seed"`
	Limit           string   `json:"limit"` // "" without -limit
}

// LatencySummary is a distribution in milliseconds.
type LatencySummary struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func summarize(h *Histogram) LatencySummary {
	return LatencySummary{
		Count: h.Count(), Min: ms(h.Min()), Mean: ms(h.Mean()),
		P50: ms(h.Percentile(50)), P90: ms(h.Percentile(90)), P99: ms(h.Percentile(99)),
		P999: ms(h.Percentile(99.9)), Max: ms(h.Max()),
	}
}

// Bin is one histogram bucket: Count latencies in [LoMS, HiMS].
type Bin struct {
	LoMS  float64 `json:"lo_ms"`
	HiMS  float64 `json:"hi_ms"`
	Count uint64  `json:"count"`
}

// Point is one interval of the measured phase, ending T seconds after its
// start.
type Point struct {
	T         float64 `json:"t_s"`
	OK        int64   `json:"ok"`
	OverLimit int64   `json:"over_limit"`
	Errors    int64   `json:"errors"`
	RPS       float64 `json:"rps"` // decisions per second in the interval
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
}

// TargetResult is one target's verdict.
type TargetResult struct {
	Name  string  `json:"name"`  // the flag: max-p99, max-error-rate, min-rps, max-over-admission
	Limit float64 `json:"limit"` // in the flag's unit (ms for max-p99)
	Value float64 `json:"value"` // the run's figure, same unit
	Pass  bool    `json:"pass"`
}

func (r *runner) report(ctx context.Context, started time.Time, series []Point) *Report {
	o := r.o
	rep := &Report{
		Schema: SchemaVersion, StartedAt: started.UTC(), Interrupted: ctx.Err() != nil,
		Mode: o.Mode(), Codes: map[string]int64{}, Errors: map[string]int64{},
		Histogram: []Bin{}, Series: series, Targets: []TargetResult{}, Failed: []string{},
	}
	if rep.Series == nil {
		rep.Series = []Point{}
	}
	rep.Config = Config{
		Addrs: o.Addrs, ConnsPerAddr: o.Conns, Client: o.Client, Requests: o.Requests,
		WarmupSeconds: o.Warmup.Seconds(), TimeoutMS: ms(o.Timeout),
		Domain: o.Domain, Keys: r.w.keys, Values: o.Values, ValuePrefix: r.prefix,
		Dist: o.Dist, Hits: o.Hits, Seed: r.seed, Workload: cmp.Or(o.Workload, WorkloadAdmission),
	}
	if o.Workload == WorkloadUsage {
		rep.Config.Cost = fmt.Sprintf("%d-%d", o.CostMin, o.CostMax)
	}
	rep.Config.DurationSeconds = max(o.Duration, 0).Seconds()
	if o.Dist == DistZipf {
		rep.Config.ZipfS = o.ZipfS
	}
	if o.Mode() == ModeOpen {
		rep.Config.Rate, rep.Config.Arrival, rep.Config.Workers = o.Rate, o.Arrival, o.Workers
		rep.SchedulerLagMaxMS = ms(time.Duration(max(r.lagMax.Load(), 0)))
	} else {
		rep.Config.Concurrency = o.Concurrency
	}
	if o.Limit != nil {
		rep.Config.Limit = o.Limit.String()
	}

	var lat, svc Histogram
	var last time.Duration
	for _, sh := range r.shards {
		sh.mu.Lock()
		lat.Merge(&sh.latency)
		svc.Merge(&sh.service)
		for k, v := range sh.codes {
			rep.Codes[k] += v
		}
		for k, v := range sh.errors {
			rep.Errors[k] += v
		}
		last = max(last, sh.lastRecv)
		sh.mu.Unlock()
	}
	for code, n := range rep.Codes {
		rep.Requests += n
		if code == "OK" || code == "OVER_LIMIT" {
			rep.Decisions += n
		} else {
			rep.ErrorCount += n
		}
	}
	for _, n := range rep.Errors {
		rep.Requests += n
		rep.ErrorCount += n
	}
	if rep.Requests > 0 {
		rep.ErrorRate = float64(rep.ErrorCount) / float64(rep.Requests)
		rep.ElapsedSeconds = (last - r.measureStart).Seconds()
	}
	if rep.ElapsedSeconds > 0 {
		rep.ThroughputRPS = float64(rep.Decisions) / rep.ElapsedSeconds
	}
	rep.Latency, rep.ServiceTime = summarize(&lat), summarize(&svc)
	for _, b := range lat.Bins() {
		rep.Histogram = append(rep.Histogram, Bin{LoMS: ms(b.Lo), HiMS: ms(b.Hi), Count: b.Count})
	}
	if r.tracker != nil {
		rep.Accuracy = computeAccuracy(*o.Limit, o.Hits, o.ClockSlack, r.tracker.samples(r.w))
	}
	if r.usage != nil {
		rep.Usage = computeUsage(o, r.usage)
	}
	rep.Targets, rep.Pass = checkTargets(o.Targets, rep)
	for _, t := range rep.Targets {
		if !t.Pass {
			rep.Failed = append(rep.Failed, t.Name)
		}
	}
	return rep
}

// checkTargets judges rep against t.
func checkTargets(t Targets, rep *Report) ([]TargetResult, bool) {
	out := []TargetResult{}
	pass := true
	add := func(name string, limit, value float64, ok bool) {
		out = append(out, TargetResult{Name: name, Limit: limit, Value: value, Pass: ok})
		pass = pass && ok
	}
	if t.MaxP99 > 0 {
		// No decision at all has no p99: that fails the target.
		add("max-p99", ms(t.MaxP99), rep.Latency.P99, rep.Latency.Count > 0 && rep.Latency.P99 <= ms(t.MaxP99))
	}
	if t.MaxErrorRate < 1 { // checked by default; 1 turns it off
		add("max-error-rate", t.MaxErrorRate, rep.ErrorRate, rep.Requests > 0 && rep.ErrorRate <= t.MaxErrorRate)
	}
	if t.MinRPS > 0 {
		add("min-rps", t.MinRPS, rep.ThroughputRPS, rep.ThroughputRPS >= t.MinRPS)
	}
	if t.MaxOverAdmission >= 0 {
		over := float64(-1)
		ok := false
		if rep.Accuracy != nil {
			over = float64(rep.Accuracy.OverAdmission)
			ok = rep.Accuracy.OverAdmission <= t.MaxOverAdmission && rep.Decisions > 0
		}
		add("max-over-admission", float64(t.MaxOverAdmission), over, ok)
	}
	if u := rep.Usage; u != nil {
		add("usage-max", u.AllowanceTokens+u.BoundTokens, float64(u.UsedTokens), u.WithinBound)
		add("usage-min", usageMinFraction*u.AllowanceTokens, float64(u.UsedTokens), u.UsesAllowance)
	}
	return out, pass
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the human-readable summary.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	c := rep.Config
	conns := fmt.Sprintf("%s (%d connection(s) each, %s client)", strings.Join(c.Addrs, ", "), c.ConnsPerAddr, cmp.Or(c.Client, ClientGRPC))
	if rep.Mode == ModeOpen {
		fmt.Fprintf(&b, "mode:        open loop, %g req/s %s arrivals, at most %d in flight -> %s\n",
			c.Rate, c.Arrival, c.Workers, conns)
	} else {
		fmt.Fprintf(&b, "mode:        closed loop, %d concurrent -> %s\n", c.Concurrency, conns)
	}
	dist := c.Dist
	if c.Dist == DistZipf {
		dist = fmt.Sprintf("zipf s=%g", c.ZipfS)
	}
	if c.Workload == WorkloadUsage {
		fmt.Fprintf(&b, "workload:    usage: domain %q, descriptor %s, %d values (%s, prefix %q); check (hits 0), then report a cost %s\n",
			c.Domain, strings.Join(c.Keys, ","), c.Values, dist, c.ValuePrefix, c.Cost)
	} else {
		fmt.Fprintf(&b, "workload:    domain %q, descriptors %s, %d values each (%s, prefix %q), hits %d\n",
			c.Domain, strings.Join(c.Keys, ","), c.Values, dist, c.ValuePrefix, c.Hits)
	}
	length := fmt.Sprintf("%gs", c.DurationSeconds)
	if c.Requests > 0 {
		length = fmt.Sprintf("%d requests", c.Requests)
		if c.DurationSeconds > 0 {
			length += fmt.Sprintf(" or %gs", c.DurationSeconds)
		}
	}
	fmt.Fprintf(&b, "measured:    %.2fs (%s after %gs warmup): %d requests, %.1f decisions/s\n",
		rep.ElapsedSeconds, length, c.WarmupSeconds, rep.Requests, rep.ThroughputRPS)
	if rep.Interrupted {
		b.WriteString("             interrupted: the figures cover the run until it was stopped\n")
	}
	fmt.Fprintf(&b, "codes:       %s\n", countList(rep.Codes))
	fmt.Fprintf(&b, "errors:      %d (%.3f%%)", rep.ErrorCount, 100*rep.ErrorRate)
	if len(rep.Errors) > 0 {
		fmt.Fprintf(&b, ": %s", countList(rep.Errors))
	}
	b.WriteString("\n")
	from := "from send"
	if rep.Mode == ModeOpen {
		from = "from intended send time"
	}
	fmt.Fprintf(&b, "latency:     %s (%s)\n", latencyLine(rep.Latency), from)
	if rep.Mode == ModeOpen {
		fmt.Fprintf(&b, "service:     %s (from actual send)\n", latencyLine(rep.ServiceTime))
		fmt.Fprintf(&b, "             scheduler timer late by at most %.3fms (not charged)\n", rep.SchedulerLagMaxMS)
	}
	if a := rep.Accuracy; a != nil {
		fmt.Fprintf(&b, "accuracy:    limit %s (%.4g tokens/s): %d buckets, %d of %d tokens admitted, allowance %.1f\n",
			a.Limit, a.RatePerSecond, a.Buckets, a.AdmittedTokens, a.OfferedTokens, a.AllowanceTokens)
		fmt.Fprintf(&b, "             over-admission %d tokens in %d buckets; under-admission %d tokens in %d buckets\n",
			a.OverAdmission, a.OverBuckets, a.UnderAdmission, a.UnderBuckets)
		for _, w := range a.Worst {
			fmt.Fprintf(&b, "             %s=%s: admitted %d of %d in %.3fs, allowance %.1f (narrow %.1f), over %d, under %d\n",
				w.Key, w.Value, w.AdmittedTokens, w.OfferedTokens, w.SpanSeconds, w.Allowance, w.NarrowAllowance, w.Over, w.Under)
		}
	}
	if u := rep.Usage; u != nil {
		fmt.Fprintf(&b, "usage:       budget %s (%.4g tokens/s), %d streams, cost %d-%d: %d checks (%d OK), %d reports (%d OK), %d reports failed\n",
			u.Limit, u.RatePerSecond, u.Streams, u.CostMin, u.CostMax, u.Checks, u.ChecksOK, u.Reports, u.ReportsOK, u.ReportErrors)
		fmt.Fprintf(&b, "             used %d tokens = %.3f x allowance %.1f (%d buckets); bound: allowance + %d x %d = %.1f\n",
			u.UsedTokens, u.UsedFraction, u.AllowanceTokens, u.Buckets, u.Streams, u.CostMax, u.AllowanceTokens+u.BoundTokens)
	}
	for _, t := range rep.Targets {
		verdict := "PASS"
		if !t.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "target:      %-20s %s: %s (limit %s)\n", t.Name, verdict, targetValue(t.Name, t.Value), targetValue(t.Name, t.Limit))
	}
	if rep.Pass {
		b.WriteString("result:      PASS\n")
	} else {
		fmt.Fprintf(&b, "result:      FAIL (%s)\n", strings.Join(rep.Failed, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func targetValue(name string, v float64) string {
	switch name {
	case "max-p99":
		return fmt.Sprintf("p99 %.3fms", v)
	case "max-error-rate":
		return fmt.Sprintf("error rate %.4f", v)
	case "min-rps":
		return fmt.Sprintf("%.1f decisions/s", v)
	case "usage-max", "usage-min":
		return fmt.Sprintf("%.0f tokens used", v)
	default:
		return fmt.Sprintf("%.0f tokens over", v)
	}
}

func latencyLine(l LatencySummary) string {
	if l.Count == 0 {
		return "no decisions"
	}
	return fmt.Sprintf("p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms  mean %.3fms",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
}

func countList(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
