package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/compat"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/reload"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/tracing"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/limiter/postgres"
	"github.com/sluice-rl/sluice/limiter/redis"
	"github.com/sluice-rl/sluice/limiter/xds"
	"github.com/sluice-rl/sluice/limiter/yamlconf"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"
)

// serve runs the service until ctx ends, then shuts down in order: the
// server drains and stops, the reloader stops, the store closes.
func serve(ctx context.Context, path string, o options) error {
	getenv, stderr := o.getenv, o.stderr
	var (
		cfg *config.Config
		rep compat.Report
		err error
	)
	if o.compat != "" {
		cfg, rep, err = compat.Load(path, getenv)
	} else {
		cfg, err = config.Load(path, getenv)
	}
	if err != nil {
		printErrors(stderr, err)
		return exitError{1}
	}
	log := newLogger(cfg.Log, stderr)
	if o.compat != "" {
		log.Warn("compat mode: envoyproxy/ratelimit's environment settings apply", "mode", o.compat)
		if len(rep.Ignored) > 0 {
			log.Warn("envoyproxy/ratelimit settings not implemented, ignored", "settings", strings.Join(rep.Ignored, ", "))
		}
		for _, n := range rep.Notes {
			log.Warn(n)
		}
	}
	if path == "" {
		log.Info("no config file; using built-in defaults")
	} else {
		log.Info("config loaded", "file", path)
	}
	for _, w := range cfg.Warnings() {
		log.Warn("deprecated setting", "warning", w.Error())
	}
	if os.Getenv("GOGC") == "" { // the runtime reads the real environment
		defer debug.SetGCPercent(debug.SetGCPercent(cfg.Runtime.GCPercent))
	}

	// One registry for every metric; the parts count into m.
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: version, Revision: buildRevision(),
		Logger: log.With("component", "metrics")})

	// Tracing first, so that its flush comes last: after the server has
	// drained, every span has ended.
	var tracer trace.Tracer
	if cfg.Tracing.Enabled {
		tp, err := tracing.New(ctx, cfg.Tracing)
		if err != nil {
			return err
		}
		defer func() {
			if err := tp.Shutdown(ctx); err != nil {
				log.Warn("tracing shutdown", "err", err)
			}
		}()
		tracer = tp.Tracer()
		log.Info("tracing: OTLP export on", "protocol", cfg.Tracing.Protocol, "sampling_ratio", cfg.Tracing.SamplingRatio)
	}

	st, err := openStore(cfg, log, m, tracer)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.close(); err != nil {
			log.Warn("close store", "store", st.name, "err", err)
		}
	}()
	lim := limiter.New(st.store, limiter.Config{KeyPrefix: cfg.Redis.KeyPrefix, Bounds: cfg.Bounds()})
	xcfg := cfg.Limits.XDS
	ro := reload.Options{Path: path, Getenv: getenv, Limiter: lim, Logger: log, Metrics: m,
		Watch: cfg.Limits.Watch, WatchInterval: cfg.Limits.WatchInterval,
		XDS: xcfg.Enabled(), StartWithoutXDS: xcfg.StartWithoutConfig}
	if o.compat != "" {
		ro.Load = func(path string, getenv func(string) string) (*config.Config, error) {
			cfg, _, err := compat.Load(path, getenv)
			return cfg, err
		}
	}
	rl := reload.New(ro)
	if err := rl.LoadInitial(cfg); err != nil {
		printErrors(stderr, err)
		return exitError{1}
	}

	checks := st.checks
	var (
		xc  *xds.Client
		srv *server.Server // set before the xDS client opens
	)
	if xcfg.Enabled() {
		xc, err = xds.New(xcfg, xds.Options{Logger: log,
			Apply: func(u xds.Update) error {
				if err := rl.SetXDS(u.Version, u.Domains); err != nil {
					return err
				}
				// The first config makes the server ready: gRPC health
				// says so now, not at the next check.
				srv.RefreshHealth()
				return nil
			}})
		if err != nil {
			return yamlconf.Under("limits.xds", err)
		}
		// The last limits keep serving without the control plane: its
		// loss is a warning, never a failure.
		checks = append(checks, server.Check{Name: "xds", Fn: xc.Check, WarnOnly: true, Address: xcfg.Server})
		log.Info("limits from xDS", "server", xcfg.Server, "node_id", xcfg.NodeID, "tls", xcfg.TLS.Enabled,
			"start_without_config", xcfg.StartWithoutConfig)
	}
	var (
		pg     *pgBackend
		syncer *postgres.Syncer
	)
	if cfg.Postgres.Enabled() {
		pg, err = openPostgres(cfg, log, m)
		if err != nil {
			return err
		}
		defer pg.close()
		// Every replica follows the overrides: the limits in force are
		// recompiled, config and overrides merged, on each new set.
		syncer = postgres.NewSyncer(pg.db, postgres.SyncConfig{
			Interval:   cfg.Postgres.SyncInterval,
			Logger:     log,
			OnSnapshot: func(s *postgres.Snapshot) { rl.SetOverrides(s.Overrides) },
		})
		syncer.Start(context.WithoutCancel(ctx))
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := syncer.Close(cctx); err != nil {
				log.Warn("close overrides syncer", "err", err)
			}
		}()
		pg.check.Overrides = func() int { return len(syncer.Snapshot().Overrides) }
		m.SetOverrides(pg.check.Overrides)
		checks = append(checks, pg.check)
	}

	srv, err = server.New(cfg.Config, lim, server.Options{
		Logger:       log.With("component", "server"),
		Checks:       checks,
		Version:      version,
		FailureMode:  st.failureMode,
		ConfigStatus: rl.Status,
		AdminToken:   cfg.AdminToken,
		Metrics:      m,
		Tracer:       tracer,
	})
	if err != nil {
		return err
	}
	// applyOverrides reloads the overrides and waits until this replica
	// decides with them, bounded by a load's own queries.
	applyOverrides := func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 4*cfg.Postgres.QueryTimeout)
		defer cancel()
		if err := syncer.ResyncWait(ctx); err != nil {
			log.Warn("overrides not reloaded now; the next notification or sync applies them", "err", err.Error())
		}
	}
	if pg != nil {
		srv.HandleOverrides(server.OverridesOptions{Store: pg.db, Breaker: pg.breaker, Changed: applyOverrides})
	}
	srv.HandleConfig(server.ConfigOptions{
		Effective: rl.Effective,
		Reload: func() (string, error) {
			if syncer != nil {
				applyOverrides(context.Background())
			}
			return rl.ReloadNow()
		},
	})
	if err := srv.Listen(); err != nil {
		return err
	}
	if o.onListen != nil {
		o.onListen(srv.GRPCAddr(), srv.HTTPAddr(), srv.AdminAddr())
	}

	// Reloads start once serving can: SIGHUP and file changes until the
	// server has stopped.
	if err := rl.Open(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer rl.Close(context.WithoutCancel(ctx))
	if xc != nil {
		if err := xc.Open(context.WithoutCancel(ctx)); err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := xc.Close(cctx); err != nil {
				log.Warn("close xds client", "err", err)
			}
		}()
	}

	return srv.Run(ctx)
}

