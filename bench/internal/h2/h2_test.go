package h2

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// echoRLS answers by the request's domain, and echoes the first entry's
// value back in a header so each caller can check it got its own answer.
type echoRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	active, most atomic.Int64
	cancelled    chan struct{} // a slow call saw its context end
}

func (e *echoRLS) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	n := e.active.Add(1)
	defer e.active.Add(-1)
	for m := e.most.Load(); n > m && !e.most.CompareAndSwap(m, n); m = e.most.Load() {
	}
	value := ""
	if d := in.GetDescriptors(); len(d) > 0 && len(d[0].GetEntries()) > 0 {
		value = d[0].GetEntries()[0].GetValue()
	}
	resp := &rlsv3.RateLimitResponse{
		OverallCode:          rlsv3.RateLimitResponse_OK,
		ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "echo", Value: value}},
	}
	switch in.GetDomain() {
	case "over":
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	case "refuse":
		return nil, status.Error(codes.ResourceExhausted, "no room: try later")
	case "slow":
		select {
		case <-time.After(time.Duration(in.GetHitsAddend()) * time.Millisecond):
		case <-ctx.Done():
			e.cancelled <- struct{}{}
			return nil, ctx.Err()
		}
	case "big":
		resp.ResponseHeadersToAdd[0].Value = strings.Repeat("x", int(in.GetHitsAddend()))
	}
	return resp, nil
}

func echoServer(t *testing.T, lis net.Listener, opts ...grpc.ServerOption) (*grpc.Server, *echoRLS) {
	t.Helper()
	e := &echoRLS{cancelled: make(chan struct{}, 100)}
	srv := grpc.NewServer(opts...)
	rlsv3.RegisterRateLimitServiceServer(srv, e)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return srv, e
}

// waitActive waits until the server is running a call.
func waitActive(t *testing.T, e *echoRLS) {
	t.Helper()
	limitertest.Eventually(t, 5*time.Second, "the call to reach the server", func() bool { return e.active.Load() > 0 })
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func leanClient(t *testing.T, addr string) *Client {
	t.Helper()
	c := NewClient(addr, time.Second)
	t.Cleanup(c.Close)
	return c
}

func req(domain, value string, hits uint32) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{
		Domain:     domain,
		HitsAddend: hits,
		Descriptors: []*commonrl.RateLimitDescriptor{{
			Entries: []*commonrl.RateLimitDescriptor_Entry{{Key: "k", Value: value}},
		}},
	}
}

func echoed(r *rlsv3.RateLimitResponse) string {
	if h := r.GetResponseHeadersToAdd(); len(h) > 0 {
		return h[0].GetValue()
	}
	return ""
}

func TestLeanClient(t *testing.T) {
	lis := listen(t)
	_, e := echoServer(t, lis)
	c := leanClient(t, lis.Addr().String())
	// Every call is bounded: a client that stops reading or writing fails
	// the test instead of hanging it.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("each concurrent caller gets its own answer", func(t *testing.T) {
		var wg sync.WaitGroup
		var bad atomic.Int64
		for i := range 64 {
			wg.Go(func() {
				for j := range 50 {
					v := string(rune('a'+i%26)) + strings.Repeat("v", j)
					domain := "ok"
					want := rlsv3.RateLimitResponse_OK
					if j%3 == 0 {
						domain, want = "over", rlsv3.RateLimitResponse_OVER_LIMIT
					}
					r, err := c.ShouldRateLimit(ctx, req(domain, v, 1))
					if err != nil || echoed(r) != v || r.GetOverallCode() != want {
						bad.Add(1)
						t.Errorf("call %d/%d: %v, echo %q, code %v; want %q, %v", i, j, err, echoed(r), r.GetOverallCode(), v, want)
						return
					}
				}
			})
		}
		wg.Wait()
	})

	t.Run("an error status keeps its code and message", func(t *testing.T) {
		_, err := c.ShouldRateLimit(ctx, req("refuse", "x", 1))
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "no room: try later") {
			t.Fatalf("err %v, want RESOURCE_EXHAUSTED with the server's message", err)
		}
	})

	t.Run("a deadline fails the call and reaches the server", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.ShouldRateLimit(cctx, req("slow", "x", 5000))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("err %v, want DEADLINE_EXCEEDED", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("returned after %v", d)
		}
		select {
		case <-e.cancelled:
		case <-time.After(2 * time.Second):
			t.Fatal("the server's handler never saw its context end")
		}
		// The connection is still good.
		if r, err := c.ShouldRateLimit(ctx, req("ok", "after", 1)); err != nil || echoed(r) != "after" {
			t.Fatalf("call after the deadline: %v, %q", err, echoed(r))
		}
	})

	t.Run("answers larger than a frame and than the connection window", func(t *testing.T) {
		// 24 answers of 1 MiB: many DATA frames each, 24 MiB in all, more
		// than the connection window, so credit must be given back.
		for i := range (h2ConnWindow >> 20) + 8 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := c.ShouldRateLimit(cctx, req("big", "x", 1<<20))
			cancel()
			if err != nil || len(echoed(r)) != 1<<20 {
				t.Fatalf("call %d: %v, %d bytes", i, err, len(echoed(r)))
			}
		}
	})

	t.Run("an answer over the bound fails alone", func(t *testing.T) {
		_, err := c.ShouldRateLimit(ctx, req("big", "x", h2MaxResponse+1))
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("err %v, want RESOURCE_EXHAUSTED", err)
		}
		if r, err := c.ShouldRateLimit(ctx, req("ok", "next", 1)); err != nil || echoed(r) != "next" {
			t.Fatalf("next call: %v, %q", err, echoed(r))
		}
	})

	t.Run("requests beyond the server's connection window wait for its updates", func(t *testing.T) {
		// 2000 requests of 4 KiB: 8 MiB through a server that starts
		// with a 64 KiB window.
		v := strings.Repeat("r", 4<<10)
		for i := range 2000 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := c.ShouldRateLimit(cctx, req("ok", v, 1))
			cancel()
			if err != nil || echoed(r) != v {
				t.Fatalf("call %d: %v", i, err)
			}
		}
	})
}

