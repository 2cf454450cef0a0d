//go:build integration

package redis

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// TestTracedApply: with a tracer, a call under a recording span is a child
// span with the bucket count, one slot group (one node) and the size of
// its pipeline, and no key; a call with no span in its context makes none.
func TestTracedApply(t *testing.T) {
	addr := limitertest.StartRedis(t)
	bothModes(t, func(t *testing.T, batching string) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		tr := tp.Tracer("test")

		cfg := DefaultConfig()
		cfg.URL, cfg.Batching = "redis://"+addr, batching
		s, err := New(cfg, WithTracer(tr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		rt := mustRate(t, 10, limiter.Second, 10)
		base := uniqueKey("traced")
		const callers = 16
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				ctx, parent := tr.Start(context.Background(), "decision")
				defer parent.End()
				k := base + string(rune('a'+i))
				res := make([]limiter.BucketResult, 2)
				if _, err := s.Apply(ctx, []limiter.BucketRequest{{Key: k + "1", Rate: rt, Cost: 1}, {Key: k + "2", Rate: rt, Cost: 1}}, res); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		// No span in the context: no store span.
		if _, err := s.Apply(context.Background(), []limiter.BucketRequest{{Key: base + "z", Rate: rt, Cost: 1}}, make([]limiter.BucketResult, 1)); err != nil {
			t.Fatal(err)
		}

		parents := map[[8]byte]bool{}
		var stores []sdktrace.ReadOnlySpan
		for _, sp := range rec.Ended() {
			switch sp.Name() {
			case "decision":
				parents[sp.SpanContext().SpanID()] = true
			case spanApply:
				stores = append(stores, sp)
			}
		}
		if len(stores) != callers {
			t.Fatalf("%d store spans, want %d", len(stores), callers)
		}
		for _, sp := range stores {
			if !parents[sp.Parent().SpanID()] {
				t.Errorf("store span's parent %v is no decision span", sp.Parent().SpanID())
			}
			a := map[attribute.Key]attribute.Value{}
			for _, kv := range sp.Attributes() {
				a[kv.Key] = kv.Value
				if kv.Value.Type() == attribute.STRING && len(kv.Value.AsString()) >= len(base) && kv.Value.AsString()[:len(base)] == base {
					t.Errorf("attribute %s carries a key: %q", kv.Key, kv.Value.AsString())
				}
			}
			batch := a[attrBatchSize].AsInt64()
			if a[attrBuckets].AsInt64() != 2 || a[attrSlotGroups].AsInt64() != 1 || a[attrStore].AsString() != "redis" ||
				a[attrMode].AsString() != ModeSingle || !a[attrAllowed].AsBool() {
				t.Errorf("attributes %v", a)
			}
			if batching == "off" && batch != 1 || batch < 1 || batch > callers {
				t.Errorf("batch size %d with batching %s, %d callers", batch, batching, callers)
			}
		}
	})
}
