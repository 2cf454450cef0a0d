package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/server"
)

func TestGRPCHealthCheck(t *testing.T) {
	h := start(t, edgeDomains(), false)
	hc := healthpb.NewHealthClient(h.conn)
	for _, name := range []string{"", server.ServiceName} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			t.Fatalf("Check(%q): %v", name, err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", name, resp.Status)
		}
	}
	_, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown) err = %v, want NotFound", err)
	}
}

// TestDrain checks the shutdown order: readiness turns false on both
// protocols while the servers still answer, then they stop.
func TestDrain(t *testing.T) {
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.Shutdown.DrainDelay = 400 * time.Millisecond }))
	hc := healthpb.NewHealthClient(h.conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watches []healthpb.Health_WatchClient
	for _, name := range []string{"", server.ServiceName} {
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			t.Fatalf("Watch(%q): %v", name, err)
		}
		first, err := w.Recv()
		if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Watch(%q) first = %v, %v; want SERVING", name, first, err)
		}
		watches = append(watches, w)
	}
	if code, body := h.get("/health/ready"); code != 200 {
		t.Fatalf("ready = %d %q before drain", code, body)
	}
	if code, _ := h.get("/health/live"); code != 200 {
		t.Fatalf("live = %d", code)
	}

	h.cancel() // begin shutdown; Run now waits the drain delay
	for i, w := range watches {
		next, err := w.Recv()
		if err != nil || next.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("Watch[%d] after stop = %v, %v; want NOT_SERVING", i, next, err)
		}
	}
	code, body := h.get("/health/ready")
	if code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("ready during drain = %d %q, want 503 draining", code, body)
	}
	if code, _ := h.get("/health/live"); code != 200 {
		t.Errorf("live during drain = %d, want 200", code)
	}
	// Decisions are still made during the drain.
	check(t, h.mustCall(req("edge", desc(kv{"user", "d"}))), OK, want{OK, "user", 0, -1})
	h.stop()
	if resp, err := http.Get(h.base + "/health/live"); err == nil {
		resp.Body.Close()
		t.Errorf("HTTP still serving after Run returned")
	}
}

func TestReadinessChecks(t *testing.T) {
	var failing atomic.Bool
	var calls atomic.Int64
	chk := server.Check{Name: "redis", Fn: func(ctx context.Context) error {
		calls.Add(1)
		if failing.Load() {
			return errors.New("connection refused")
		}
		return nil
	}}
	h := start(t, edgeDomains(), false, withChecks(chk))
	limitertest.Eventually(t, 5*time.Second, "ready", func() bool { c, _ := h.get("/health/ready"); return c == 200 })
	failing.Store(true)
	limitertest.Eventually(t, 5*time.Second, "not ready", func() bool { c, _ := h.get("/health/ready"); return c == 503 })
	_, body := h.get("/health/ready")
	if !strings.Contains(body, "redis: connection refused") {
		t.Errorf("ready body = %q", body)
	}
	hc := healthpb.NewHealthClient(h.conn)
	limitertest.Eventually(t, 5*time.Second, "grpc NOT_SERVING", func() bool {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: server.ServiceName})
		return err == nil && r.Status == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if code, _ := h.get("/health/live"); code != 200 {
		t.Errorf("live = %d while a backend is down, want 200", code)
	}
	failing.Store(false)
	limitertest.Eventually(t, 5*time.Second, "ready again", func() bool { c, _ := h.get("/health/ready"); return c == 200 })
	// Probing readiness does not run the check: results are cached.
	before := calls.Load()
	for i := 0; i < 50; i++ {
		h.get("/health/ready")
	}
	if after := calls.Load(); after-before > 25 {
		t.Errorf("50 probes ran the check %d times", after-before)
	}
}

func TestReflectionListsServices(t *testing.T) {
	h := start(t, edgeDomains(), false)
	rc := reflectionpb.NewServerReflectionClient(h.conn)
	stream, err := rc.ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend() // the stream is cut by the server anyway
	got := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		got[s.Name] = true
	}
	for _, name := range []string{server.ServiceName, "grpc.health.v1.Health"} {
		if !got[name] {
			t.Errorf("reflection does not list %s: %v", name, got)
		}
	}
}
