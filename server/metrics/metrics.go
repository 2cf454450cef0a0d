package metrics

import (
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-rl/sluice/limiter"
)

// Options configure New.
type Options struct {
	// Version and Revision label sluice_build_info.
	Version, Revision string
	// MaxDetailedSeries caps the decision series that carry request
	// values (rules whose metric key takes one: detailed_metric or
	// value_to_metric), over all rules and reloads; past it, such
	// decisions count under the rule's plain label. 0 means
	// DefaultMaxDetailedSeries.
	MaxDetailedSeries int
	// Logger receives errors of the /metrics handler; nil discards them.
	Logger *slog.Logger
}

// DefaultMaxDetailedSeries is the default of Options.MaxDetailedSeries.
const DefaultMaxDetailedSeries = 1000

// Label values with a fixed meaning.
const (
	// UnknownDomain is the domain label of decisions in a domain the
	// limits do not define, so callers cannot create series at will.
	UnknownDomain = "_unknown"
	// NoLimit is the descriptor label of descriptors that matched no limit
	// (or whose limit another replaced).
	NoLimit = "_no_limit"
	// RequestLimit is the descriptor label of descriptors decided by the
	// limit the request carried (RateLimitDescriptor.limit).
	RequestLimit = "_request_limit"
)

// Metrics is every Sluice metric, registered on one registry.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	decisions   *prometheus.CounterVec
	decisionDur prometheus.Histogram
	usageCut    *prometheus.CounterVec
	unrecorded  *unrecordedCollector
	cache       atomic.Pointer[decisionCache]
	cacheMu     sync.Mutex // serialises cache misses
	unknown     *domainMetrics

	detailedMu   sync.Mutex
	detailedSeen map[string]struct{}
	maxDetailed  int

	storeReqs  *prometheus.CounterVec
	storeDur   *prometheus.HistogramVec
	batchSize  prometheus.Histogram
	cacheHits  atomic.Pointer[func() uint64]
	failure    *prometheus.CounterVec
	failureBy  [3]prometheus.Counter // by limiter.FailureMode
	memory     *memoryCollector
	refunds    *refundCollector
	breakers   *breakerCollector
	transition *prometheus.CounterVec

	backendUp    *prometheus.GaugeVec
	backendCheck *prometheus.HistogramVec

	reloads      *prometheus.CounterVec
	reloadOK     prometheus.Counter
	reloadFailed prometheus.Counter
	lastReload   prometheus.Gauge
	limitsInfo   *prometheus.GaugeVec
	limitsMu     sync.Mutex // serialises LimitsInfo's reset and set
	overrides    atomic.Pointer[func() int]

	grpcHandled *prometheus.CounterVec
	grpcDur     *prometheus.HistogramVec
	methods     atomic.Pointer[map[string]*methodMetrics]
}

// latencyBuckets are the classic buckets of the latency histograms, 50µs
// to 2.5s; native histograms are exported alongside them.
var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

func latencyOpts(name, help string) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Name:                            name,
		Help:                            help,
		Buckets:                         latencyBuckets,
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	}
}

