//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/xds/xdstest"
	"github.com/sluice-rl/sluice/server"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// ratelimitBinary builds cmd/sluice once (static and -trimpath, as the
// image and the deploy tests build it, to share their build cache) and
// returns a symlink to it named ratelimit, as Envoy Gateway's image has.
func ratelimitBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-xds-test")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "sluice")
		cmd := exec.Command("go", "build", "-trimpath", "-o", builtBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build sluice: %v", buildErr)
	}
	link := filepath.Join(t.TempDir(), "ratelimit")
	if err := os.Symlink(builtBin, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// proc is the ratelimit process a test started.
type proc struct {
	cmd  *exec.Cmd
	logs *limitertest.SyncBuffer
	done chan error
}

// startRatelimit runs bin with exactly env (no other variable), stopped
// by its PID at the test's end.
func startRatelimit(t *testing.T, bin string, env map[string]string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin), logs: &limitertest.SyncBuffer{}, done: make(chan error, 1)}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { _ = p.stop(t) })
	return p
}

// stop sends SIGTERM and waits for the exit: the process must end on its
// own, its goroutines stopped in order.
func (p *proc) stop(t *testing.T) error {
	if p.done == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done = nil
		return err
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		if err := <-p.done; err != nil {
			t.Logf("killed: %v", err)
		}
		p.done = nil
		t.Errorf("ratelimit did not exit on SIGTERM\n%s", p.logs.String())
		return fmt.Errorf("killed")
	}
}

// envoyGatewayEnv is the environment Envoy Gateway gives its rate-limit
// Deployment (internal/infrastructure/kubernetes/ratelimit/resource.go),
// with loopback addresses and the test's files in place of /certs.
func envoyGatewayEnv(certs *xdstest.Certs, cpAddr, redisAddr, httpAddr, grpcAddr, promAddr string) map[string]string {
	host := func(a string) (string, string) {
		i := strings.LastIndexByte(a, ':')
		return a[:i], a[i+1:]
	}
	h, hp := host(httpAddr)
	_, gp := host(grpcAddr)
	return map[string]string{
		"RUNTIME_ROOT": "/data", "RUNTIME_SUBDIRECTORY": "ratelimit", "RUNTIME_IGNOREDOTFILES": "true",
		"RUNTIME_WATCH_ROOT": "false", "LOG_LEVEL": "info", "USE_STATSD": "false",
		"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_URL": cpAddr, "CONFIG_GRPC_XDS_NODE_ID": "envoy-ratelimit",
		"GRPC_SERVER_USE_TLS": "true", "GRPC_SERVER_TLS_CERT": certs.Cert, "GRPC_SERVER_TLS_KEY": certs.Key,
		"GRPC_SERVER_TLS_CA_CERT":        certs.CA,
		"CONFIG_GRPC_XDS_SERVER_USE_TLS": "true", "CONFIG_GRPC_XDS_CLIENT_TLS_CERT": certs.Cert,
		"CONFIG_GRPC_XDS_CLIENT_TLS_KEY": certs.Key, "CONFIG_GRPC_XDS_SERVER_TLS_CACERT": certs.CA,
		"FORCE_START_WITHOUT_INITIAL_CONFIG": "true",
		"REDIS_SOCKET_TYPE":                  "tcp", "REDIS_URL": redisAddr,
		"USE_PROMETHEUS": "true", "PROMETHEUS_ADDR": promAddr, "PROMETHEUS_MAPPER_YAML": "/etc/statsd-exporter/conf.yaml",
		// Loopback and free ports in place of 0.0.0.0:8080/8081; short
		// reconnects so the test is quick.
		"HOST": h, "PORT": hp, "GRPC_HOST": h, "GRPC_PORT": gp,
		"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL": "200ms", "XDS_CLIENT_BACKOFF_MAX_INTERVAL": "1s",
	}
}

