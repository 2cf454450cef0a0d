//go:build integration

package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/postgres"
)

// TestPingStopStart: Ping follows Postgres going away and coming back,
// on the same DB: the pool reconnects by itself.
func TestPingStopStart(t *testing.T) {
	srv := limitertest.NewPostgresServer(t)
	cfg := postgres.DefaultConfig()
	// Trust authentication ignores the password; it is there to show it
	// never appears in errors.
	cfg.DSN = strings.Replace(srv.DSN, "postgres@", "postgres:"+secret+"@", 1)
	cfg.QueryTimeout = time.Second
	db, err := postgres.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	ctx := context.Background()

	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping a live server: %v", err)
	}
	// Hold connections open, as the overrides code will, so the stop
	// leaves broken ones in the pool.
	var one int
	if err := db.Pool().QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("query through Pool: %v", err)
	}

	srv.Stop()
	start := time.Now()
	err = db.Ping(ctx)
	if err == nil {
		t.Fatal("Ping succeeded with Postgres stopped")
	}
	if d := time.Since(start); d > cfg.QueryTimeout+500*time.Millisecond {
		t.Errorf("Ping took %v with Postgres stopped, want at most the query timeout %v", d, cfg.QueryTimeout)
	}
	if !strings.Contains(err.Error(), "ping postgres") {
		t.Errorf("Ping = %q, want it to say what failed", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("Ping error shows the password: %q", err)
	}
	t.Logf("Ping with Postgres stopped: %v", err)

	srv.Start()
	if err := db.Ping(ctx); err != nil {
		// A connection broken by the stop may fail one query; the pool
		// then drops it. The health check runs again at its interval.
		t.Logf("first Ping after restart: %v", err)
		if err := db.Ping(ctx); err != nil {
			t.Fatalf("Ping after Postgres is back: %v", err)
		}
	}
}
