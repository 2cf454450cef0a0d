package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/limiter"
)

// Store wraps a limiter.Store so each call counts in
// sluice_store_requests_total{store=name} by result (allowed, denied,
// error) and its time in sluice_store_duration_seconds. On a nil
// *Metrics it returns s unchanged.
func (m *Metrics) Store(name string, s limiter.Store) limiter.Store {
	if m == nil {
		return s
	}
	return &store{
		Store:   s,
		allowed: m.storeReqs.WithLabelValues(name, "allowed"),
		denied:  m.storeReqs.WithLabelValues(name, "denied"),
		failed:  m.storeReqs.WithLabelValues(name, "error"),
		dur:     m.storeDur.WithLabelValues(name),
	}
}

type store struct {
	limiter.Store
	allowed, denied, failed prometheus.Counter
	dur                     prometheus.Observer
}

func (s *store) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	start := time.Now()
	ok, err := s.Store.Apply(ctx, reqs, res)
	s.dur.Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		s.failed.Inc()
	case ok:
		s.allowed.Inc()
	default:
		s.denied.Inc()
	}
	return ok, err
}

// ObserveBatchSize records the script calls written in one Redis pipeline;
// its signature fits redis.WithBatchObserver.
func (m *Metrics) ObserveBatchSize(calls int) {
	if m == nil {
		return
	}
	m.batchSize.Observe(float64(calls))
}

// SetLocalCacheHits makes sluice_local_cache_hits_total report fn(), the
// deny cache's own running count, read at scrape time.
func (m *Metrics) SetLocalCacheHits(fn func() uint64) {
	if m == nil {
		return
	}
	if fn == nil {
		m.cacheHits.Store(nil)
		return
	}
	m.cacheHits.Store(&fn)
}

// FailureModeDecision counts a store call answered by the failure mode;
// its signature fits limiter.FailoverConfig.OnFailover.
func (m *Metrics) FailureModeDecision(mode limiter.FailureMode, _ error) {
	if m == nil {
		return
	}
	if int(mode) < len(m.failureBy) {
		m.failureBy[mode].Inc()
		return
	}
	m.failure.WithLabelValues(mode.String()).Inc()
}

// MemoryStats is what the embedded memory store reports, read at scrape
// time (memory.Store.Stats, converted by the caller: this package does not
// import the store).
type MemoryStats struct {
	Buckets     int     // buckets held
	Evictions   uint64  // buckets dropped to make room for others
	EvictedDebt float64 // tokens those buckets owed when dropped
}

// memoryCollector reads the memory stores' stats at scrape time.
type memoryCollector struct {
	buckets, evictions, debt *prometheus.Desc

	mu     sync.Mutex
	stores []memoryStore
}

type memoryStore struct {
	name  string
	stats func() MemoryStats
}

func newMemoryCollector() *memoryCollector {
	return &memoryCollector{
		buckets: prometheus.NewDesc("sluice_memory_buckets",
			"Buckets the embedded memory store holds (full ones not yet swept included).", []string{"store"}, nil),
		evictions: prometheus.NewDesc("sluice_memory_evictions_total",
			"Buckets the memory store evicted at its bound (memory.max_buckets) to make room for others.", []string{"store"}, nil),
		debt: prometheus.NewDesc("sluice_memory_evicted_debt_tokens_total",
			"Tokens the evicted buckets owed: an evicted bucket comes back full, so at most this many were admitted beyond the limits because of the bound.", []string{"store"}, nil),
	}
}

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.buckets
	ch <- c.evictions
	ch <- c.debt
}

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ss := append([]memoryStore(nil), c.stores...)
	c.mu.Unlock()
	for _, s := range ss {
		st := s.stats()
		ch <- prometheus.MustNewConstMetric(c.buckets, prometheus.GaugeValue, float64(st.Buckets), s.name)
		ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(st.Evictions), s.name)
		ch <- prometheus.MustNewConstMetric(c.debt, prometheus.CounterValue, st.EvictedDebt, s.name)
	}
}

