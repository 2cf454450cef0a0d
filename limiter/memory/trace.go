package memory

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-rl/sluice/limiter"
)

// SetTracer makes a span of every Apply whose context carries a recording
// span (the decision's): the store call, with the number of buckets and
// the outcome, never a key (keys hold descriptor values). Call it before
// the store is used. Without it, or when the decision is not sampled,
// Apply makes no span and allocates nothing for tracing.
func (s *Store) SetTracer(t trace.Tracer) { s.tracer = t }

// The store call's span.
const (
	spanApply   = "memory token bucket"
	attrStore   = "sluice.store"
	attrBuckets = "sluice.buckets"
	attrAllowed = "sluice.allowed"
)

// applyTraced is Apply inside a span.
func (s *Store) applyTraced(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	ctx, span := s.tracer.Start(ctx, spanApply, trace.WithSpanKind(trace.SpanKindInternal))
	defer span.End()
	allowed, err := s.apply(ctx, reqs, res)
	span.SetAttributes(
		attribute.String(attrStore, "memory"),
		attribute.Int(attrBuckets, len(reqs)),
		attribute.Bool(attrAllowed, allowed),
	)
	return allowed, err
}
