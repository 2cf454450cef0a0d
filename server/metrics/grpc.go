package metrics

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// UnknownMethod is the method label of calls to a method the server does
// not serve, so callers cannot create series at will.
const UnknownMethod = "_unknown"

// methodMetrics are one method label's series. The OK counter is resolved
// up front (so a served method shows its OK series from the start); error
// codes on first use.
type methodMetrics struct {
	name string
	ok   prometheus.Counter
	dur  prometheus.Observer
}

func (m *Metrics) newMethodMetrics(name string) *methodMetrics {
	mm := &methodMetrics{name: name, dur: m.grpcDur.WithLabelValues(name)}
	if name != UnknownMethod { // a call to an unknown method never ends OK
		mm.ok = m.grpcHandled.WithLabelValues(name, codes.OK.String())
	}
	return mm
}

func (mm *methodMetrics) observe(m *Metrics, err error, seconds float64) {
	mm.dur.Observe(seconds)
	if err == nil && mm.ok != nil {
		mm.ok.Inc()
		return
	}
	m.grpcHandled.WithLabelValues(mm.name, status.Code(err).String()).Inc()
}

// GRPCStats counts every gRPC call the server answers in
// sluice_grpc_server_handled_total{method,code} and times it in
// sluice_grpc_server_handling_seconds{method}, streams included (for them,
// their lifetime). It is a gRPC stats handler rather than an interceptor
// because gRPC refuses some calls before any interceptor runs: a request
// over the receive size (ResourceExhausted), bytes the codec cannot read
// (Internal), an unknown method (Unimplemented). Methods that Serve did not
// name count as UnknownMethod.
//
// Install it with grpc.StatsHandler, register the services, call Serve
// with the methods served, then start serving.
type GRPCStats struct {
	m       *Metrics
	unknown atomic.Pointer[methodMetrics] // made on first use
	served  atomic.Pointer[map[string]*methodMetrics]
}

var _ stats.Handler = (*GRPCStats)(nil)

// GRPCStats returns a new stats handler that serves no method yet.
func (m *Metrics) GRPCStats() *GRPCStats {
	h := &GRPCStats{m: m}
	h.served.Store(&map[string]*methodMetrics{})
	return h
}

// Serve names the methods served, in gRPC's full form
// ("/package.Service/Method"); they count under their own label. It may
// be called again (the names add up).
func (h *GRPCStats) Serve(fullMethods ...string) {
	old := *h.served.Load()
	next := make(map[string]*methodMetrics, len(old)+len(fullMethods))
	for k, v := range old {
		next[k] = v
	}
	for _, name := range fullMethods {
		if next[name] == nil {
			next[name] = h.m.newMethodMetrics(name)
		}
	}
	h.served.Store(&next)
}

// ServeServer calls Serve with every method registered on s.
func (h *GRPCStats) ServeServer(s *grpc.Server) {
	var names []string
	for svc, info := range s.GetServiceInfo() {
		for _, md := range info.Methods {
			names = append(names, "/"+svc+"/"+md.Name)
		}
	}
	h.Serve(names...)
}

// metricsOf is the series of a call's full method name.
func (h *GRPCStats) metricsOf(method string) *methodMetrics {
	if mm := (*h.served.Load())[method]; mm != nil {
		return mm
	}
	if mm := h.unknown.Load(); mm != nil {
		return mm
	}
	// Made on first use, so that a server no caller has got wrong shows
	// no series for unknown methods. Two first calls may both make one:
	// they resolve the same series.
	mm := h.m.newMethodMetrics(UnknownMethod)
	h.unknown.Store(mm)
	return mm
}

// TagRPC implements stats.Handler; the method is read back at the end of
// the call from the server's context, so that a call costs no context.
func (h *GRPCStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC implements stats.Handler: it counts a call when it ends.
func (h *GRPCStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.Client {
		return
	}
	// The context gRPC passes with End is the call's server context,
	// which names the method. Without one, the call counts as unknown
	// rather than not at all.
	method, _ := grpc.Method(ctx)
	h.metricsOf(method).observe(h.m, end.Error, end.EndTime.Sub(end.BeginTime).Seconds())
}

// TagConn implements stats.Handler.
func (h *GRPCStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (h *GRPCStats) HandleConn(context.Context, stats.ConnStats) {}