// egSnapshot is an Envoy Gateway-shaped snapshot: two listeners (domains),
// route-keyed nested descriptors, a masked_remote_address, header and
// method matches, MONTH and YEAR units, one rule in shadow mode. perMethod
// is the method rule's limit, changed by an update.
func egSnapshot(perMethod uint32) []*rlsconfv3.RateLimitConfig {
	shadow := xdstest.Match("rule-2-match-0", 1, xdstest.Month)
	shadow.ShadowMode = true
	return []*rlsconfv3.RateLimitConfig{
		xdstest.Config("default/eg/http",
			xdstest.Route("httproute/default/backend/rule/0",
				xdstest.Match("rule-0-match-0", 0, 0, xdstest.MaskedRemoteAddress("192.168.0.0/16", 2, xdstest.Year)),
				xdstest.Match("rule-1-method", perMethod, xdstest.Month),
				shadow)),
		xdstest.Config("default/eg/https",
			xdstest.Route("httproute/default/admin/rule/0",
				xdstest.Match("rule-0-match-0", 1, xdstest.Month))),
	}
}

type entry = [2]string

// ask sends one request of one descriptor per entry list.
func ask(t *testing.T, c rlsv3.RateLimitServiceClient, domain string, descs ...[]entry) (*rlsv3.RateLimitResponse, error) {
	t.Helper()
	req := &rlsv3.RateLimitRequest{Domain: domain}
	for _, es := range descs {
		d := &ratelimitv3.RateLimitDescriptor{}
		for _, e := range es {
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: e[0], Value: e[1]})
		}
		req.Descriptors = append(req.Descriptors, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.ShouldRateLimit(ctx, req)
}

func detailed(t *testing.T, httpAddr string) (int, server.DetailedHealth) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/health/detailed")
	if err != nil {
		return 0, server.DetailedHealth{}
	}
	defer resp.Body.Close()
	var h server.DetailedHealth
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("/health/detailed: %v", err)
	}
	return resp.StatusCode, h
}

