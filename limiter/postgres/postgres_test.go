package postgres_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/postgres"
)

const secret = "pw-s3cret-9f2"

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*postgres.Config)
		field string // "" for valid
	}{
		{name: "default: postgres off", cfg: func(*postgres.Config) {}},
		{name: "url dsn", cfg: func(c *postgres.Config) { c.DSN = "postgres://sluice:" + secret + "@db:5432/sluice" }},
		{name: "key/value dsn", cfg: func(c *postgres.Config) { c.DSN = "host=db user=sluice password=" + secret + " dbname=sluice" }},
		{name: "bad port", cfg: func(c *postgres.Config) { c.DSN = "postgres://sluice:" + secret + "@db:notaport/sluice" }, field: "dsn"},
		{name: "bad keyword/value", cfg: func(c *postgres.Config) { c.DSN = "host=db password='" + secret }, field: "dsn"},
		{name: "bad sslmode", cfg: func(c *postgres.Config) { c.DSN = "postgres://sluice:" + secret + "@db/sluice?sslmode=sometimes" }, field: "dsn"},
		{name: "bad percent-encoding in password", cfg: func(c *postgres.Config) { c.DSN = "postgres://sluice:" + secret + "%zz@db/sluice" }, field: "dsn"},
		{name: "negative max_conns", cfg: func(c *postgres.Config) { c.MaxConns = -1 }, field: "max_conns"},
		{name: "negative connect_timeout", cfg: func(c *postgres.Config) { c.ConnectTimeout = -time.Second }, field: "connect_timeout"},
		{name: "negative query_timeout", cfg: func(c *postgres.Config) { c.QueryTimeout = -time.Second }, field: "query_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := postgres.DefaultConfig()
			tt.cfg(&cfg)
			err := cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate passed, want an error for %s", tt.field)
			}
			var ce *postgres.ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Errorf("Validate = %v, want a *ConfigError for field %s", err, tt.field)
			}
			if !strings.HasPrefix(err.Error(), "postgres."+tt.field+": ") {
				t.Errorf("Validate = %q, want it to start with postgres.%s: ", err, tt.field)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Validate error shows the password: %q", err)
			}
			t.Logf("%v", err)
		})
	}
}

func TestOpenBadDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://sluice:" + secret + "@db:notaport/sluice",
		"postgres://sluice:" + secret + "@db/sluice?sslmode=sometimes",
		"host=db user=sluice password='" + secret,
		"host=db user=sluice password=" + secret + " port=x",
		"",
	} {
		db, err := postgres.Open(postgres.Config{DSN: dsn})
		if err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", postgres.RedactDSN(dsn))
			continue
		}
		if !strings.Contains(err.Error(), "postgres.dsn") {
			t.Errorf("Open(%q) = %q, want it to name postgres.dsn", postgres.RedactDSN(dsn), err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open error shows the password: %q", err)
		}
	}
}

// TestOpenWithoutPostgres: Open does not connect, so Sluice starts while
// Postgres is down; Ping then fails at once with connection refused.
func TestOpenWithoutPostgres(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens here now

	cfg := postgres.DefaultConfig()
	cfg.DSN = "postgres://sluice:" + secret + "@" + addr + "/sluice?sslmode=disable"
	db, err := postgres.Open(cfg)
	if err != nil {
		t.Fatalf("Open with Postgres down: %v", err)
	}
	defer db.Close()
	if strings.Contains(db.DSN(), secret) {
		t.Errorf("DSN() = %q shows the password", db.DSN())
	}
	start := time.Now()
	err = db.Ping(context.Background())
	if err == nil {
		t.Fatal("Ping succeeded with nothing listening")
	}
	if d := time.Since(start); d > cfg.QueryTimeout {
		t.Errorf("Ping took %v, more than the query timeout %v", d, cfg.QueryTimeout)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("Ping error shows the password: %q", err)
	}
	t.Logf("Ping: %v", err)
}

// TestPingTimeout: a server that accepts connections but never answers
// fails Ping within the query timeout, saying so.
func TestPingTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()

	cfg := postgres.DefaultConfig()
	cfg.DSN = "postgres://sluice:" + secret + "@" + l.Addr().String() + "/sluice?sslmode=disable"
	cfg.ConnectTimeout = 10 * time.Second
	cfg.QueryTimeout = 300 * time.Millisecond
	db, err := postgres.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	start := time.Now()
	err = db.Ping(context.Background())
	d := time.Since(start)
	if err == nil {
		t.Fatal("Ping succeeded against a server that never answers")
	}
	if d > cfg.QueryTimeout+time.Second {
		t.Errorf("Ping took %v, want about the query timeout %v", d, cfg.QueryTimeout)
	}
	if !strings.Contains(err.Error(), "no answer within") {
		t.Errorf("Ping = %q, want it to say there was no answer in time", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("Ping error shows the password: %q", err)
	}
	t.Logf("Ping after %v: %v", d.Round(time.Millisecond), err)
}

func TestOpenMaxConns(t *testing.T) {
	cfg := postgres.DefaultConfig()
	cfg.DSN = "postgres://sluice@127.0.0.1:1/sluice?pool_max_conns=9"
	db, err := postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Pool().Config().MaxConns; got != 9 {
		t.Errorf("MaxConns from the DSN = %d, want 9", got)
	}
	db.Close()
	cfg.MaxConns = 3
	db, err = postgres.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.Pool().Config().MaxConns; got != 3 {
		t.Errorf("MaxConns from Config = %d, want 3", got)
	}
}