// store is the chosen limiter.Store with what the server and shutdown need.
type store struct {
	name        string
	store       limiter.Store
	checks      []server.Check
	failureMode string // "" for the embedded store
	close       func() error
}

// openStore builds the store: the embedded memory store without a Redis
// URL; otherwise Redis behind its breaker, wrapped in the failure mode. It
// does not connect, so Sluice starts while Redis is down.
func openStore(cfg *config.Config, log *slog.Logger, m *metrics.Metrics, tr trace.Tracer) (*store, error) {
	if cfg.Redis.URL == "" {
		ms, err := newMemoryStore("memory", cfg, m, tr)
		if err != nil {
			return nil, err
		}
		log.Info("store: embedded memory store", "max_buckets", ms.MaxBuckets())
		return &store{name: "memory", store: m.Store("memory", ms), close: func() error { return nil }}, nil
	}
	redis.SetLogger(log.With("component", "redis-client"))
	mode, err := limiter.ParseFailureMode(cfg.Redis.FailureMode)
	if err != nil {
		return nil, fmt.Errorf("redis.failure_mode: %w", err)
	}
	br, err := newBreaker("redis", cfg.Redis.Breaker, log, m)
	if err != nil {
		return nil, err
	}
	rs, err := redis.New(cfg.Redis.Config, redis.WithGuard(br), redis.WithBatchObserver(m.ObserveBatchSize),
		redis.WithTracer(tr))
	if err != nil {
		return nil, yamlconf.Under("redis", err)
	}
	if rs.Mode() == redis.ModeCluster {
		m.WatchRefunds(func() metrics.RefundStats {
			st := rs.RefundStats()
			return metrics.RefundStats{Calls: st.Calls, Retried: st.Retried, Failed: st.Failed, Dropped: st.Dropped}
		})
	}
	// The deny cache sits between the failure mode and Redis: it learns
	// only from Redis's answers.
	var primary = m.Store("redis", rs)
	if cfg.Redis.DenyCacheSize > 0 {
		dc := limiter.NewDenyCache(primary, limiter.DenyCacheConfig{Size: cfg.Redis.DenyCacheSize})
		m.SetLocalCacheHits(func() uint64 { return dc.Stats().Hits })
		primary = dc
	}
	local, err := newMemoryStore("local", cfg, m, tr)
	if err != nil {
		rs.Close()
		return nil, err
	}
	fo, err := limiter.NewFailover(primary, limiter.FailoverConfig{
		Mode:          mode,
		LocalFraction: cfg.Redis.LocalFraction,
		Local:         m.Store("local", local),
		OnFailover:    m.FailureModeDecision,
	})
	if err != nil {
		rs.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	m.WatchFailover(mode, fo.Counts)
	log.Info("store: redis", "url", rs.URL(), "mode", rs.Mode(), "batching", rs.Batching(),
		"deny_cache_size", cfg.Redis.DenyCacheSize, "failure_mode", mode.String(),
		"local_fraction", cfg.Redis.LocalFraction, "timeout", rs.Timeout().String())
	return &store{
		name:  "redis",
		store: fo,
		checks: []server.Check{{
			Name: "redis",
			Fn:   rs.Ping, // not through the breaker: the check sees Redis itself
			// Without Redis, local and allow still decide; error does not.
			Optional: mode != limiter.FailError,
			Breaker:  br,
			Mode:     rs.Mode(),
			Address:  rs.Addr(),
		}},
		failureMode: mode.String(),
		close:       rs.Close,
	}, nil
}

// newMemoryStore builds a memory store bounded by memory.max_buckets and
// exports its bucket count, evictions and forgotten debt under name; with
// a tracer (nil: none) its calls are spans.
func newMemoryStore(name string, cfg *config.Config, m *metrics.Metrics, tr trace.Tracer) (*memory.Store, error) {
	ms, err := memory.NewWithConfig(nil, cfg.Memory)
	if err != nil {
		return nil, fmt.Errorf("memory.%w", err)
	}
	if tr != nil {
		ms.SetTracer(tr)
	}
	m.WatchMemoryStore(name, func() metrics.MemoryStats {
		st := ms.Stats()
		return metrics.MemoryStats{Buckets: st.Buckets, Evictions: st.Evictions, EvictedDebt: st.EvictedDebt}
	})
	return ms, nil
}

// pgBackend is the Postgres pool with its breaker and health check.
type pgBackend struct {
	db      *postgres.DB
	breaker *breaker.Breaker
	check   server.Check
	close   func()
}

// openPostgres prepares the Postgres pool (without connecting) and its
// health check, SELECT 1 through the Postgres breaker. Postgres is never on
// the request path, so its check is optional: down, it makes health warn.
func openPostgres(cfg *config.Config, log *slog.Logger, m *metrics.Metrics) (*pgBackend, error) {
	br, err := newBreaker("postgres", cfg.Postgres.Breaker, log, m)
	if err != nil {
		return nil, err
	}
	db, err := postgres.Open(cfg.Postgres.Config)
	if err != nil {
		return nil, yamlconf.Under("postgres", err)
	}
	log.Info("postgres", "dsn", db.DSN())
	g := &guardedCheck{br: br, fn: db.Ping}
	return &pgBackend{
		db:      db,
		breaker: br,
		check: server.Check{
			Name:     "postgres",
			Fn:       g.check,
			Optional: true,
			Breaker:  br,
			Address:  db.Addr(),
		},
		close: db.Close,
	}, nil
}

// guardedCheck runs a health check through a breaker. While the breaker
// is open the check fails at once, naming the last real error. It is
// called from one goroutine, the server's check loop.
type guardedCheck struct {
	br   *breaker.Breaker
	fn   func(ctx context.Context) error
	last error
}

func (g *guardedCheck) check(ctx context.Context) error {
	err := g.br.Do(ctx, g.fn)
	if errors.Is(err, breaker.ErrOpen) {
		if g.last != nil {
			return fmt.Errorf("%w; last error: %w", err, g.last)
		}
		return err
	}
	if err != nil {
		g.last = err
	}
	return err
}

// newBreaker makes the breaker named name, logging each state change.
func newBreaker(name string, cfg breaker.Config, log *slog.Logger, m *metrics.Metrics) (*breaker.Breaker, error) {
	blog := log.With("component", "breaker")
	cfg.OnStateChange = func(name string, from, to breaker.State) {
		m.BreakerTransition(name, from, to)
		level := slog.LevelInfo
		if to == breaker.StateOpen {
			level = slog.LevelWarn
		}
		blog.Log(context.Background(), level, "breaker state change", "breaker", name, "from", from.String(), "to", to.String())
	}
	b, err := breaker.New(name, cfg)
	if err != nil {
		return nil, yamlconf.Under(name+".breaker", err)
	}
	m.WatchBreaker(b)
	return b, nil
}

func newLogger(c config.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	switch strings.ToLower(c.Level) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
