package metrics_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/metrics"
	"github.com/sluice-rl/sluice/server/metrics/metricstest"
)

const limitsYAML = `
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_client}
  - key: path
    value: /login
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: tenant
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: plan
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 100}
`

func newLimiter(t testing.TB, m *metrics.Metrics) (*limiter.Limiter, *limiter.Limits) {
	t.Helper()
	dc, err := limiter.ParseLimitFile("edge.yaml", []byte(limitsYAML))
	if err != nil {
		t.Fatal(err)
	}
	lims, err := limiter.Compile([]limiter.DomainConfig{dc}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(m.Store("memory", memory.New(nil)), limiter.Config{})
	lim.SetLimits(lims)
	return lim, lims
}

func request(domain string, kvs ...string) *limiter.Request {
	req := &limiter.Request{Domain: domain}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		req.Descriptors = append(req.Descriptors, limiter.Descriptor{Entries: []limiter.Entry{{Key: k, Value: v}}})
	}
	return req
}

func decide(t testing.TB, m *metrics.Metrics, lim *limiter.Limiter, req *limiter.Request) limiter.Code {
	t.Helper()
	var resp limiter.Response
	if err := lim.Decide(context.Background(), req, &resp); err != nil {
		t.Fatal(err)
	}
	m.ObserveDecision(lim.Limits(), req, &resp, time.Millisecond)
	return resp.Code
}

func TestDecisionCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{Version: "v1", Revision: "abc"})
	lim, _ := newLimiter(t, m)

	// per_client allows 2 a minute: OK, OK, OVER_LIMIT, from one address.
	for range 3 {
		decide(t, m, lim, request("edge", "remote_address=10.0.0.1"))
	}
	// A second address has its own bucket: one OK.
	decide(t, m, lim, request("edge", "remote_address=10.0.0.2"))
	// The shadow /login limit (1 a minute) would deny the second: counted
	// over_limit with shadow="true", yet the answer is OK.
	decide(t, m, lim, request("edge", "path=/login"))
	if got := decide(t, m, lim, request("edge", "path=/login")); got != limiter.OK {
		t.Fatalf("shadow denial answered %v", got)
	}
	// No limit for this path, and an unknown domain.
	decide(t, m, lim, request("edge", "path=/other"))
	decide(t, m, lim, request("nope", "remote_address=10.0.0.1"))
	decide(t, m, lim, request("nope2", "remote_address=10.0.0.1"))
	// A detailed rule labels with values; value_to_metric with the last.
	decide(t, m, lim, request("edge", "tenant=acme"))
	decide(t, m, lim, request("edge", "tenant=acme"))
	decide(t, m, lim, request("edge", "plan=free"))
	// A request-side limit.
	req := request("edge", "remote_address=10.0.0.3")
	req.Descriptors[0].Override = &limiter.RateLimit{RequestsPerUnit: 5, Unit: limiter.Second}
	decide(t, m, lim, req)

	f := metricstest.Gather(t, reg)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"domain=edge", "descriptor=per_client", "code=ok", "shadow=false"}, 3},
		{[]string{"domain=edge", "descriptor=per_client", "code=over_limit", "shadow=false"}, 1},
		{[]string{"domain=edge", "descriptor=path", "code=ok", "shadow=true"}, 1},
		{[]string{"domain=edge", "descriptor=path", "code=over_limit", "shadow=true"}, 1},
		{[]string{"domain=edge", "descriptor=_no_limit", "code=ok", "shadow=false"}, 1},
		{[]string{"domain=_unknown", "descriptor=_no_limit", "code=ok"}, 2},
		{[]string{"domain=edge", "descriptor=tenant_acme", "code=ok"}, 1},
		{[]string{"domain=edge", "descriptor=tenant_acme", "code=over_limit"}, 1},
		{[]string{"domain=edge", "descriptor=plan_free", "code=ok"}, 1},
		{[]string{"domain=edge", "descriptor=_request_limit", "code=ok", "shadow=false"}, 1},
	} {
		if got := f.Value(t, "sluice_decisions_total", c.labels...); got != c.want {
			t.Errorf("sluice_decisions_total{%s} = %v, want %v", strings.Join(c.labels, ","), got, c.want)
		}
	}
	// 13 requests of one descriptor each.
	if got := f.Sum(t, "sluice_decisions_total"); got != 13 {
		t.Errorf("decisions in all: %v, want 13; series %v", got, f.Series("sluice_decisions_total"))
	}
	// Raw values of rules without detailed metrics never become labels.
	for _, s := range f.Series("sluice_decisions_total") {
		if strings.Contains(s, "10.0.0") || strings.Contains(s, "nope") || strings.Contains(s, "/login") {
			t.Errorf("series %s carries a request value", s)
		}
	}
	if got := f.Value(t, "sluice_decision_duration_seconds"); got != 13 {
		t.Errorf("decision latency observations %v, want 13", got)
	}
	if got := f.Value(t, "sluice_store_requests_total", "store=memory", "result=denied"); got != 1+1 {
		t.Errorf("store denied %v, want 2 (per_client, tenant)", got)
	}
	if got := f.Value(t, "sluice_build_info", "version=v1", "revision=abc"); got != 1 {
		t.Errorf("build info %v", got)
	}
}