func TestLeanClientMaxConcurrentStreams(t *testing.T) {
	lis := listen(t)
	_, e := echoServer(t, lis, grpc.MaxConcurrentStreams(2))
	c := leanClient(t, lis.Addr().String())
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			v := string(rune('a' + i))
			r, err := c.ShouldRateLimit(t.Context(), req("slow", v, 20))
			if err != nil || echoed(r) != v {
				t.Errorf("call %d: %v, %q", i, err, echoed(r))
			}
		})
	}
	wg.Wait()
	if m := e.most.Load(); m > 2 {
		t.Errorf("the server ran %d calls at once; it allows 2", m)
	}
}

func TestLeanClientAnswersPings(t *testing.T) {
	// The server pings every second and drops a connection whose ping is
	// not answered within 500 ms.
	lis := listen(t)
	echoServer(t, lis, grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Second, Timeout: 500 * time.Millisecond}))
	c := leanClient(t, lis.Addr().String())
	if _, err := c.ShouldRateLimit(t.Context(), req("ok", "x", 1)); err != nil {
		t.Fatal(err)
	}
	first := c.cur
	time.Sleep(3 * time.Second)
	if _, err := c.ShouldRateLimit(t.Context(), req("ok", "x", 1)); err != nil {
		t.Fatal(err)
	}
	if c.cur != first {
		t.Fatal("the connection was replaced: the server's pings went unanswered")
	}
}

func TestLeanClientServerGoesAndComesBack(t *testing.T) {
	lis := listen(t)
	addr := lis.Addr().String()
	srv, e := echoServer(t, lis)
	c := leanClient(t, addr)
	ctx := t.Context()

	// A call in flight when the server stops gracefully finishes.
	slow := make(chan error, 1)
	go func() {
		r, err := c.ShouldRateLimit(ctx, req("slow", "inflight", 300))
		if err == nil && echoed(r) != "inflight" {
			err = errors.New("wrong answer")
		}
		slow <- err
	}()
	waitActive(t, e)
	srv.GracefulStop()
	if err := <-slow; err != nil {
		t.Fatalf("call in flight across a graceful stop: %v", err)
	}

	// Down: calls fail with UNAVAILABLE, at once.
	start := time.Now()
	_, err := c.ShouldRateLimit(ctx, req("ok", "x", 1))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("server down: err %v, want UNAVAILABLE", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("server down: the call took %v", d)
	}

	// Back on the same address: the client dials again.
	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("address %s not free again: %v", addr, err)
	}
	echoServer(t, lis2)
	limitertest.Eventually(t, 5*time.Second, "calls to work with the server back", func() error {
		r, err := c.ShouldRateLimit(ctx, req("ok", "back", 1))
		if err == nil && echoed(r) != "back" {
			return fmt.Errorf("echoed %q", echoed(r))
		}
		return err
	})
}

