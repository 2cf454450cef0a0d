package reload

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server/metrics"
)

// xdsDomain is a domain as the xDS client hands it over.
func xdsDomain(name string, rpu uint32) limiter.DomainConfig {
	return limiter.DomainConfig{Domain: name, File: "xds:" + name, Descriptors: []limiter.DescriptorConfig{
		{Key: "user", RateLimit: &limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: rpu}}}}
}

// setupXDS is setup with xDS on: the file gives domain api.
func setupXDS(t *testing.T, startWithout bool) (*Reloader, *limiter.Limiter) {
	t.Helper()
	dir := t.TempDir()
	writeLimits(t, filepath.Join(dir, "api.yaml"), "10")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("limits: {path: api.yaml}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(string) string { return "" }
	cfg, err := config.Load(cfgPath, getenv)
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{KeyPrefix: "t:"})
	r := New(Options{Path: cfgPath, Getenv: getenv, Limiter: lim, Logger: slog.New(slog.DiscardHandler),
		XDS: true, StartWithoutXDS: startWithout})
	if err := r.LoadInitial(cfg); err != nil {
		t.Fatal(err)
	}
	return r, lim
}

func limitOf(t *testing.T, lim *limiter.Limiter, domain string) uint32 {
	t.Helper()
	ls := lim.Limits()
	if ls == nil {
		return 0
	}
	for _, key := range []string{"user", "tenant"} {
		if rule, _ := ls.Match(domain, []limiter.Entry{{Key: key, Value: "u"}}, nil); rule != nil {
			return rule.Limit.RequestsPerUnit
		}
	}
	return 0
}

// TestSetXDS: before the first xDS config no limits are set (so nothing
// is ready); a config is swapped in with the files' domains and the
// overrides over it; a domain the files define, or one given twice, is
// refused naming both sources and the running limits stay.
func TestSetXDS(t *testing.T) {
	r, lim := setupXDS(t, false)
	if lim.Limits() != nil {
		t.Fatal("limits set before the first xDS config")
	}
	r.SetOverrides([]limiter.Override{{Domain: "gw", Descriptors: []limiter.OverrideEntry{{Key: "user"}},
		RateLimit: limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 99}}})
	if lim.Limits() != nil {
		t.Fatal("overrides set limits before the first xDS config")
	}
	if err := r.SetXDS("v1", []limiter.DomainConfig{xdsDomain("gw", 5), xdsDomain("other", 7)}); err != nil {
		t.Fatal(err)
	}
	if got := limitOf(t, lim, "gw"); got != 99 {
		t.Errorf("gw limit %d, want the override's 99 over xDS's 5", got)
	}
	if got := limitOf(t, lim, "other"); got != 7 {
		t.Errorf("other limit %d, want 7", got)
	}
	if got := limitOf(t, lim, "api"); got != 10 {
		t.Errorf("api limit %d, want the file's 10", got)
	}
	st := r.Status()
	if st.Source != "file+xds" || st.XDSVersion != "v1" || st.Version != lim.Limits().Version() || st.LastError != nil {
		t.Errorf("status %+v", st)
	}
	good := lim.Limits()

	err := r.SetXDS("v2", []limiter.DomainConfig{xdsDomain("api", 1)})
	if err == nil || !strings.Contains(err.Error(), `xds:api: domain "api" is already defined by `) ||
		!strings.Contains(err.Error(), "api.yaml:1") {
		t.Errorf("file clash: %v", err)
	}
	err = r.SetXDS("v3", []limiter.DomainConfig{xdsDomain("gw", 1), xdsDomain("gw", 2)})
	if err == nil || !strings.Contains(err.Error(), `xds:gw: domain "gw" is already defined by xds:gw`) {
		t.Errorf("xDS twice: %v", err)
	}
	if lim.Limits() != good {
		t.Error("a refused config changed the limits")
	}
	if st := r.Status(); st.XDSVersion != "v1" || st.LastError == nil || !strings.Contains(st.LastError.Error(), `xds version "v3"`) {
		t.Errorf("after refusals: %+v", st)
	}
}

// TestStartWithoutXDS: with start_without_config the files' limits (none
// here but the file's domain) serve at once.
func TestStartWithoutXDS(t *testing.T) {
	_, lim := setupXDS(t, true)
	if lim.Limits() == nil || limitOf(t, lim, "api") != 10 {
		t.Fatal("limits not set at once with start_without_config")
	}
}

// TestLimitsInfoMetric: sluice_limits_info shows the source, the xDS
// version and the digest of the limits in force, from the first load.
func TestLimitsInfoMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	info := func() map[string]string {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "sluice_limits_info" {
				continue
			}
			if len(mf.GetMetric()) != 1 {
				t.Fatalf("%d series, want 1", len(mf.GetMetric()))
			}
			out := map[string]string{}
			for _, l := range mf.GetMetric()[0].GetLabel() {
				out[l.GetName()] = l.GetValue()
			}
			return out
		}
		return nil
	}
	dir := t.TempDir()
	writeLimits(t, filepath.Join(dir, "api.yaml"), "10")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("limits: {path: api.yaml}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{KeyPrefix: "t:"})
	r := New(Options{Path: cfgPath, Getenv: func(string) string { return "" }, Limiter: lim,
		Logger: slog.New(slog.DiscardHandler), Metrics: m, XDS: true, StartWithoutXDS: true})
	if err := r.LoadInitial(cfg); err != nil {
		t.Fatal(err)
	}
	sha := strings.TrimPrefix(lim.Limits().Version(), "sha256:")
	if got := info(); got["source"] != "file+xds" || got["version"] != "" || got["sha256"] != sha {
		t.Errorf("after the first load: %v, want source file+xds, no version, sha256 %s", got, sha)
	}
	if err := r.SetXDS("v7", []limiter.DomainConfig{xdsDomain("gw", 1)}); err != nil {
		t.Fatal(err)
	}
	sha = strings.TrimPrefix(lim.Limits().Version(), "sha256:")
	if got := info(); got["source"] != "file+xds" || got["version"] != "v7" || got["sha256"] != sha {
		t.Errorf("after xDS v7: %v, want version v7, sha256 %s", got, sha)
	}
}