// New makes the metrics and registers them, with the Go runtime and
// process collectors, on reg.
func New(reg *prometheus.Registry, opts Options) *Metrics {
	m := &Metrics{
		reg:          reg,
		log:          opts.Logger,
		detailedSeen: map[string]struct{}{},
		maxDetailed:  opts.MaxDetailedSeries,
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.maxDetailed <= 0 {
		m.maxDetailed = DefaultMaxDetailedSeries
	}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_decisions_total",
		Help: "Descriptor decisions, by domain, matched rule (its name or key path), code (ok, over_limit) and shadow mode. A shadow-mode rule that would have denied counts as over_limit with shadow=\"true\".",
	}, []string{"domain", "descriptor", "code", "shadow"})
	m.usageCut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_usage_cut_tokens_total",
		Help: "Tokens of usage reports (charge: usage) that a limit's debt floor (max_debt) cut off rather than charged, by domain and rule (as in sluice_decisions_total, without request values).",
	}, []string{"domain", "descriptor"})
	m.unrecorded = newUnrecordedCollector()
	m.decisionDur = prometheus.NewHistogram(latencyOpts("sluice_decision_duration_seconds",
		"Time to decide one rate-limit request (gRPC ShouldRateLimit or HTTP /json), store included."))
	m.storeReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_store_requests_total",
		Help: "Store calls (one per decided request), by store and result (allowed, denied, error).",
	}, []string{"store", "result"})
	m.storeDur = prometheus.NewHistogramVec(latencyOpts("sluice_store_duration_seconds",
		"Time of one store call."), []string{"store"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_store_batch_size",
		Help:    "Script calls written to Redis in one pipeline.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
	})
	cacheHits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_local_cache_hits_total",
		Help: "Calls answered OVER_LIMIT by the local deny cache, without Redis.",
	}, func() float64 {
		if fn := m.cacheHits.Load(); fn != nil {
			return float64((*fn)())
		}
		return 0
	})
	m.failure = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_failure_mode_decisions_total",
		Help: "Store calls answered by the failure mode (local, allow, error) because Redis failed or its breaker was open.",
	}, []string{"mode"})
	for _, mode := range []limiter.FailureMode{limiter.FailLocal, limiter.FailAllow, limiter.FailError} {
		m.failureBy[mode] = m.failure.WithLabelValues(mode.String())
	}
	m.memory = newMemoryCollector()
	m.refunds = newRefundCollector()
	m.breakers = newBreakerCollector()
	m.transition = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_breaker_transitions_total",
		Help: "Circuit breaker state changes, by breaker, from and to state.",
	}, []string{"breaker", "from", "to"})
	m.backendUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_backend_up",
		Help: "1 when the backend's last background health check passed, else 0.",
	}, []string{"backend"})
	m.backendCheck = prometheus.NewHistogramVec(latencyOpts("sluice_backend_check_duration_seconds",
		"Time of a background backend health check."), []string{"backend"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_config_reloads_total",
		Help: "Limit reloads (SIGHUP, file change, admin, a config pushed over xDS), by result (success, failure). A failed reload (or a NACKed xDS config) keeps the running limits.",
	}, []string{"result"})
	m.reloadOK = m.reloads.WithLabelValues("success")
	m.reloadFailed = m.reloads.WithLabelValues("failure")
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_config_last_reload_successful",
		Help: "1 when the last limit reload (or the initial load) succeeded, 0 when it failed.",
	})
	m.lastReload.Set(1)
	m.limitsInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_limits_info",
		Help: "Always 1, one series: the limits in force. source is file, xds or file+xds; version the xDS version_info (\"\" for files alone); sha256 the digest of the effective limits (overrides merged), as /health/detailed's config.version.",
	}, []string{"source", "version", "sha256"})
	overrides := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_overrides",
		Help: "Dynamic overrides loaded from Postgres.",
	}, func() float64 {
		if fn := m.overrides.Load(); fn != nil {
			return float64((*fn)())
		}
		return 0
	})
	m.grpcHandled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_grpc_server_handled_total",
		Help: "gRPC calls completed on the server, by full method name and status code.",
	}, []string{"method", "code"})
	m.grpcDur = prometheus.NewHistogramVec(latencyOpts("sluice_grpc_server_handling_seconds",
		"Time to handle a gRPC call (for streams, their lifetime)."), []string{"method"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_build_info",
		Help: "Always 1; labels name the build.",
	}, []string{"version", "revision", "goversion"})
	buildInfo.WithLabelValues(orUnknown(opts.Version), orUnknown(opts.Revision), runtime.Version()).Set(1)

	m.unknown = m.newDomainMetrics(UnknownDomain)
	m.cache.Store(&decisionCache{})
	m.methods.Store(&map[string]*methodMetrics{})

	reg.MustRegister(
		m.decisions, m.decisionDur, m.usageCut, m.unrecorded, m.storeReqs, m.storeDur, m.batchSize, cacheHits,
		m.failure, m.memory, m.refunds, m.breakers, m.transition, m.backendUp, m.backendCheck,
		m.reloads, m.lastReload, m.limitsInfo, overrides, m.grpcHandled, m.grpcDur, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Registry is the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format, or the
// protobuf format (with native histograms) or OpenMetrics when the scraper
// asks for them.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:          slogAdapter{m.log},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          m.reg,
		EnableOpenMetrics: true,
	})
}

type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Println(v ...any) { a.log.Warn("metrics", "err", v) }