// TestXDSEnvoyGateway runs the binary as ratelimit with Envoy Gateway's
// environment against go-control-plane's server over mutual TLS, and
// checks: it serves at once (FORCE_START_WITHOUT_INITIAL_CONFIG); the
// snapshot's decisions; an update; an invalid push NACKed with its error
// while the last config serves; Prometheus on PROMETHEUS_ADDR; the loss of
// the control plane (last config serves, health up with a note); SIGTERM
// ends it.
func TestXDSEnvoyGateway(t *testing.T) {
	bin := ratelimitBinary(t)
	redisAddr := limitertest.StartRedis(t)
	certs := xdstest.WriteCerts(t, t.TempDir())
	cp := xdstest.Start(t, "", certs.ServerTLS(t))
	httpAddr, grpcAddr, promAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	p := startRatelimit(t, bin, envoyGatewayEnv(certs, cp.Addr, redisAddr, httpAddr, grpcAddr, promAddr))
	logs := p.logs.String

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(certs.ClientTLS(t))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rl := rlsv3.NewRateLimitServiceClient(conn)

	const http1, https = "default/eg/http", "default/eg/https"
	route := entry{"httproute/default/backend/rule/0", "httproute/default/backend/rule/0"}
	cidr := []entry{route, {"rule-0-match-0", "rule-0-match-0"}, {"masked_remote_address", "192.168.0.0/16"}}
	method := []entry{route, {"rule-1-method", "rule-1-method"}}
	shadow := []entry{route, {"rule-2-match-0", "rule-2-match-0"}}
	admin := []entry{{"httproute/default/admin/rule/0", "httproute/default/admin/rule/0"}, {"rule-0-match-0", "rule-0-match-0"}}

	// Started without a config: OK for every domain, at once.
	limitertest.Eventually(t, 10*time.Second, "OK before any config", func() error {
		resp, err := ask(t, rl, http1, cidr)
		if err != nil {
			return err
		}
		if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.Statuses[0].GetCurrentLimit() != nil {
			return fmt.Errorf("before config: %v", resp)
		}
		return nil
	})

	cp.Set(t, "envoy-ratelimit", "v1", egSnapshot(3)...)
	limitertest.Eventually(t, 10*time.Second, "v1 ACKed", func() bool { return slices.Contains(cp.ACKs(), "v1") })
	if n := cp.LastNode(); n.GetId() != "envoy-ratelimit" {
		t.Errorf("node %v", n)
	}
	codes := func(domain string, d []entry, n int) []rlsv3.RateLimitResponse_Code {
		var out []rlsv3.RateLimitResponse_Code
		for range n {
			resp, err := ask(t, rl, domain, d)
			if err != nil {
				t.Fatalf("ShouldRateLimit: %v\n%s", err, logs())
			}
			out = append(out, resp.GetOverallCode())
		}
		return out
	}
	ok, over := rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	for _, tc := range []struct {
		name   string
		domain string
		d      []entry
		want   []rlsv3.RateLimitResponse_Code
	}{
		{"masked_remote_address 2/year", http1, cidr, []rlsv3.RateLimitResponse_Code{ok, ok, over}},
		{"method 3/month", http1, method, []rlsv3.RateLimitResponse_Code{ok, ok, ok, over}},
		{"shadow 1/month never denies", http1, shadow, []rlsv3.RateLimitResponse_Code{ok, ok, ok}},
		{"second domain 1/month", https, admin, []rlsv3.RateLimitResponse_Code{ok, over}},
	} {
		if got := codes(tc.domain, tc.d, len(tc.want)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	resp, err := ask(t, rl, http1, cidr)
	if err != nil {
		t.Fatal(err)
	}
	if l := resp.Statuses[0].GetCurrentLimit(); l.GetRequestsPerUnit() != 2 || l.GetUnit() != rlsv3.RateLimitResponse_RateLimit_YEAR {
		t.Errorf("current_limit %v, want 2 per YEAR", l)
	}

	// An update: the method rule's limit goes from 3 to 5 a month.
	cp.Set(t, "envoy-ratelimit", "v2", egSnapshot(5)...)
	limitertest.Eventually(t, 10*time.Second, "v2 applied", func() error {
		resp, err := ask(t, rl, http1, method)
		if err != nil {
			return err
		}
		if got := resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit(); got != 5 {
			return fmt.Errorf("method limit %d, want 5", got)
		}
		return nil
	})

	// An invalid push (a descriptor without a key) is NACKed with the
	// error; v2 keeps serving.
	bad := egSnapshot(7)
	bad[1].Descriptors[0].Descriptors[0].Key = ""
	cp.Set(t, "envoy-ratelimit", "v3", bad...)
	limitertest.Eventually(t, 10*time.Second, "v3 NACKed", func() bool { return len(cp.NACKs()) > 0 })
	if n := cp.NACKs()[0]; !strings.Contains(n, "xds:default/eg/https: descriptors[0].descriptors[0].key: must not be empty") {
		t.Errorf("NACK detail %q", n)
	}
	if resp, err := ask(t, rl, http1, method); err != nil || resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit() != 5 {
		t.Errorf("after the NACK: %v %v, want v2's limit 5", resp, err)
	}
	code, h := detailed(t, httpAddr)
	if code != 200 || h.Config.XDSVersion != "v2" || h.Config.Source != "xds" || !strings.HasPrefix(h.Config.Version, "sha256:") {
		t.Errorf("/health/detailed %d config %+v", code, h.Config)
	}
	sha := strings.TrimPrefix(h.Config.Version, "sha256:")

	// Prometheus on PROMETHEUS_ADDR: the limits' source, version, digest.
	code, body := httpGet(t, "http://"+promAddr+"/metrics")
	want := fmt.Sprintf(`sluice_limits_info{sha256=%q,source="xds",version="v2"} 1`, sha)
	if code != 200 || !strings.Contains(body, want) || !strings.Contains(body, `sluice_decisions_total{code="over_limit"`) {
		t.Errorf("PROMETHEUS_ADDR /metrics %d: no %s or over_limit decisions", code, want)
	}

	// The control plane goes away: v2 keeps serving, health stays up and
	// says since when the control plane is unreachable.
	cp.Stop()
	limitertest.Eventually(t, 10*time.Second, "xds check warns", func() error {
		code, h := detailed(t, httpAddr)
		x := h.Checks["xds"]
		if code != 200 || x.Status != server.StatusWarn || x.LastError == nil || !strings.Contains(*x.LastError, "unreachable since") {
			return fmt.Errorf("%d %+v", code, x)
		}
		return nil
	})
	if code, body := httpGet(t, "http://"+httpAddr+"/healthcheck"); code != 200 || body != "OK" {
		t.Errorf("/healthcheck %d %q without the control plane", code, body)
	}
	if got := codes(https, admin, 1); got[0] != over {
		t.Errorf("second domain without the control plane: %v, want the v2 limit (over)", got)
	}
	// Reconnecting stays cheap: a process that spins on a dead stream
	// uses tens of percent of a core; the bound here is loose for a busy
	// machine (TestXDSControlPlaneAwayCPU measures the real figure).
	if pct, _ := cpuShare(t, p.cmd.Process.Pid, 3*time.Second); pct > 25 {
		t.Errorf("%.1f%% of a core over 3 s while the control plane is away, want well under 25%%", pct)
	}
	if err := p.stop(t); err != nil {
		t.Errorf("exit: %v\n%s", err, logs())
	}
}

// TestXDSWaitsForInitialConfig: without FORCE_START_WITHOUT_INITIAL_CONFIG
// the listeners bind but nothing is ready until the first config:
// /healthcheck 503, gRPC health NOT_SERVING, ShouldRateLimit UNAVAILABLE;
// then all three turn, gRPC health at once (not at the next check).
func TestXDSWaitsForInitialConfig(t *testing.T) {
	cp := xdstest.Start(t, "", nil)
	env := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0", "GRPC_HOST": "127.0.0.1", "GRPC_PORT": "0", "LOG_LEVEL": "debug",
		"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "127.0.0.1:1", "USE_STATSD": "false",
		"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_URL": cp.Addr, "CONFIG_GRPC_XDS_NODE_ID": "rl",
		"CONFIG_GRPC_XDS_NODE_METADATA": "cluster=edge",
	}
	// Health checks an hour apart: gRPC health turns SERVING on the first
	// config itself, not at a later check.
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte("health: {check_interval: 1h}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startServe(t, func(ctx context.Context, o options) error {
		o.getenv = func(k string) string { return env[k] }
		return run(ctx, []string{"serve", "-compat", "envoy-ratelimit", "-config", cfgFile}, o)
	})
	hc := healthpb.NewHealthClient(r.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: server.ServiceName}); err != nil ||
		st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health before config: %v %v", st, err)
	}
	if code, _ := httpGet(t, "http://"+r.http+"/healthcheck"); code != 503 {
		t.Errorf("/healthcheck before config: %d, want 503", code)
	}
	if _, err := ask(t, r.client, "d", []entry{{"k", "v"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("ShouldRateLimit before config: %v, want UNAVAILABLE", err)
	}

	cp.Set(t, "rl", "1", xdstest.Config("d", xdstest.Match("k", 1, xdstest.Year)))
	limitertest.Eventually(t, 10*time.Second, "ready after the first config", func() error {
		st, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: server.ServiceName})
		if err != nil {
			return err
		}
		if st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("gRPC health %v", st)
		}
		if code, body := httpGet(t, "http://"+r.http+"/healthcheck"); code != 200 {
			return fmt.Errorf("/healthcheck %d %q", code, body)
		}
		return nil
	})
	if md := cp.LastNode().GetMetadata().GetFields()["cluster"].GetStringValue(); md != "edge" {
		t.Errorf("node metadata cluster=%q, want edge", md)
	}
	resp, err := ask(t, r.client, "d", []entry{{"k", "k"}})
	if err != nil || resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit() != 1 {
		t.Errorf("after config: %v %v", resp, err)
	}
}

