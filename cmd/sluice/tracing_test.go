package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/gRPC trace collector: it keeps every export
// and the metadata it came with.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu       sync.Mutex
	requests []*collectortrace.ExportTraceServiceRequest
	auth     []string // authorization metadata seen
}

func (o *otlpReceiver) Export(ctx context.Context, in *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests = append(o.requests, in)
	o.auth = append(o.auth, md.Get("authorization")...)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// spans returns every span received, with its resource's attributes.
func (o *otlpReceiver) spans() (spans []*tracepb.Span, resources [][]*commonpb.KeyValue) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.requests {
		for _, rs := range r.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					spans = append(spans, sp)
					resources = append(resources, rs.GetResource().GetAttributes())
				}
			}
		}
	}
	return spans, resources
}

func (o *otlpReceiver) dump(t *testing.T) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	for _, r := range o.requests {
		j, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{}
	g := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(g, rcv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis) // ends when the test stops it
	}()
	t.Cleanup(func() { g.Stop(); <-done })
	return rcv, lis.Addr().String()
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = v.BoolValue
		default:
			m[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return m
}

// TestTracingExportsDecisionSpans serves with tracing on, exporting to an
// in-process OTLP receiver, and sends a decision that carries a W3C
// traceparent, one that carries none and one over /json with a
// traceparent header. The spans arrive only by the shutdown's flush (the
// batcher would wait 5 s), so their arrival shows that shutdown flushes.
// A decision span continues the caller's trace and has the domain, the
// descriptor count and the overall code; the memory store's span is its
// child. The descriptor's value, the admin token and the exporter's
// authorization header appear nowhere in what was exported.
func TestTracingExportsDecisionSpans(t *testing.T) {
	rcv, addr := startReceiver(t)
	const (
		secretValue = "tenant-secret-7d1f93"
		adminToken  = "admin-token-0123456789abcdef0123456789abcdef"
		authHeader  = "Bearer otlp-header-secret-5be2"
	)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization="+strings.ReplaceAll(authHeader, " ", "%20"))
	cfg, _ := testConfigFile(t, `tracing:
  enabled: true
  endpoint: "`+addr+`"
  insecure: true
  service_name: sluice-test
  service_instance_id: replica-1
`)
	env := map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}
	r := startServe(t, serveWith(cfg, func(k string) string { return env[k] }))

	traceID, parentID := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := &rlsv3.RateLimitRequest{Domain: "api", Descriptors: []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "tenant", Value: secretValue}}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	traced := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+parentID+"-01")
	if _, err := r.client.ShouldRateLimit(traced, req); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.ShouldRateLimit(ctx, req); err != nil {
		t.Fatal(err)
	}
	httpTrace, httpParent := "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	body := `{"domain":"api","descriptors":[{"entries":[{"key":"tenant","value":"` + secretValue + `"}]}]}`
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.http+"/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("traceparent", "00-"+httpTrace+"-"+httpParent+"-01")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/json: %d", resp.StatusCode)
	}
	if spans, _ := rcv.spans(); len(spans) != 0 {
		t.Logf("%d spans before shutdown (the batcher sent early)", len(spans))
	}
	if err := r.stop(); err != nil {
		t.Fatalf("serve: %v\n%s", err, r.logs.String())
	}

	spans, resources := rcv.spans()
	var decisions, stores []*tracepb.Span
	for i, sp := range spans {
		ra := attrs(resources[i])
		if ra["service.name"] != "sluice-test" || ra["service.instance.id"] != "replica-1" {
			t.Errorf("resource %v", ra)
		}
		switch sp.GetName() {
		case "ShouldRateLimit":
			decisions = append(decisions, sp)
		case "memory token bucket":
			stores = append(stores, sp)
		default:
			t.Errorf("unexpected span %q", sp.GetName())
		}
	}
	if len(decisions) != 3 || len(stores) != 3 {
		t.Fatalf("%d decision spans and %d store spans, want 3 and 3:\n%s\nlog:\n%s", len(decisions), len(stores), rcv.dump(t), r.logs.String())
	}
	byParent := map[string]*tracepb.Span{}
	for _, d := range decisions {
		a := attrs(d.GetAttributes())
		if a["sluice.domain"] != "api" || a["sluice.descriptors"] != int64(1) || a["sluice.overall_code"] != "OK" {
			t.Errorf("decision attributes %v", a)
		}
		if d.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("decision kind %v", d.GetKind())
		}
		byParent[hex.EncodeToString(d.GetParentSpanId())] = d
	}
	for _, c := range []struct{ trace, parent string }{{traceID, parentID}, {httpTrace, httpParent}} {
		d := byParent[c.parent]
		if d == nil || hex.EncodeToString(d.GetTraceId()) != c.trace {
			t.Errorf("no decision span continues trace %s from span %s: %v", c.trace, c.parent, byParent)
		}
	}
	if root := byParent[""]; root == nil {
		t.Errorf("the call without a traceparent has no root span: %v", byParent)
	}
	for _, s := range stores {
		a := attrs(s.GetAttributes())
		if a["sluice.store"] != "memory" || a["sluice.buckets"] != int64(1) || a["sluice.allowed"] != true {
			t.Errorf("store attributes %v", a)
		}
		found := false
		for _, d := range decisions {
			found = found || bytes.Equal(s.GetParentSpanId(), d.GetSpanId()) && bytes.Equal(s.GetTraceId(), d.GetTraceId())
		}
		if !found {
			t.Errorf("store span %x is no decision span's child", s.GetSpanId())
		}
	}

	rcv.mu.Lock()
	auth := strings.Join(rcv.auth, ",")
	rcv.mu.Unlock()
	if !strings.Contains(auth, authHeader) {
		t.Errorf("the receiver saw authorization %q: the exporter did not send OTEL_EXPORTER_OTLP_HEADERS", auth)
	}
	exported := rcv.dump(t)
	for _, secret := range []string{secretValue, adminToken, "otlp-header-secret", "tenant"} {
		if strings.Contains(exported, secret) {
			t.Errorf("exported spans contain %q:\n%s", secret, exported)
		}
	}
}

// TestTracingOverHTTP exports over OTLP/HTTP to the endpoint given as
// Envoy Gateway gives it, in OTEL_EXPORTER_OTLP_ENDPOINT with an http://
// scheme and no tracing.endpoint: the spans arrive at /v1/traces.
func TestTracingOverHTTP(t *testing.T) {
	var mu sync.Mutex
	var got []*collectortrace.ExportTraceServiceRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		in := &collectortrace.ExportTraceServiceRequest{}
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, in) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, in)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	cfg, _ := testConfigFile(t, "tracing: {enabled: true, protocol: http}\n")
	r := startServe(t, serveWith(cfg, func(string) string { return "" }))
	if r.limitOf("api", "tenant", "a") != 10 {
		t.Fatal("limit not served")
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	names := map[string]int{}
	for _, in := range got {
		for _, rs := range in.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					names[sp.GetName()]++
				}
			}
		}
	}
	if names["ShouldRateLimit"] != 1 || names["memory token bucket"] != 1 {
		t.Errorf("spans received %v, want one decision and one store call\n%s", names, r.logs.String())
	}
}