func TestLeanClientClose(t *testing.T) {
	lis := listen(t)
	_, e := echoServer(t, lis)
	c := NewClient(lis.Addr().String(), time.Second)
	if _, err := c.ShouldRateLimit(t.Context(), req("ok", "x", 1)); err != nil {
		t.Fatal(err)
	}
	cn := c.cur
	inflight := make(chan error, 1)
	go func() {
		_, err := c.ShouldRateLimit(t.Context(), req("slow", "x", 10000))
		inflight <- err
	}()
	waitActive(t, e)
	c.Close()
	select {
	case err := <-inflight:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("call in flight at Close: %v, want UNAVAILABLE", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("call in flight at Close never returned")
	}
	select {
	case <-cn.done:
	default:
		t.Error("the reader goroutine outlived Close")
	}
	if _, err := c.ShouldRateLimit(t.Context(), req("ok", "x", 1)); status.Code(err) != codes.Canceled {
		t.Errorf("call after Close: %v, want CANCELED", err)
	}
}

func TestGRPCTimeout(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "1n"},
		{-time.Second, "1n"},
		{1500 * time.Nanosecond, "1500n"},
		{time.Second, "1000000u"},
		{99999999 * time.Nanosecond, "99999999n"},
		{100 * time.Millisecond, "100000u"},
		{200 * time.Second, "200000m"},
		{100000 * time.Second, "100000S"},
		{math.MaxInt64, "99999999S"},
	} {
		if got := grpcTimeout(tt.d); got != tt.want {
			t.Errorf("grpcTimeout(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestLeanClientDoesNotHammerAFailingServer(t *testing.T) {
	// A server that completes the handshake (an empty SETTINGS frame) and
	// hangs up: every call fails, and the client dials no more than once
	// per h2RedialEvery.
	lis := listen(t)
	var accepts atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			_, _ = nc.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
			time.Sleep(5 * time.Millisecond)
			nc.Close()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
	})
	c := leanClient(t, lis.Addr().String())
	start := time.Now()
	calls := 0
	for time.Since(start) < 500*time.Millisecond {
		if _, err := c.ShouldRateLimit(t.Context(), req("ok", "x", 1)); status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d: err %v, want UNAVAILABLE", calls, err)
		}
		calls++
	}
	most := int64(time.Since(start)/h2RedialEvery) + 1
	if n := accepts.Load(); n > most || n == 0 {
		t.Errorf("%d calls in %v dialled %d times; want 1 to %d", calls, time.Since(start).Round(time.Millisecond), n, most)
	}
}

func TestLeanClientLargeRequests(t *testing.T) {
	// Requests larger than what the server's windows grant at once go out
	// in pieces as the server returns credit.
	for _, tt := range []struct {
		name string
		opts []grpc.ServerOption
	}{
		{"large stream window, default connection window", []grpc.ServerOption{grpc.InitialWindowSize(1 << 20)}},
		{"fixed 64 KiB windows", []grpc.ServerOption{grpc.InitialWindowSize(65535), grpc.InitialConnWindowSize(65535)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lis := listen(t)
			echoServer(t, lis, tt.opts...)
			c := leanClient(t, lis.Addr().String())
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			for i := range 10 {
				if _, err := c.ShouldRateLimit(ctx, req("ok", "small", 1)); err != nil {
					t.Fatalf("small call %d: %v", i, err)
				}
			}
			for _, size := range []int{60000, 100 << 10, 300 << 10} {
				v := strings.Repeat("L", size)
				r, err := c.ShouldRateLimit(ctx, req("ok", v, 1))
				if err != nil || echoed(r) != v {
					t.Fatalf("request of %d bytes: %v (echo %d bytes)", size, err, len(echoed(r)))
				}
			}
		})
	}
}

func TestLeanClientStreamIDsRunOut(t *testing.T) {
	// Near the last stream id, concurrent callers finish on the old
	// connection or move to a new one; none sends an invalid id.
	lis := listen(t)
	echoServer(t, lis)
	c := leanClient(t, lis.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := c.ShouldRateLimit(ctx, req("ok", "x", 1)); err != nil {
		t.Fatal(err)
	}
	old := c.cur
	old.wmu.Lock()
	old.nextID = math.MaxInt32 - 20
	old.wmu.Unlock()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 10 {
				v := fmt.Sprint(i, "-", j)
				if r, err := c.ShouldRateLimit(ctx, req("ok", v, 1)); err != nil || echoed(r) != v {
					t.Errorf("call %s: %v", v, err)
				}
			}
		})
	}
	wg.Wait()
	if c.cur == old {
		t.Error("still on the connection whose stream ids ran out")
	}
}

func TestLeanClientHTTPAnswers(t *testing.T) {
	// A server that is not gRPC, or answers with an HTTP error: gRPC's
	// mapping of HTTP statuses, and trailers read as gRPC's.
	var mode atomic.Value
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load().(string) {
		case "404":
			w.WriteHeader(http.StatusNotFound)
		case "503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("<html>"))
		case "status":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "grpc-status, grpc-message")
			w.WriteHeader(http.StatusOK)
			w.Header().Set("grpc-status", "5")
			w.Header().Set("grpc-message", "no%20such%20thing%E2%9C%93")
		}
	})
	lis := listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true) // h2c, as the lean client speaks
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	c := leanClient(t, lis.Addr().String())
	for _, tt := range []struct {
		mode string
		code codes.Code
		msg  string
	}{
		{"404", codes.Unimplemented, `HTTP status "404"`},
		{"503", codes.Unavailable, `HTTP status "503"`},
		{"html", codes.Unknown, `content-type "text/html"`},
		{"status", codes.NotFound, "no such thing\u2713"},
	} {
		mode.Store(tt.mode)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := c.ShouldRateLimit(ctx, req("ok", "x", 1))
		cancel()
		if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err %v, want %v with %q", tt.mode, err, tt.code, tt.msg)
		}
	}
}