// TestXDSControlPlaneAwayCPU measures the CPU the process uses over 60 s
// while its control plane is unreachable (EG's defaults: backoff 10s to
// 60s). Opt-in (SLUICE_XDS_CPU=1): it takes a minute.
func TestXDSControlPlaneAwayCPU(t *testing.T) {
	if os.Getenv("SLUICE_XDS_CPU") == "" {
		t.Skip("set SLUICE_XDS_CPU=1 to measure (60 s)")
	}
	bin := ratelimitBinary(t)
	redisAddr := limitertest.StartRedis(t)
	certs := xdstest.WriteCerts(t, t.TempDir())
	cp := xdstest.Start(t, "", certs.ServerTLS(t))
	cp.Set(t, "envoy-ratelimit", "v1", egSnapshot(3)...)
	httpAddr, grpcAddr, promAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	env := envoyGatewayEnv(certs, cp.Addr, redisAddr, httpAddr, grpcAddr, promAddr)
	delete(env, "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL")
	delete(env, "XDS_CLIENT_BACKOFF_MAX_INTERVAL")
	p := startRatelimit(t, bin, env)
	limitertest.Eventually(t, 10*time.Second, "v1 ACKed", func() bool { return slices.Contains(cp.ACKs(), "v1") })
	cp.Stop()
	time.Sleep(2 * time.Second) // the stream's end and the first reconnect
	pct, used := cpuShare(t, p.cmd.Process.Pid, 60*time.Second)
	t.Logf("control plane away: %.2f s CPU in 60 s: %.3f%% of one core", used, pct)
	if pct > 2 {
		t.Errorf("%.3f%% of a core while the control plane is away, want at most 2%%", pct)
	}
	if _, h := detailed(t, httpAddr); h.Checks["xds"].Status != server.StatusWarn {
		t.Errorf("xds check %+v", h.Checks["xds"])
	}
}

