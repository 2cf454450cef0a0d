package deploy_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
)

const (
	envoyFile = "envoy/envoy.yaml"
	limitFile = "envoy/limits/edge.yaml"
)

// validator is what protoc-gen-validate generates on every message.
type validator interface{ ValidateAll() error }

// envoyBootstrap parses envoy.yaml strictly (an unknown field fails) and
// validates it with the rules Envoy itself enforces.
func envoyBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(yamlToJSON(t, envoyFile), &b); err != nil {
		t.Fatalf("%s: %v", envoyFile, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s: %v", envoyFile, err)
	}
	return &b
}

// unpack resolves a typed_config into msg and validates it: the bootstrap's
// own validation does not look inside Any.
func unpack(t *testing.T, a *anypb.Any, msg proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(msg); err != nil {
		t.Fatalf("%s: typed_config %s: %v", envoyFile, a.GetTypeUrl(), err)
	}
	if err := msg.(validator).ValidateAll(); err != nil {
		t.Fatalf("%s: %s: %v", envoyFile, a.GetTypeUrl(), err)
	}
}

// envoyParts is what the tests look at in envoy.yaml.
type envoyParts struct {
	boot       *bootstrapv3.Bootstrap
	hcm        *hcmv3.HttpConnectionManager
	rl         *ratelimitv3.RateLimit
	rateLimits []*routev3.RateLimit // of the virtual hosts and routes
	filters    []string             // HTTP filter names in order
}

func loadEnvoy(t *testing.T) envoyParts {
	t.Helper()
	p := envoyParts{boot: envoyBootstrap(t)}
	listeners := p.boot.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("%s: %d listeners, want 1", envoyFile, len(listeners))
	}
	for _, fc := range listeners[0].GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() != "envoy.filters.network.http_connection_manager" {
				continue
			}
			p.hcm = &hcmv3.HttpConnectionManager{}
			unpack(t, f.GetTypedConfig(), p.hcm)
		}
	}
	if p.hcm == nil {
		t.Fatalf("%s: no http_connection_manager", envoyFile)
	}
	for _, hf := range p.hcm.GetHttpFilters() {
		p.filters = append(p.filters, hf.GetName())
		switch hf.GetName() {
		case "envoy.filters.http.ratelimit":
			p.rl = &ratelimitv3.RateLimit{}
			unpack(t, hf.GetTypedConfig(), p.rl)
		case "envoy.filters.http.router":
			unpack(t, hf.GetTypedConfig(), &routerv3.Router{})
		default:
			t.Errorf("%s: unexpected HTTP filter %s", envoyFile, hf.GetName())
		}
	}
	if p.rl == nil {
		t.Fatalf("%s: no envoy.filters.http.ratelimit filter", envoyFile)
	}
	for _, vh := range p.hcm.GetRouteConfig().GetVirtualHosts() {
		p.rateLimits = append(p.rateLimits, vh.GetRateLimits()...)
		for _, r := range vh.GetRoutes() {
			p.rateLimits = append(p.rateLimits, r.GetRoute().GetRateLimits()...)
		}
	}
	return p
}

