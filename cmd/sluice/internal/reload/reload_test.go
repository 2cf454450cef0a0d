package reload

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/memory"
)

func writeLimits(t *testing.T, path, rpu string) {
	t.Helper()
	body := "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: " + rpu + "}\n"
	if err := os.WriteFile(path+".tmp", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// setup writes a config naming one limit file and returns a loaded
// Reloader over a limiter, the limit file, and the log.
func setup(t *testing.T, watch bool) (*Reloader, *limiter.Limiter, string, *limitertest.SyncBuffer) {
	t.Helper()
	dir := t.TempDir()
	limits := filepath.Join(dir, "api.yaml")
	writeLimits(t, limits, "10")
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
	logs := &limitertest.SyncBuffer{}
	r := New(Options{Path: cfgPath, Getenv: getenv, Limiter: lim, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Watch: watch, WatchInterval: 5 * time.Millisecond})
	if err := r.LoadInitial(cfg); err != nil {
		t.Fatal(err)
	}
	return r, lim, limits, logs
}

// waitVersion waits until the limiter's limits are no longer at version.
func waitVersion(t *testing.T, lim *limiter.Limiter, version string, logs *limitertest.SyncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for lim.Limits().Version() == version {
		if time.Now().After(deadline) {
			t.Fatalf("limits not reloaded; log:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return lim.Limits().Version()
}

// TestOpenCloseWatch: between Open and Close a changed file is reloaded;
// Close ends the goroutine, after which a change is not.
func TestOpenCloseWatch(t *testing.T) {
	// os/signal starts one goroutine for the process on first use; start
	// it before counting.
	warm := make(chan os.Signal, 1)
	signal.Notify(warm, os.Interrupt)
	signal.Stop(warm)
	before := runtime.NumGoroutine()
	r, lim, limits, logs := setup(t, true)
	v0 := lim.Limits().Version()
	if err := r.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Open(context.Background()); err == nil {
		t.Error("a second Open succeeded")
	}
	writeLimits(t, limits, "20")
	v1 := waitVersion(t, lim, v0, logs)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := runtime.NumGoroutine(); n > before {
		// The goroutine has returned when Close does; give the runtime's
		// own bookkeeping a moment before naming a leak.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines before Open, %d after Close", before, n)
		}
	}
	writeLimits(t, limits, "30")
	// Many watch intervals: a goroutine left running would reload.
	time.Sleep(200 * time.Millisecond)
	if v := lim.Limits().Version(); v != v1 {
		t.Errorf("limits reloaded after Close; log:\n%s", logs.String())
	}
	// The admin API's reload still works without the goroutine.
	if v, err := r.ReloadNow(); err != nil || v == v1 || r.Status().Version != v {
		t.Errorf("ReloadNow = %q, %v; status %+v", v, err, r.Status())
	}
}

// TestOpenRefusesBadInterval: watching with no interval is an error, not
// a ticker panic.
func TestOpenRefusesBadInterval(t *testing.T) {
	r, _, _, _ := setup(t, true)
	r.interval = 0
	if err := r.Open(context.Background()); err == nil {
		r.Close(context.Background())
		t.Fatal("Open with a zero watch interval succeeded")
	}
}

// TestReloadUsesLoad: a reload reads the configuration with Options.Load
// (compat mode's loader), so what that loader sets, such as the charging
// default, survives a reload.
func TestReloadUsesLoad(t *testing.T) {
	dir := t.TempDir()
	limits := filepath.Join(dir, "api.yaml")
	writeLimits(t, limits, "10")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("limits: {path: api.yaml}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(string) string { return "" }
	load := func(path string, getenv func(string) string) (*config.Config, error) {
		return config.LoadWith(path, getenv, func(c *config.Config) config.Errors {
			c.Limits.DefaultCharge = "usage"
			return nil
		})
	}
	cfg, err := load(cfgPath, getenv)
	if err != nil {
		t.Fatal(err)
	}
	lim := limiter.New(memory.New(nil), limiter.Config{})
	r := New(Options{Path: cfgPath, Getenv: getenv, Load: load, Limiter: lim, Logger: slog.New(slog.DiscardHandler)})
	if err := r.LoadInitial(cfg); err != nil {
		t.Fatal(err)
	}
	charge := func() limiter.Charge {
		rule, _ := lim.Limits().Match("api", []limiter.Entry{{Key: "tenant", Value: "a"}}, nil)
		return rule.Limit.Charge
	}
	if got := charge(); got != limiter.ChargeUsage {
		t.Fatalf("first load: %v, want usage", got)
	}
	writeLimits(t, limits, "20")
	if _, err := r.ReloadNow(); err != nil {
		t.Fatal(err)
	}
	if got := charge(); got != limiter.ChargeUsage {
		t.Fatalf("after a reload: %v, want usage", got)
	}
}