// TestXDSNativeWithFiles: in native config, limits.xds and limit files
// serve together; an xDS push of a domain a file defines is NACKed naming
// both sources, and the running limits stay.
func TestXDSNativeWithFiles(t *testing.T) {
	cp := xdstest.Start(t, "", nil)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "limits"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "limits", "api.yaml"),
		"domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: year, requests_per_unit: 4}\n")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf("grpc: {addr: '127.0.0.1:0'}\nhttp: {addr: '127.0.0.1:0'}\n"+
		"limits:\n  path: limits\n  xds: {server: '%s', node_id: sluice, backoff: {initial: 100ms, max: 1s}}\n", cp.Addr))
	r := startServe(t, serveWith(cfg, func(string) string { return "" }))

	cp.Set(t, "sluice", "1", xdstest.Config("gw", xdstest.Match("k", 2, xdstest.Year)))
	limitertest.Eventually(t, 10*time.Second, "1 ACKed", func() bool { return slices.Contains(cp.ACKs(), "1") })
	if a, g := r.limitOf("api", "k", "x"), r.limitOf("gw", "k", "k"); a != 4 || g != 2 {
		t.Fatalf("limits api %d gw %d, want the file's 4 and xDS's 2", a, g)
	}
	cp.Set(t, "sluice", "2", xdstest.Config("gw", xdstest.Match("k", 3, xdstest.Year)),
		xdstest.Config("api", xdstest.Match("k", 9, xdstest.Year)))
	limitertest.Eventually(t, 10*time.Second, "2 NACKed", func() bool { return len(cp.NACKs()) > 0 })
	if n := cp.NACKs()[0]; !strings.Contains(n, `xds:api: domain "api" is already defined by `) ||
		!strings.Contains(n, filepath.Join("limits", "api.yaml")+":1") {
		t.Errorf("NACK detail %q, want both sources named", n)
	}
	if a, g := r.limitOf("api", "k", "x"), r.limitOf("gw", "k", "k"); a != 4 || g != 2 {
		t.Errorf("after the NACK: api %d gw %d, want 4 and 2 still", a, g)
	}
	_, h := detailed(t, r.http)
	if h.Config.Source != "file+xds" || h.Config.XDSVersion != "1" || h.Config.LastError == nil {
		t.Errorf("config %+v", h.Config)
	}
}

// cpuShare is the share of one core (in percent) process pid used over
// window, and the CPU seconds, from utime+stime in /proc/<pid>/stat.
func cpuShare(t *testing.T, pid int, window time.Duration) (pct, used float64) {
	t.Helper()
	ticks := func() float64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseFloat(f[11], 64) // utime, field 14
		s, _ := strconv.ParseFloat(f[12], 64) // stime, field 15
		return u + s
	}
	before, start := ticks(), time.Now()
	time.Sleep(window)
	used = (ticks() - before) / 100 // USER_HZ is 100 on Linux
	return 100 * used / time.Since(start).Seconds(), used
}
