package metrics

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/limiter"
)

// codeCounters are the series of one descriptor label: [0] ok, [1]
// over_limit.
type codeCounters [2]prometheus.Counter

func (m *Metrics) codeCounters(domain, descriptor string, shadow bool) codeCounters {
	s := "false"
	if shadow {
		s = "true"
	}
	return codeCounters{
		m.decisions.WithLabelValues(domain, descriptor, "ok", s),
		m.decisions.WithLabelValues(domain, descriptor, "over_limit", s),
	}
}

// lazyCounter is a series made on its first use, for counters that most
// rules never need (usage tokens cut by the debt floor).
type lazyCounter struct {
	once sync.Once
	c    prometheus.Counter
}

func (l *lazyCounter) add(vec *prometheus.CounterVec, v float64, labels ...string) {
	l.once.Do(func() { l.c = vec.WithLabelValues(labels...) })
	l.c.Add(v)
}

// ruleMetrics are one rule's series, resolved on its first decision.
type ruleMetrics struct {
	plain  codeCounters
	cut    lazyCounter
	domain string
	rule   *limiter.Rule
	// detailed rules label decisions with request values (their metric
	// key takes some), up to the cap.
	detailed bool
	mu       sync.Mutex
	values   map[string]codeCounters
}

// domainMetrics are the series of one domain's descriptors without a rule.
type domainMetrics struct {
	domain     string
	noLimit    codeCounters
	request    [2]codeCounters // by shadow
	requestCut lazyCounter
}

func (m *Metrics) newDomainMetrics(domain string) *domainMetrics {
	return &domainMetrics{
		domain:  domain,
		noLimit: m.codeCounters(domain, NoLimit, false),
		request: [2]codeCounters{m.codeCounters(domain, RequestLimit, false), m.codeCounters(domain, RequestLimit, true)},
	}
}

// decisionCache maps the rules and domains of one set of limits to their
// series. It is replaced when the limits are, so rules of old limits do
// not pin memory; the series themselves stay registered.
type decisionCache struct {
	limits  *limiter.Limits
	rules   sync.Map // *limiter.Rule -> *ruleMetrics
	domains atomic.Pointer[map[string]*domainMetrics]
}

func (c *decisionCache) loadDomains() map[string]*domainMetrics {
	if p := c.domains.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *decisionCache) storeDomains(d map[string]*domainMetrics) { c.domains.Store(&d) }

// current returns the cache for lims, replacing an older one.
func (m *Metrics) current(lims *limiter.Limits) *decisionCache {
	c := m.cache.Load()
	if c.limits == lims {
		return c
	}
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	if c = m.cache.Load(); c.limits != lims {
		c = &decisionCache{limits: lims}
		m.cache.Store(c)
	}
	return c
}

func (m *Metrics) ruleMetrics(c *decisionCache, domain string, r *limiter.Rule) *ruleMetrics {
	if v, ok := c.rules.Load(r); ok {
		return v.(*ruleMetrics)
	}
	rm := &ruleMetrics{domain: domain, rule: r}
	label := r.Path
	if r.MetricKey != nil {
		// A key without request values is as bounded as the limits
		// themselves: it is the rule's plain label, outside the cap.
		if s, ok := r.MetricKey.Static(); ok {
			label = cutLabel([]byte(s))
		} else {
			rm.detailed = true
		}
	}
	rm.plain = m.codeCounters(domain, label, r.Shadow)
	v, _ := c.rules.LoadOrStore(r, rm)
	return v.(*ruleMetrics)
}

func (m *Metrics) domainMetrics(c *decisionCache, domain string) *domainMetrics {
	if c.limits == nil || !c.limits.HasDomain(domain) {
		return m.unknown
	}
	// Reads copy nothing: the map is replaced, never changed, once
	// published. Domains are few, so copying on a miss is cheap.
	if dm := c.loadDomains()[domain]; dm != nil {
		return dm
	}
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	old := c.loadDomains()
	if dm := old[domain]; dm != nil {
		return dm
	}
	next := make(map[string]*domainMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	dm := m.newDomainMetrics(domain)
	next[domain] = dm
	c.storeDomains(next)
	return dm
}

// ObserveDecision counts a decided request: one decision per descriptor
// status, and its latency. lims are the limits it was decided with (for
// telling configured domains from unknown ones).
func (m *Metrics) ObserveDecision(lims *limiter.Limits, req *limiter.Request, resp *limiter.Response, took time.Duration) {
	if m == nil {
		return
	}
	m.decisionDur.Observe(took.Seconds())
	c := m.current(lims)
	var dm *domainMetrics
	for i := range resp.Statuses {
		st := &resp.Statuses[i]
		code := 0
		if st.Code == limiter.OverLimit || st.ShadowDenied {
			code = 1
		}
		if st.Rule != nil {
			rm := m.ruleMetrics(c, req.Domain, st.Rule)
			if st.Cut > 0 {
				// Under the rule's plain label, never request values.
				rm.cut.add(m.usageCut, float64(st.Cut), req.Domain, st.Rule.Path)
			}
			if rm.detailed && i < len(req.Descriptors) {
				m.detailedCounters(rm, req.Descriptors[i].Entries)[code].Inc()
				continue
			}
			rm.plain[code].Inc()
			continue
		}
		if dm == nil {
			dm = m.domainMetrics(c, req.Domain)
		}
		if st.Limit != nil {
			if st.Cut > 0 {
				dm.requestCut.add(m.usageCut, float64(st.Cut), dm.domain, RequestLimit)
			}
			s := 0
			if st.Shadow {
				s = 1
			}
			dm.request[s][code].Inc()
			continue
		}
		dm.noLimit[code].Inc()
	}
}

// maxDetailedLabel bounds the length of a descriptor label with values.
const maxDetailedLabel = 200

// cutLabel returns b cut at maxDetailedLabel bytes, as valid UTF-8 (a cut
// may split a character).
func cutLabel(b []byte) string {
	if len(b) > maxDetailedLabel {
		b = b[:maxDetailedLabel]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// detailedCounters returns the series of a detailed rule for the request
// values in entries, labelled with the rule's metric key (envoyproxy/
// ratelimit's stats key without the domain: "tenant_acme.plan_free" for
// detailed_metric). Labels are cut at maxDetailedLabel bytes. Past the cap
// on detailed series, the rule's plain series.
func (m *Metrics) detailedCounters(rm *ruleMetrics, entries []limiter.Entry) codeCounters {
	var arr [256]byte
	b := rm.rule.MetricKey.Append(arr[:0], entries)
	if len(b) > maxDetailedLabel {
		b = b[:maxDetailedLabel]
	}
	rm.mu.Lock()
	cc, ok := rm.values[string(b)]
	rm.mu.Unlock()
	if ok {
		return cc
	}
	raw := string(b)
	label := cutLabel(b)
	key := rm.domain + "\x00" + label
	m.detailedMu.Lock()
	_, seen := m.detailedSeen[key]
	if !seen && len(m.detailedSeen) >= m.maxDetailed {
		m.detailedMu.Unlock()
		return rm.plain
	}
	m.detailedSeen[key] = struct{}{}
	m.detailedMu.Unlock()
	cc = m.codeCounters(rm.domain, label, rm.rule.Shadow)
	rm.mu.Lock()
	if rm.values == nil {
		rm.values = map[string]codeCounters{}
	}
	rm.values[raw] = cc
	rm.mu.Unlock()
	return cc
}
