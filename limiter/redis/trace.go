package redis

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-rl/sluice/limiter"
)

// WithTracer makes a span of every Apply whose context carries a recording
// span (the decision's): the store call, with the number of buckets, hash
// slot groups (script calls) and the size of the largest pipeline that
// carried them. Never a key: keys hold descriptor values. Without it, or
// when the decision is not sampled, Apply makes no span and allocates
// nothing for tracing.
func WithTracer(t trace.Tracer) Option { return func(s *Store) { s.tracer = t } }

// The store call's span.
const (
	spanApply      = "redis token bucket"
	attrStore      = "sluice.store"
	attrBuckets    = "sluice.buckets"
	attrAllowed    = "sluice.allowed"
	attrMode       = "sluice.redis.mode"
	attrSlotGroups = "sluice.redis.slot_groups"
	attrBatchSize  = "sluice.redis.batch_size"
	attrDBSystem   = "db.system.name"
)

// applyTraced is Apply inside a span.
func (s *Store) applyTraced(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	ctx, span := s.tracer.Start(ctx, spanApply, trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	var st callStats
	allowed, err := s.apply(ctx, reqs, res, &st)
	span.SetAttributes(
		attribute.String(attrDBSystem, "redis"),
		attribute.String(attrStore, "redis"),
		attribute.String(attrMode, s.mode),
		attribute.Int(attrBuckets, len(reqs)),
		attribute.Int(attrSlotGroups, st.groups),
		attribute.Int(attrBatchSize, st.batch),
		attribute.Bool(attrAllowed, allowed),
	)
	if err != nil {
		// Not the error's text: it is not for traces.
		span.SetStatus(otelcodes.Error, "redis call failed")
	}
	return allowed, err
}

// callStats is what a traced Apply reports of its call: the script calls
// (one per hash slot group) and the largest pipeline one went out in (1
// with batching off; 0 when none was sent).
type callStats struct{ groups, batch int }