func cluster(p envoyParts, name string) *clusterv3.Cluster {
	for _, c := range p.boot.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func TestEnvoyBootstrapValid(t *testing.T) {
	p := loadEnvoy(t)
	if got := p.filters; !slices.Equal(got, []string{"envoy.filters.http.ratelimit", "envoy.filters.http.router"}) {
		t.Errorf("HTTP filters %v: the ratelimit filter must come before the router", got)
	}
	rl := p.rl
	if rl.GetDomain() != "edge" {
		t.Errorf("ratelimit domain %q, want edge", rl.GetDomain())
	}
	if rl.GetTimeout() == nil || rl.GetTimeout().AsDuration() <= 0 {
		t.Errorf("ratelimit timeout not set")
	}
	if rl.GetEnableXRatelimitHeaders() != ratelimitv3.RateLimit_DRAFT_VERSION_03 {
		t.Errorf("enable_x_ratelimit_headers %v, want DRAFT_VERSION_03", rl.GetEnableXRatelimitHeaders())
	}
	if rl.GetRequestType() != "external" {
		t.Errorf("request_type %q, want external", rl.GetRequestType())
	}
	// false is the proto default and so invisible once parsed: the file
	// must spell it out.
	raw := readYAML(t, envoyFile)[0]
	hf := get(raw, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0,
		"typed_config", "http_filters", 0, "typed_config")
	if _, ok := hf.(map[string]any)["failure_mode_deny"]; !ok {
		t.Errorf("failure_mode_deny is not spelled out in the ratelimit filter")
	}
	for _, r := range p.rateLimits {
		if r.GetStage().GetValue() != rl.GetStage() {
			t.Errorf("rate_limits stage %d, filter stage %d: the filter would never send them", r.GetStage().GetValue(), rl.GetStage())
		}
	}

	svc := rl.GetRateLimitService()
	if svc.GetTransportApiVersion().String() != "V3" {
		t.Errorf("rate_limit_service.transport_api_version %v, want V3", svc.GetTransportApiVersion())
	}
	name := svc.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	c := cluster(p, name)
	if c == nil {
		t.Fatalf("rate_limit_service names cluster %q, which is not defined", name)
	}
	opts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if opts == nil {
		t.Fatalf("cluster %s: no HttpProtocolOptions; gRPC needs HTTP/2", name)
	}
	var hpo upstreamhttpv3.HttpProtocolOptions
	unpack(t, opts, &hpo)
	if hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("cluster %s: not HTTP/2", name)
	}
	grpcPort, _ := defaultPorts(t)
	var ports []uint32
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			ports = append(ports, sa.GetPortValue())
			if sa.GetAddress() != "sluice" {
				t.Errorf("cluster %s: endpoint %s, want the sluice service", name, sa.GetAddress())
			}
		}
	}
	if len(ports) == 0 || slices.ContainsFunc(ports, func(p uint32) bool { return int(p) != grpcPort }) {
		t.Errorf("cluster %s: ports %v, want Sluice's gRPC port %d", name, ports, grpcPort)
	}
	hc := c.GetHealthChecks()
	if len(hc) != 1 || hc[0].GetGrpcHealthCheck().GetServiceName() != "envoy.service.ratelimit.v3.RateLimitService" {
		t.Errorf("cluster %s: want a gRPC health check of the RateLimitService", name)
	}
}

// descriptorKeys turns one Envoy rate_limits entry into the keys of the
// descriptor it sends, as envoyproxy/ratelimit would see them.
func descriptorKeys(t *testing.T, r *routev3.RateLimit) []string {
	t.Helper()
	var keys []string
	for _, a := range r.GetActions() {
		switch {
		case a.GetRemoteAddress() != nil:
			keys = append(keys, "remote_address")
		case a.GetMaskedRemoteAddress() != nil:
			keys = append(keys, "masked_remote_address")
		case a.GetRequestHeaders() != nil:
			keys = append(keys, a.GetRequestHeaders().GetDescriptorKey())
		case a.GetGenericKey() != nil:
			k := a.GetGenericKey().GetDescriptorKey()
			if k == "" {
				k = "generic_key"
			}
			keys = append(keys, k)
		case a.GetHeaderValueMatch() != nil:
			k := a.GetHeaderValueMatch().GetDescriptorKey()
			if k == "" {
				k = "header_match"
			}
			keys = append(keys, k)
		default:
			t.Fatalf("rate_limits action %v: not understood by this test", a)
		}
	}
	return keys
}

// limitPaths lists every key path of the limit file that reaches a node
// with a rate_limit.
func limitPaths(ds []limiter.DescriptorConfig, prefix []string, out *[][]string) {
	for _, d := range ds {
		p := append(prefix[:len(prefix):len(prefix)], d.Key)
		if d.RateLimit != nil {
			*out = append(*out, p)
		}
		limitPaths(d.Descriptors, p, out)
	}
}

