package server_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"
	"github.com/sluice-rl/sluice/server/metrics/metricstest"
)

// TestMetricsScrape makes a scripted set of decisions over gRPC and HTTP,
// scrapes /metrics, and checks that each counter moved by exactly as much.
func TestMetricsScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{Version: "v9", Revision: "r9"})
	h := start(t, []limiter.DomainConfig{domain("edge",
		node("remote_address", "", named(rl(2, limiter.Minute), "per_client")),
		limiter.DescriptorConfig{Key: "path", Value: "/login", RateLimit: rl(1, limiter.Minute), ShadowMode: true},
	)}, false,
		withStore(m.Store("memory", memory.New(nil))),
		withChecks(server.Check{Name: "redis", Optional: true, Fn: func(context.Context) error { return nil }}),
		withOptions(func(o *server.Options) { o.Metrics = m }))

	// 3 gRPC calls from one address: OK, OK, OVER_LIMIT.
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		if got := h.mustCall(req("edge", desc(kv{"remote_address", "10.1.1.1"}))).GetOverallCode(); got != want {
			t.Fatalf("call %d: %v, want %v", i, got, want)
		}
	}
	// 2 HTTP /json calls on the shadow /login limit: the second would be
	// denied, is counted so, and is answered 200.
	for i := range 2 {
		resp, body := h.postJSON(`{"domain":"edge","descriptors":[{"entries":[{"key":"path","value":"/login"}]}]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("json %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// An unknown domain, a descriptor with no limit, and a bad request.
	h.mustCall(req("other", desc(kv{"remote_address", "10.1.1.1"})))
	h.mustCall(req("edge", desc(kv{"path", "/"})))
	if _, err := h.call(req("", desc(kv{"k", "v"}))); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty domain: %v", err)
	}
	if _, err := healthpb.NewHealthClient(h.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	var f metricstest.Families
	limitertest.Eventually(t, 5*time.Second, "a backend check in /metrics", func() bool {
		code, body := h.get("/metrics")
		if code != 200 {
			t.Fatalf("GET /metrics: %d", code)
		}
		f = metricstest.Parse(t, strings.NewReader(body))
		// gRPC's stats handler counts a call at its end, which can come
		// just after the client has its answer: wait for all 7.
		return f.Value(t, "sluice_backend_check_duration_seconds", "backend=redis") > 0 &&
			f.Sum(t, "sluice_grpc_server_handled_total") >= 7
	})
	const rlsMethod = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_decisions_total", []string{"domain=edge", "descriptor=per_client", "code=ok", "shadow=false"}, 2},
		{"sluice_decisions_total", []string{"domain=edge", "descriptor=per_client", "code=over_limit", "shadow=false"}, 1},
		{"sluice_decisions_total", []string{"domain=edge", "descriptor=path", "code=ok", "shadow=true"}, 1},
		{"sluice_decisions_total", []string{"domain=edge", "descriptor=path", "code=over_limit", "shadow=true"}, 1},
		{"sluice_decisions_total", []string{"domain=edge", "descriptor=_no_limit", "code=ok"}, 1},
		{"sluice_decisions_total", []string{"domain=_unknown", "descriptor=_no_limit", "code=ok"}, 1},
		{"sluice_decision_duration_seconds", nil, 7},
		{"sluice_store_requests_total", []string{"store=memory", "result=allowed"}, 4},
		{"sluice_store_requests_total", []string{"store=memory", "result=denied"}, 1},
		{"sluice_store_duration_seconds", []string{"store=memory"}, 5},
		{"sluice_grpc_server_handled_total", []string{"method=" + rlsMethod, "code=OK"}, 5},
		{"sluice_grpc_server_handled_total", []string{"method=" + rlsMethod, "code=InvalidArgument"}, 1},
		{"sluice_grpc_server_handled_total", []string{"method=/grpc.health.v1.Health/Check", "code=OK"}, 1},
		{"sluice_grpc_server_handling_seconds", []string{"method=" + rlsMethod}, 6},
		{"sluice_backend_up", []string{"backend=redis"}, 1},
		{"sluice_build_info", []string{"version=v9", "revision=r9"}, 1},
	} {
		if got := f.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	if got := f.Sum(t, "sluice_decisions_total"); got != 7 {
		t.Errorf("decisions in all %v, want 7: %v", got, f.Series("sluice_decisions_total"))
	}
	if f["go_goroutines"] == nil || f["process_resident_memory_bytes"] == nil {
		t.Error("/metrics lacks Go runtime or process metrics")
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNoMetricsNoRoute(t *testing.T) {
	h := start(t, []limiter.DomainConfig{domain("edge", node("k", "", rl(1, limiter.Second)))}, false)
	if code, _ := h.get("/metrics"); code != 404 {
		t.Errorf("GET /metrics without metrics: %d, want 404", code)
	}
}

// BenchmarkShouldRateLimitMetrics is BenchmarkShouldRateLimit without and
// with metrics, run side by side: the cost metrics add to a decision.
func BenchmarkShouldRateLimitMetrics(b *testing.B) {
	for _, n := range []int{1, 4} {
		for _, on := range []bool{false, true} {
			name := strconv.Itoa(n) + "desc/metrics=" + strconv.FormatBool(on)
			b.Run(name, func(b *testing.B) {
				var m *metrics.Metrics
				var st limiter.Store = memory.New(nil)
				if on {
					m = metrics.New(prometheus.NewRegistry(), metrics.Options{})
					st = m.Store("memory", st)
				}
				lim := limiter.New(st, limiter.Config{})
				var ds []limiter.DescriptorConfig
				for i := 0; i < 4; i++ {
					ds = append(ds, node("k"+strconv.Itoa(i), "", burst(rl(1<<30, limiter.Second), 1<<30)))
				}
				lims, err := limiter.Compile([]limiter.DomainConfig{domain("bench", ds...)}, limiter.CompileOptions{})
				if err != nil {
					b.Fatal(err)
				}
				lim.SetLimits(lims)
				srv, err := server.New(server.DefaultConfig(), lim, server.Options{Metrics: m})
				if err != nil {
					b.Fatal(err)
				}
				svc := srv.RateLimitService()
				r := &rlsv3.RateLimitRequest{Domain: "bench"}
				for i := 0; i < n; i++ {
					r.Descriptors = append(r.Descriptors, &ratelimitv3.RateLimitDescriptor{
						Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k" + strconv.Itoa(i), Value: "client-42"}},
					})
				}
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					resp, err := svc.ShouldRateLimit(ctx, r)
					if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
						b.Fatalf("%v %v", resp, err)
					}
				}
			})
		}
	}
}

// rawCodec sends and receives a call's message bytes as they are, so a
// test can send bytes that are no protobuf message.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// TestMetricsCountRefusedCalls checks that calls gRPC refuses before any
// handler runs are counted with the code the caller got: bytes that are
// no protobuf message, a message over the transport's receive size, and
// methods the server does not serve, which share one label however many
// names callers make up.
func TestMetricsCountRefusedCalls(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	h := start(t, []limiter.DomainConfig{domain("edge", node("k", "", rl(100, limiter.Second)))}, false,
		withOptions(func(o *server.Options) { o.Metrics = m }))
	const (
		rlsMethod    = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
		healthMethod = "/grpc.health.v1.Health/Check"
	)
	invoke := func(method string, msg []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var out []byte
		return h.conn.Invoke(ctx, method, msg, &out, grpc.ForceCodecV2(rawCodec{}))
	}
	expect := func(what string, err error, code codes.Code, msg string) {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != code || !strings.Contains(st.Message(), msg) {
			t.Fatalf("%s: %v, want %v containing %q", what, err, code, msg)
		}
	}

	// A field tag of number 0 is no protobuf: twice on ShouldRateLimit
	// (the server's own decoder), once on health Check (the library's).
	malformed := []byte{0x00, 0x01}
	for range 2 {
		expect("malformed request", invoke(rlsMethod, malformed), codes.Internal, "")
	}
	expect("malformed health check", invoke(healthMethod, malformed), codes.Internal, "")
	// Over the transport's bound (twice the configured message bound,
	// plus headroom), refused before it is read.
	big := make([]byte, 2*server.DefaultConfig().GRPC.MaxRecvMsgBytes+128<<10)
	expect("over-size request", invoke(rlsMethod, big), codes.ResourceExhausted, "larger than max")
	// Five made-up methods, of an unknown service and of a served one.
	for i := range 4 {
		expect("unknown service", invoke(fmt.Sprintf("/made.Up%d/Call", i), nil), codes.Unimplemented, fmt.Sprintf("unknown service made.Up%d", i))
	}
	expect("unknown method", invoke("/envoy.service.ratelimit.v3.RateLimitService/Nope", nil),
		codes.Unimplemented, "unknown method Nope for service envoy.service.ratelimit.v3.RateLimitService")
	// And one call that works.
	h.mustCall(req("edge", desc(kv{"k", "v"})))

	// The server counts a call after it has sent the status: wait a
	// while for all 10, then say which are missing.
	f := metricstest.Gather(t, reg)
	limitertest.Eventually(t, 5*time.Second, "10 calls handled", func() bool {
		f = metricstest.Gather(t, reg)
		return f.Sum(t, "sluice_grpc_server_handled_total") >= 10
	})
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"method=" + rlsMethod, "code=Internal"}, 2},
		{[]string{"method=" + healthMethod, "code=Internal"}, 1},
		{[]string{"method=" + rlsMethod, "code=ResourceExhausted"}, 1},
		{[]string{"method=" + metrics.UnknownMethod, "code=Unimplemented"}, 5},
		{[]string{"method=" + rlsMethod, "code=OK"}, 1},
	} {
		if got := f.Value(t, "sluice_grpc_server_handled_total", c.labels...); got != c.want {
			t.Errorf("sluice_grpc_server_handled_total{%s} = %v, want %v", strings.Join(c.labels, ","), got, c.want)
		}
	}
	if got := f.Sum(t, "sluice_grpc_server_handled_total"); got != 10 {
		t.Errorf("calls counted %v, want 10: %v", got, f.Series("sluice_grpc_server_handled_total"))
	}
	// No series carries a made-up name.
	for _, s := range append(f.Series("sluice_grpc_server_handled_total"), f.Series("sluice_grpc_server_handling_seconds")...) {
		if strings.Contains(s, "made.Up") || strings.Contains(s, "Nope") {
			t.Errorf("series of a made-up method: %s", s)
		}
	}
}
