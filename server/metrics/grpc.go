package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// methodMetrics are one gRPC method's series. The OK counter is resolved
// with the method; error codes on first use.
type methodMetrics struct {
	ok  prometheus.Counter
	dur prometheus.Observer
}

func (m *Metrics) method(name string) *methodMetrics {
	if mm := (*m.methods.Load())[name]; mm != nil {
		return mm
	}
	m.methodsMu.Lock()
	defer m.methodsMu.Unlock()
	old := *m.methods.Load()
	if mm := old[name]; mm != nil {
		return mm
	}
	mm := &methodMetrics{
		ok:  m.grpcHandled.WithLabelValues(name, codes.OK.String()),
		dur: m.grpcDur.WithLabelValues(name),
	}
	next := make(map[string]*methodMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = mm
	m.methods.Store(&next)
	return mm
}

func (m *Metrics) observeCall(method string, err error, took time.Duration) {
	mm := m.method(method)
	mm.dur.Observe(took.Seconds())
	if err == nil {
		mm.ok.Inc()
		return
	}
	m.grpcHandled.WithLabelValues(method, status.Code(err).String()).Inc()
}

// UnaryServerInterceptor counts unary calls in
// sluice_grpc_server_handled_total{method,code} and times them in
// sluice_grpc_server_handling_seconds{method}. Method names come from the
// registered services only (gRPC answers unknown ones before
// interceptors), so the labels stay bounded.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observeCall(info.FullMethod, err, time.Since(start))
		return resp, err
	}
}

// StreamServerInterceptor does for streams (health Watch, reflection) what
// UnaryServerInterceptor does for unary calls, when the stream ends.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observeCall(info.FullMethod, err, time.Since(start))
		return err
	}
}