func TestDetailedSeriesCapped(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{MaxDetailedSeries: 3})
	lim, _ := newLimiter(t, m)
	for i := range 10 {
		decide(t, m, lim, request("edge", "tenant=t"+strconv.Itoa(i)))
	}
	f := metricstest.Gather(t, reg)
	detailed := 0
	for _, s := range f.Series("sluice_decisions_total") {
		if strings.Contains(s, "descriptor=tenant_") && strings.Contains(s, "code=ok") {
			detailed++
		}
	}
	if detailed != 3 {
		t.Fatalf("%d detailed series, want 3: %v", detailed, f.Series("sluice_decisions_total"))
	}
	if got := f.Sum(t, "sluice_decisions_total", "descriptor=tenant"); got != 7 {
		t.Errorf("past the cap: %v decisions under the plain label, want 7", got)
	}
	// Reloaded limits do not reset the cap.
	lim2, _ := newLimiter(t, m)
	decide(t, m, lim2, request("edge", "tenant=fresh"))
	if got := metricstest.Gather(t, reg).Sum(t, "sluice_decisions_total", "descriptor=tenant"); got != 8 {
		t.Errorf("after reload: %v under the plain label, want 8", got)
	}
}

func TestLongDetailedLabelCut(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	lim, _ := newLimiter(t, m)
	decide(t, m, lim, request("edge", "plan="+strings.Repeat("é", 300)))
	for _, s := range metricstest.Gather(t, reg).Series("sluice_decisions_total") {
		if len(s) > 300 {
			t.Errorf("label too long: %d bytes", len(s))
		}
	}
}

func TestOtherMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})

	failing := m.Store("redis", storeFunc(func() (bool, error) { return false, errors.New("down") }))
	fo, err := limiter.NewFailover(failing, limiter.FailoverConfig{
		Mode: limiter.FailLocal, Local: m.Store("local", memory.New(nil)), OnFailover: m.FailureModeDecision,
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := []limiter.BucketRequest{{Key: "k", Rate: limiter.Rate{Num: 1, Den: 1, Cap: 5}, Cost: 1}}
	res := make([]limiter.BucketResult, 1)
	for range 3 {
		if _, err := fo.Apply(context.Background(), reqs, res); err != nil {
			t.Fatal(err)
		}
	}
	m.ObserveBatchSize(3)
	m.ObserveBatchSize(40)
	m.SetLocalCacheHits(func() uint64 { return 2 })

	bc := breaker.DefaultConfig()
	bc.ConsecutiveFailures, bc.OpenDuration, bc.OnStateChange = 1, time.Hour, m.BreakerTransition
	b, err := breaker.New("redis", bc)
	if err != nil {
		t.Fatal(err)
	}
	m.WatchBreaker(b)
	_ = b.Do(context.Background(), func(context.Context) error { return errors.New("boom") })
	_ = b.Do(context.Background(), func(context.Context) error { return nil }) // rejected
	_ = b.Do(context.Background(), func(context.Context) error { return nil }) // rejected

	m.BackendCheck("redis", nil, time.Millisecond)
	m.BackendCheck("postgres", errors.New("down"), time.Millisecond)
	m.ConfigReload(nil)
	m.ConfigReload(errors.New("bad file"))
	m.SetOverrides(func() int { return 12 })

	f := metricstest.Gather(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_store_requests_total", []string{"store=redis", "result=error"}, 3},
		{"sluice_store_requests_total", []string{"store=local", "result=allowed"}, 3},
		{"sluice_store_duration_seconds", []string{"store=redis"}, 3},
		{"sluice_failure_mode_decisions_total", []string{"mode=local"}, 3},
		{"sluice_failure_mode_decisions_total", []string{"mode=allow"}, 0},
		{"sluice_store_batch_size", nil, 2},
		{"sluice_local_cache_hits_total", nil, 2},
		{"sluice_breaker_state", []string{"breaker=redis"}, 2},
		{"sluice_breaker_transitions_total", []string{"breaker=redis", "from=closed", "to=open"}, 1},
		{"sluice_breaker_rejections_total", []string{"breaker=redis"}, 2},
		{"sluice_backend_up", []string{"backend=redis"}, 1},
		{"sluice_backend_up", []string{"backend=postgres"}, 0},
		{"sluice_backend_check_duration_seconds", []string{"backend=postgres"}, 1},
		{"sluice_config_reloads_total", []string{"result=success"}, 1},
		{"sluice_config_reloads_total", []string{"result=failure"}, 1},
		{"sluice_config_last_reload_successful", nil, 0},
		{"sluice_overrides", nil, 12},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	if f["go_goroutines"] == nil || f["process_cpu_seconds_total"] == nil {
		t.Error("no Go runtime or process metrics")
	}
}

// methodStream is the server transport stream of a call to one method.
type methodStream string

func (s methodStream) Method() string             { return string(s) }
func (methodStream) SetHeader(metadata.MD) error  { return nil }
func (methodStream) SendHeader(metadata.MD) error { return nil }
func (methodStream) SetTrailer(metadata.MD) error { return nil }

// end reports to h the end of a call to method that failed with err
// (nil: OK).
func end(h stats.Handler, method string, err error) {
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), methodStream(method))
	ctx = h.TagRPC(ctx, &stats.RPCTagInfo{FullMethodName: method})
	now := time.Now()
	h.HandleRPC(ctx, &stats.Begin{BeginTime: now})
	h.HandleRPC(ctx, &stats.End{BeginTime: now, EndTime: now.Add(time.Millisecond), Error: err})
}

func TestGRPCStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	h := m.GRPCStats()
	const rlsMethod = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
	h.Serve(rlsMethod)
	for range 4 {
		end(h, rlsMethod, nil)
	}
	end(h, rlsMethod, status.Error(codes.InvalidArgument, "domain"))
	// Methods not served, whatever their names, share one label.
	for i := range 3 {
		end(h, "/x.Y/Z"+strconv.Itoa(i), status.Error(codes.Unimplemented, "unknown"))
	}
	// A client-side End is none of the server's calls.
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), methodStream(rlsMethod))
	h.HandleRPC(ctx, &stats.End{Client: true})

	f := metricstest.Gather(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_grpc_server_handled_total", []string{"method=" + rlsMethod, "code=OK"}, 4},
		{"sluice_grpc_server_handled_total", []string{"method=" + rlsMethod, "code=InvalidArgument"}, 1},
		{"sluice_grpc_server_handled_total", []string{"method=" + metrics.UnknownMethod, "code=Unimplemented"}, 3},
		{"sluice_grpc_server_handling_seconds", []string{"method=" + rlsMethod}, 5},
		{"sluice_grpc_server_handling_seconds", []string{"method=" + metrics.UnknownMethod}, 3},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	if got := len(f.Series("sluice_grpc_server_handled_total")); got != 3 {
		t.Errorf("handled series %d, want 3: %v", got, f.Series("sluice_grpc_server_handled_total"))
	}
}

func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	lim, _ := newLimiter(t, m)
	decide(t, m, lim, request("edge", "remote_address=10.0.0.1"))
	m.BackendCheck("redis", nil, time.Millisecond)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	m.ConfigReload(nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	f := metricstest.Parse(t, rec.Body)
	if got := f.Value(t, "sluice_config_reloads_total", "result=success"); got != 1 {
		t.Errorf("scraped reloads %v, want 1", got)
	}
}

func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.ObserveDecision(nil, &limiter.Request{}, &limiter.Response{Statuses: []limiter.Status{{Code: limiter.OK}}}, 0)
	m.ConfigReload(nil)
	m.BackendCheck("redis", nil, 0)
	m.SetLocalCacheHits(nil)
	m.ObserveBatchSize(1)
	m.FailureModeDecision(limiter.FailAllow, nil)
	m.BreakerTransition("redis", breaker.StateClosed, breaker.StateOpen)
	m.SetOverrides(nil)
	m.WatchFailover(limiter.FailAllow, func() limiter.FailoverCounts { return limiter.FailoverCounts{} })
	s := memory.New(nil)
	if m.Store("memory", s) != limiter.Store(s) {
		t.Error("Store on nil Metrics wraps")
	}
}