// WatchMemoryStore exports a memory store's bucket count, evictions and
// forgotten debt as sluice_memory_*{store=name}, calling stats at each
// scrape.
func (m *Metrics) WatchMemoryStore(name string, stats func() MemoryStats) {
	if m == nil || stats == nil {
		return
	}
	m.memory.mu.Lock()
	defer m.memory.mu.Unlock()
	m.memory.stores = append(m.memory.stores, memoryStore{name: name, stats: stats})
}

// unrecordedCollector reads a failure mode's counts of usage reports that
// Redis never recorded, at scrape time.
type unrecordedCollector struct {
	desc *prometheus.Desc

	mu     sync.Mutex
	mode   limiter.FailureMode
	counts func() limiter.FailoverCounts
}

func newUnrecordedCollector() *unrecordedCollector {
	return &unrecordedCollector{desc: prometheus.NewDesc("sluice_usage_unrecorded_tokens_total",
		"Tokens of usage reports (charge: usage) that Redis never recorded because it failed or its breaker was open, by the failure mode that answered: allow and error record them nowhere; local charges them to the replica's local store only, never reconciled with Redis.",
		[]string{"mode"}, nil)}
}

func (c *unrecordedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *unrecordedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	mode, counts := c.mode, c.counts
	c.mu.Unlock()
	if counts == nil {
		return
	}
	n := counts()
	for _, m := range []limiter.FailureMode{limiter.FailLocal, limiter.FailAllow, limiter.FailError} {
		var v uint64
		switch m {
		case limiter.FailLocal:
			v = n.LocalUsage
		case mode:
			v = n.LostUsage
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), m.String())
	}
}

// WatchFailover exports the usage reports the failure mode could not
// record in Redis as sluice_usage_unrecorded_tokens_total{mode}, reading
// counts (limiter.Failover.Counts) at each scrape. mode is the failure
// mode in force: the tokens LostUsage counts are that mode's.
func (m *Metrics) WatchFailover(mode limiter.FailureMode, counts func() limiter.FailoverCounts) {
	if m == nil {
		return
	}
	m.unrecorded.mu.Lock()
	defer m.unrecorded.mu.Unlock()
	m.unrecorded.mode, m.unrecorded.counts = mode, counts
}

// RefundStats is what a Redis store in Cluster mode reports of its
// refunds across hash slots, read at scrape time (redis.Store.RefundStats,
// converted by the caller).
type RefundStats struct {
	Calls   uint64 // requests denied across slots whose taken groups were refunded
	Retried uint64 // refunds handed to the background retries
	Failed  uint64 // refunds that never succeeded: tokens back by refill only
	Dropped uint64 // refunds dropped with the retry queue full: likewise
}

// refundCollector reads a Redis store's refund counts at scrape time.
type refundCollector struct {
	calls, background *prometheus.Desc
	stats             atomic.Pointer[func() RefundStats]
}

func newRefundCollector() *refundCollector {
	return &refundCollector{
		calls: prometheus.NewDesc("sluice_redis_refunded_requests_total",
			"Requests denied across Redis Cluster hash slots whose slot groups that had taken were refunded.", nil, nil),
		background: prometheus.NewDesc("sluice_redis_refunds_background_total",
			"Refunds across slots not done before the answer: retried in the background (retried), given up when their record expired or on shutdown (failed), or dropped with the retry queue full (dropped); failed and dropped ones come back by refill only (under-admission).",
			[]string{"result"}, nil),
	}
}

func (c *refundCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.background
}

func (c *refundCollector) Collect(ch chan<- prometheus.Metric) {
	fn := c.stats.Load()
	if fn == nil {
		return
	}
	st := (*fn)()
	ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(st.Calls))
	ch <- prometheus.MustNewConstMetric(c.background, prometheus.CounterValue, float64(st.Retried), "retried")
	ch <- prometheus.MustNewConstMetric(c.background, prometheus.CounterValue, float64(st.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(c.background, prometheus.CounterValue, float64(st.Dropped), "dropped")
}

// WatchRefunds exports a Redis store's refunds across Cluster slots as
// sluice_redis_refunded_requests_total and
// sluice_redis_refunds_background_total{result}, calling stats at each
// scrape. Nothing is exported until it is called.
func (m *Metrics) WatchRefunds(stats func() RefundStats) {
	if m == nil || stats == nil {
		return
	}
	m.refunds.stats.Store(&stats)
}
