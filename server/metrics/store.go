package metrics

import (
	"context"
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
