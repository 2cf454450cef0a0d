package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/server/metrics"
)

// TestStartupErrorsInOneFormat checks that a configuration problem found
// only when the parts are built (a TLS file that cannot be read, a
// breaker set up in code) names the full config.yaml path, as validation
// does, and not the package's own prefix.
func TestStartupErrorsInOneFormat(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name   string
		mutate func(*config.Config)
		open   func(*config.Config, *slog.Logger, *metrics.Metrics) error
		want   string
	}{
		{"redis tls file", func(c *config.Config) {
			c.Redis.URL = "rediss://127.0.0.1:1"
			c.Redis.TLS.CertFile, c.Redis.TLS.KeyFile = missing, missing
		}, openStoreErr, "redis.tls.cert_file: load key pair: open " + missing},
		{"redis breaker", func(c *config.Config) {
			c.Redis.URL = "redis://127.0.0.1:1"
			c.Redis.Breaker.OpenDuration = 0
		}, openStoreErr, "redis.breaker.open_duration: must be positive, got 0s"},
		{"postgres breaker", func(c *config.Config) {
			c.Postgres.DSN = "postgres://u@127.0.0.1:1/db"
			c.Postgres.Breaker.HalfOpenMaxCalls = 0
		}, openPostgresErr, "postgres.breaker.half_open_max_calls: must be at least 1, got 0"},
		{"postgres dsn", func(c *config.Config) {
			c.Postgres.DSN = "postgres://u@127.0.0.1:1/db?sslmode=nonsense"
		}, openPostgresErr, "postgres.dsn: cannot parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			tc.mutate(&c)
			m := metrics.New(prometheus.NewRegistry(), metrics.Options{})
			err := tc.open(&c, log, m)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant prefix %q", err, tc.want)
			}
		})
	}
}

func openStoreErr(c *config.Config, log *slog.Logger, m *metrics.Metrics) error {
	st, err := openStore(c, log, m, nil)
	if err == nil {
		return st.close()
	}
	return err
}

func openPostgresErr(c *config.Config, log *slog.Logger, m *metrics.Metrics) error {
	pg, err := openPostgres(c, log, m)
	if err == nil {
		pg.close()
	}
	return err
}