// TestEnvoyDescriptorsMatchLimits checks both ways that Envoy's descriptors
// and the shipped limit file fit: every descriptor Envoy sends reaches a
// limit, and every limit is reachable by a descriptor Envoy sends.
func TestEnvoyDescriptorsMatchLimits(t *testing.T) {
	p := loadEnvoy(t)
	data, err := os.ReadFile(limitFile)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := limiter.ParseLimitFile(limitFile, data)
	if err != nil {
		t.Fatal(err)
	}
	if dc.Domain != p.rl.GetDomain() {
		t.Fatalf("limit file domain %q, Envoy filter domain %q", dc.Domain, p.rl.GetDomain())
	}
	var paths [][]string
	limitPaths(dc.Descriptors, nil, &paths)
	sent := map[string]bool{}
	if len(p.rateLimits) == 0 {
		t.Fatal("envoy.yaml has no rate_limits")
	}
	for _, r := range p.rateLimits {
		keys := descriptorKeys(t, r)
		sent[strings.Join(keys, "/")] = true
		if !slices.ContainsFunc(paths, func(p []string) bool { return slices.Equal(p, keys) }) {
			t.Errorf("Envoy sends descriptor %v, which no limit in %s has", keys, limitFile)
		}
	}
	for _, path := range paths {
		if !sent[strings.Join(path, "/")] {
			t.Errorf("%s: limit at %v is never sent by envoy.yaml", limitFile, path)
		}
	}

	// Decide what Envoy would send for a few requests, with the real
	// limiter on the shipped limits.
	lims, err := limiter.Compile([]limiter.DomainConfig{dc}, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{})
	lim.SetLimits(lims)
	request := func(path string) *limiter.Request {
		req := &limiter.Request{Domain: dc.Domain}
		for _, r := range p.rateLimits {
			var d limiter.Descriptor
			for _, k := range descriptorKeys(t, r) {
				v := map[string]string{"remote_address": "192.0.2.7", "path": path}[k]
				d.Entries = append(d.Entries, limiter.Entry{Key: k, Value: v})
			}
			req.Descriptors = append(req.Descriptors, d)
		}
		return req
	}
	for _, tc := range []struct {
		path  string
		rules []string // per Envoy descriptor; "" for no limit
	}{
		{"/", []string{"per_client", "", ""}},
		{"/login", []string{"per_client", "login_per_client", ""}},
		{"/api/orders?page=2", []string{"per_client", "", "api_total"}},
		{"/healthz", []string{"per_client", "", "healthz"}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			var resp limiter.Response
			if err := lim.Decide(context.Background(), request(tc.path), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Code != limiter.OK {
				t.Errorf("first request %s: %v", tc.path, resp.Code)
			}
			for i, st := range resp.Statuses {
				got := ""
				if st.Rule != nil {
					got = st.Rule.Path
				}
				if got != tc.rules[i] {
					t.Errorf("descriptor %d: rule %q, want %q", i, got, tc.rules[i])
				}
			}
		})
	}

	// The login limit denies the sixth attempt a minute from one client.
	var resp limiter.Response
	for i := 1; i <= 6; i++ {
		if err := lim.Decide(context.Background(), request("/login"), &resp); err != nil {
			t.Fatal(err)
		}
	}
	if resp.Code != limiter.OverLimit || resp.Statuses[1].Code != limiter.OverLimit {
		t.Errorf("seventh /login in a minute (one already made above): %v, want OVER_LIMIT by login_per_client", resp.Statuses)
	}
}

func TestEnvoyLimitFileChecks(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, "sluice/config.yaml", dir+"/config.yaml")
	copyFile(t, limitFile, dir+"/limits/edge.yaml")
	sluiceCheck(t, dir+"/config.yaml")
}

// TestRateLimitHeadersFromOneSource: Envoy's filter appends its own
// draft-03 headers to those Sluice sends, so the example must not have
// both make them, or clients see every header twice.
func TestRateLimitHeadersFromOneSource(t *testing.T) {
	envoyHeaders := loadEnvoy(t).rl.GetEnableXRatelimitHeaders() != ratelimitv3.RateLimit_OFF
	sluiceHeaders := true // the default
	if v, ok := get(readYAML(t, "sluice/config.yaml")[0], "response_headers", "enabled").(bool); ok {
		sluiceHeaders = v
	}
	if envoyHeaders && sluiceHeaders {
		t.Error("deploy/envoy/envoy.yaml sets enable_x_ratelimit_headers and deploy/sluice/config.yaml leaves " +
			"response_headers on: every X-RateLimit-* header would reach clients twice; turn one off")
	}
	if !envoyHeaders && !sluiceHeaders {
		t.Error("neither Envoy nor Sluice adds the X-RateLimit-* headers in the example")
	}
}
