package metrics

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/breaker"
)

// breakerCollector reads the breakers' state and rejection counts at
// scrape time.
type breakerCollector struct {
	state, rejections *prometheus.Desc

	mu       sync.Mutex
	breakers []*breaker.Breaker
}

func newBreakerCollector() *breakerCollector {
	return &breakerCollector{
		state: prometheus.NewDesc("sluice_breaker_state",
			"Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"breaker"}, nil),
		rejections: prometheus.NewDesc("sluice_breaker_rejections_total",
			"Calls refused by the circuit breaker without being tried.", []string{"breaker"}, nil),
	}
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.rejections
}

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	bs := append([]*breaker.Breaker(nil), c.breakers...)
	c.mu.Unlock()
	for _, b := range bs {
		s := b.Snapshot()
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(s.State), b.Name())
		ch <- prometheus.MustNewConstMetric(c.rejections, prometheus.CounterValue, float64(s.Rejections), b.Name())
	}
}

// WatchBreaker exports b's state and rejections, labelled with its name.
func (m *Metrics) WatchBreaker(b *breaker.Breaker) {
	if m == nil || b == nil {
		return
	}
	m.breakers.mu.Lock()
	defer m.breakers.mu.Unlock()
	m.breakers.breakers = append(m.breakers.breakers, b)
}

// BreakerTransition counts a breaker's state change; its signature fits
// breaker.Config.OnStateChange.
func (m *Metrics) BreakerTransition(name string, from, to breaker.State) {
	if m == nil {
		return
	}
	m.transition.WithLabelValues(name, from.String(), to.String()).Inc()
}

// BackendCheck records one background health check of a backend.
func (m *Metrics) BackendCheck(backend string, err error, took time.Duration) {
	if m == nil {
		return
	}
	up := 1.0
	if err != nil {
		up = 0
	}
	m.backendUp.WithLabelValues(backend).Set(up)
	m.backendCheck.WithLabelValues(backend).Observe(took.Seconds())
}

// ConfigReload counts a reload of the limits: err nil for success.
func (m *Metrics) ConfigReload(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloadFailed.Inc()
		m.lastReload.Set(0)
		return
	}
	m.reloadOK.Inc()
	m.lastReload.Set(1)
}

// LimitsInfo shows the limits in force as the one series of
// sluice_limits_info: where they come from, the xDS version_info and
// their digest ("sha256:..." or the bare hex).
func (m *Metrics) LimitsInfo(source, xdsVersion, digest string) {
	if m == nil {
		return
	}
	m.limitsMu.Lock()
	defer m.limitsMu.Unlock()
	m.limitsInfo.Reset()
	m.limitsInfo.WithLabelValues(source, xdsVersion, strings.TrimPrefix(digest, "sha256:")).Set(1)
}

// SetOverrides makes sluice_overrides report fn(), read at scrape time.
func (m *Metrics) SetOverrides(fn func() int) {
	if m == nil {
		return
	}
	if fn == nil {
		m.overrides.Store(nil)
		return
	}
	m.overrides.Store(&fn)
}