type storeFunc func() (bool, error)

func (f storeFunc) Apply(context.Context, []limiter.BucketRequest, []limiter.BucketResult) (bool, error) {
	return f()
}

// BenchmarkObserveDecision is the request path's metrics cost: one
// decision of one descriptor. It must not allocate.
func BenchmarkObserveDecision(b *testing.B) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	lim, _ := newLimiter(b, m)
	req := request("edge", "remote_address=10.0.0.1")
	var resp limiter.Response
	if err := lim.Decide(context.Background(), req, &resp); err != nil {
		b.Fatal(err)
	}
	lims := lim.Limits()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveDecision(lims, req, &resp, time.Microsecond)
		}
	})
}

func TestObserveDecisionAllocs(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	lim, _ := newLimiter(t, m)
	for _, req := range []*limiter.Request{
		request("edge", "remote_address=10.0.0.1", "path=/other"),
		request("unknown", "remote_address=10.0.0.1"),
	} {
		var resp limiter.Response
		if err := lim.Decide(context.Background(), req, &resp); err != nil {
			t.Fatal(err)
		}
		lims := lim.Limits()
		m.ObserveDecision(lims, req, &resp, time.Microsecond)
		if n := testing.AllocsPerRun(100, func() { m.ObserveDecision(lims, req, &resp, time.Microsecond) }); n != 0 {
			t.Errorf("%s: %v allocations per decision, want 0", req.Domain, n)
		}
	}
}

func TestMemoryStoreMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	// One bucket per shard, so distinct keys evict one another.
	s, err := memory.NewWithConfig(func() int64 { return 1_700_000_000_000_000 }, memory.Config{MaxBuckets: memory.MinBuckets})
	if err != nil {
		t.Fatal(err)
	}
	m.WatchMemoryStore("local", func() metrics.MemoryStats {
		st := s.Stats()
		return metrics.MemoryStats{Buckets: st.Buckets, Evictions: st.Evictions, EvictedDebt: st.EvictedDebt}
	})
	rate := limiter.Rate{Num: 1, Den: 365 * 24 * 3600 * 1_000_000, Cap: 10} // a token a year
	res := make([]limiter.BucketResult, 1)
	for i := range 300 {
		reqs := []limiter.BucketRequest{{Key: "k" + strconv.Itoa(i), Rate: rate, Cost: 2}}
		if _, err := s.Apply(context.Background(), reqs, res); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Evictions == 0 {
		t.Fatal("no evictions; the test needs some")
	}
	f := metricstest.Gather(t, reg)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"sluice_memory_buckets", float64(st.Buckets)},
		{"sluice_memory_evictions_total", float64(st.Evictions)},
		{"sluice_memory_evicted_debt_tokens_total", 2 * float64(st.Evictions)}, // each owed its 2 tokens
	} {
		if got := f.Value(t, c.name, "store=local"); got != c.want {
			t.Errorf("%s{store=local} = %v, want %v", c.name, got, c.want)
		}
	}
	if got := f["sluice_memory_evictions_total"].GetType().String(); got != "COUNTER" {
		t.Errorf("sluice_memory_evictions_total is a %s", got)
	}
}

func TestRefundMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	if f := metricstest.Gather(t, reg); f["sluice_redis_refunded_requests_total"] != nil {
		t.Fatal("refunds exported before WatchRefunds")
	}
	m.WatchRefunds(func() metrics.RefundStats { return metrics.RefundStats{Calls: 7, Retried: 3, Failed: 2, Dropped: 1} })
	f := metricstest.Gather(t, reg)
	if got := f.Value(t, "sluice_redis_refunded_requests_total"); got != 7 {
		t.Errorf("sluice_redis_refunded_requests_total = %v, want 7", got)
	}
	for _, c := range []struct {
		result string
		want   float64
	}{{"retried", 3}, {"failed", 2}, {"dropped", 1}} {
		if got := f.Value(t, "sluice_redis_refunds_background_total", "result="+c.result); got != c.want {
			t.Errorf("sluice_redis_refunds_background_total{result=%s} = %v, want %v", c.result, got, c.want)
		}
	}
}
