package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server"
)

func newClock() *limitertest.Clock {
	return limitertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
}

// harness is one running Server with a gRPC client.
type harness struct {
	t      testing.TB
	srv    *server.Server
	lim    *limiter.Limiter
	clock  *limitertest.Clock
	conn   *grpc.ClientConn
	client rlsv3.RateLimitServiceClient
	base   string // http://host:port
	cancel context.CancelFunc
	done   chan error
}

type setup struct {
	cfg    server.Config
	store  limiter.Store // nil: memory store on the harness clock
	bounds limiter.Bounds
	checks []server.Check
	opts   []func(*server.Options)
	noLim  bool
}

type option func(*setup)

func withConfig(f func(*server.Config)) option { return func(s *setup) { f(&s.cfg) } }
func withStore(st limiter.Store) option        { return func(s *setup) { s.store = st } }
func withBounds(b limiter.Bounds) option       { return func(s *setup) { s.bounds = b } }
func withChecks(c ...server.Check) option      { return func(s *setup) { s.checks = c } }
func withoutLimits() option                    { return func(s *setup) { s.noLim = true } }
func withOptions(f func(*server.Options)) option {
	return func(s *setup) { s.opts = append(s.opts, f) }
}

func testConfig() server.Config {
	cfg := server.DefaultConfig()
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Shutdown.DrainDelay = 0
	cfg.Shutdown.Timeout = 5 * time.Second
	cfg.Health.CheckInterval = 20 * time.Millisecond
	return cfg
}

// start runs a Server over the given domains on loopback ports, stopped
// when the test ends.
func start(t testing.TB, domains []limiter.DomainConfig, shadow bool, opts ...option) *harness {
	t.Helper()
	s := setup{cfg: testConfig()}
	for _, o := range opts {
		o(&s)
	}
	h := &harness{t: t, clock: newClock()}
	st := s.store
	if st == nil {
		st = memory.New(h.clock.Now)
	}
	h.lim = limiter.New(st, limiter.Config{Bounds: s.bounds})
	if !s.noLim {
		lims, err := limiter.Compile(domains, limiter.CompileOptions{ShadowMode: shadow})
		if err != nil {
			t.Fatalf("compile limits: %v", err)
		}
		h.lim.SetLimits(lims)
	}
	sopts := server.Options{Checks: s.checks}
	for _, f := range s.opts {
		f(&sopts)
	}
	srv, err := server.New(s.cfg, h.lim, sopts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	h.srv = srv
	h.base = "http://" + srv.HTTPAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- srv.Run(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	h.conn = conn
	h.client = rlsv3.NewRateLimitServiceClient(conn)
	t.Cleanup(func() {
		conn.Close()
		h.stop()
	})
	return h
}

// stop cancels Run and waits for it; safe to call twice.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	if h.done == nil {
		return
	}
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Errorf("Run did not return after cancel")
	}
	h.done = nil
}

func (h *harness) call(req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.client.ShouldRateLimit(ctx, req)
}

func (h *harness) mustCall(req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	h.t.Helper()
	resp, err := h.call(req)
	if err != nil {
		h.t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp
}

func (h *harness) get(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get(h.base + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) postJSON(body string) (jsonReply, string) {
	h.t.Helper()
	resp, err := http.Post(h.base+"/json", "application/json", strings.NewReader(body))
	if err != nil {
		h.t.Fatalf("POST /json: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("POST /json: read the answer: %v", err)
	}
	return jsonReply{StatusCode: resp.StatusCode, Header: resp.Header}, string(b)
}

// jsonReply is what postJSON returns of a response, whose body it has
// read and closed.
type jsonReply struct {
	StatusCode int
	Header     http.Header
}

// Request builders.

type kv = [2]string

func desc(pairs ...kv) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for _, p := range pairs {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: p[0], Value: p[1]})
	}
	return d
}

func withHits(d *ratelimitv3.RateLimitDescriptor, n uint64) *ratelimitv3.RateLimitDescriptor {
	d.HitsAddend = wrapperspb.UInt64(n)
	return d
}

func req(domain string, ds ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: domain, Descriptors: ds}
}

// Limit builders.

func rl(rpu uint32, unit limiter.Unit) *limiter.RateLimit {
	return &limiter.RateLimit{RequestsPerUnit: rpu, Unit: unit}
}

func named(r *limiter.RateLimit, name string) *limiter.RateLimit { r.Name = name; return r }
func burst(r *limiter.RateLimit, b uint32) *limiter.RateLimit    { r.Burst = b; return r }

func node(key, value string, limit *limiter.RateLimit, children ...limiter.DescriptorConfig) limiter.DescriptorConfig {
	return limiter.DescriptorConfig{Key: key, Value: value, RateLimit: limit, Descriptors: children}
}

func domain(name string, ds ...limiter.DescriptorConfig) limiter.DomainConfig {
	return limiter.DomainConfig{Domain: name, Descriptors: ds, File: "test.yaml", Line: 1}
}

// failStore is a Store whose Apply always fails.
type failStore struct{}

func (failStore) Apply(context.Context, []limiter.BucketRequest, []limiter.BucketResult) (bool, error) {
	return false, errors.New("connection refused")
}
