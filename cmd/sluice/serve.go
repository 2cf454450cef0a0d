package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/limiter/redis"
	"github.com/sluice-rl/sluice/server"
)

// listenHookKey carries, in serve's context, a func told the bound
// addresses; tests use it to find :0 ports.
type listenHookKey struct{}

// serve runs the service until ctx ends, then shuts down in order: the
// server drains and stops, the reloader stops, the store closes.
func serve(ctx context.Context, path string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadConfig(path, getenv)
	if err != nil {
		printErrors(stderr, err)
		return exitError{1}
	}
	log := newLogger(cfg.Log, stderr)
	if path == "" {
		log.Info("no config file; using built-in defaults")
	} else {
		log.Info("config loaded", "file", path)
	}

	st, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.close(); err != nil {
			log.Warn("close store", "store", st.name, "err", err)
		}
	}()

	lim := limiter.New(st.store, limiter.Config{KeyPrefix: cfg.Redis.KeyPrefix, Bounds: cfg.Bounds()})
	rl := newReloader(path, getenv, lim, log)
	if err := rl.loadInitial(cfg); err != nil {
		printErrors(stderr, err)
		return exitError{1}
	}

	srv, err := server.New(cfg.Config, lim, server.Options{Logger: log.With("component", "server"), Checks: st.checks})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	if hook, ok := ctx.Value(listenHookKey{}).(func(grpc, http net.Addr)); ok {
		hook(srv.GRPCAddr(), srv.HTTPAddr())
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rctx, stopReloader := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rl.run(rctx, hup, cfg.Limits.Watch, cfg.Limits.WatchInterval)
	}()
	defer func() {
		stopReloader()
		wg.Wait()
	}()

	return srv.Run(ctx)
}

// store is the chosen limiter.Store with what the server and shutdown need.
type store struct {
	name   string
	store  limiter.Store
	checks []server.Check
	close  func() error
}

func openStore(cfg *Config, log *slog.Logger) (*store, error) {
	if cfg.Redis.URL == "" {
		log.Info("store: embedded memory store")
		return &store{name: "memory", store: memory.New(nil), close: func() error { return nil }}, nil
	}
	rs, err := redis.New(cfg.Redis.Config)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	log.Info("store: redis", "url", rs.URL(), "mode", rs.Mode())
	return &store{
		name:   "redis",
		store:  rs,
		checks: []server.Check{{Name: "redis", Fn: rs.Ping}},
		close:  rs.Close,
	}, nil
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
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
