package limiter_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

// TestPassedMetadata: the merge of the passed limits' metadata, first
// value winning and maps merged; a limit over, unlimited or without a
// match adds nothing; and over successive requests two limits' metadata
// never leak into each other (nor into the configuration).
func TestPassedMetadata(t *testing.T) {
	metaA := map[string]any{"name": "service_1", "route": map[string]any{"zone": "a"}}
	metaB := map[string]any{"name": "service_2", "other": "b", "route": map[string]any{"tier": "gold", "zone": "b"}}
	quota := func(value string, rpu uint32, meta map[string]any) limiter.DescriptorConfig {
		return limiter.DescriptorConfig{Key: "backend", Value: value, QuotaMode: true, Metadata: meta,
			RateLimit: &limiter.RateLimit{RequestsPerUnit: rpu, Unit: limiter.Hour}}
	}
	lims, err := limiter.Compile([]limiter.DomainConfig{{Domain: "d", File: "t.yaml", Descriptors: []limiter.DescriptorConfig{
		quota("a", 100, metaA), quota("b", 1, metaB),
		{Key: "free", Metadata: map[string]any{"unlimited": true}, RateLimit: &limiter.RateLimit{Unlimited: true}},
	}}}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{})
	lim.SetLimits(lims)
	d := func(v string) limiter.Descriptor {
		return limiter.Descriptor{Entries: []limiter.Entry{{Key: "backend", Value: v}}}
	}
	decide := func(ds ...limiter.Descriptor) map[string]any {
		t.Helper()
		var resp limiter.Response
		if err := lim.Decide(context.Background(), &limiter.Request{Domain: "d", Descriptors: ds}, &resp); err != nil {
			t.Fatal(err)
		}
		return limiter.PassedMetadata(&resp)
	}
	free := limiter.Descriptor{Entries: []limiter.Entry{{Key: "free", Value: "x"}}}

	// Both pass: a's values first, b adds its own keys and map entries.
	got := decide(d("a"), d("b"), free)
	want := map[string]any{"name": "service_1", "other": "b", "route": map[string]any{"zone": "a", "tier": "gold"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("both passed: %v, want %v", got, want)
	}
	// b is now over: only a's, exactly, every time (b's merge of the
	// call before must not have stayed in a's maps).
	for i := 0; i < 2; i++ {
		got = decide(d("a"), d("b"))
		want = map[string]any{"name": "service_1", "route": map[string]any{"zone": "a"}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("call %d, b over: %v, want %v", i, got, want)
		}
	}
	if !reflect.DeepEqual(metaA, map[string]any{"name": "service_1", "route": map[string]any{"zone": "a"}}) {
		t.Fatalf("the configured metadata changed: %v", metaA)
	}
	// Writing into a result does not reach the next.
	got["route"].(map[string]any)["zone"] = "changed"
	if got = decide(d("a")); got["route"].(map[string]any)["zone"] != "a" {
		t.Fatalf("a result shares maps with the configuration: %v", got)
	}
	if got = decide(d("b"), free); got != nil {
		t.Fatalf("nothing with metadata passed, got %v", got)
	}
}
