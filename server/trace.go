package server

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The decision's span, when Options.Tracer is set. Its attributes are the
// domain, the number of descriptors and the outcome; never a descriptor's
// key or value, which may identify a user (or carry a token), nor any
// header of the request.
const (
	spanDecision       = "ShouldRateLimit"
	attrDomain         = "sluice.domain"
	attrDescriptors    = "sluice.descriptors"
	attrOverallCode    = "sluice.overall_code"
	attrGRPCStatusCode = "rpc.grpc.status_code"
)

// traceContext reads the caller's W3C traceparent and tracestate, as
// envoyproxy/ratelimit does (it also reads B3, which Sluice does not).
var traceContext = propagation.TraceContext{}

// grpcCarrier reads the trace context from the call's incoming metadata
// (gRPC keys are lower case, as the propagator asks for them).
type grpcCarrier struct{ ctx context.Context }

func (c grpcCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (grpcCarrier) Set(string, string) {}
func (grpcCarrier) Keys() []string     { return nil }

// withHTTPTraceContext continues the caller's trace of a /json request.
func (r *rls) withHTTPTraceContext(ctx context.Context, h http.Header) context.Context {
	if r.tracer == nil {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.HeaderCarrier(h))
}

// decideTraced is decide inside the decision's span, a child of the
// caller's trace when the call carries one.
func (r *rls) decideTraced(ctx context.Context, s *scratch) error {
	ctx = traceContext.Extract(ctx, grpcCarrier{ctx})
	ctx, span := r.tracer.Start(ctx, spanDecision, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	err := r.decidePlain(ctx, s)
	if !span.IsRecording() {
		return err
	}
	span.SetAttributes(
		// A copy: the request's strings may share a buffer with the
		// whole message, which the span would otherwise keep.
		attribute.String(attrDomain, strings.Clone(s.in.Req.Domain)),
		attribute.Int(attrDescriptors, len(s.in.Req.Descriptors)),
	)
	if err != nil {
		st := status.Convert(grpcError(err))
		span.SetAttributes(attribute.Int(attrGRPCStatusCode, int(st.Code())))
		// The code's name only: a store's error text is not for traces.
		span.SetStatus(otelcodes.Error, st.Code().String())
		return err
	}
	span.SetAttributes(attribute.String(attrOverallCode, s.resp.Code.String()))
	return nil
}
