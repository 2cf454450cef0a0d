//go:build integration

package limitertest

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// query runs sql on dsn over a fresh connection and returns the first
// column of the first row.
func query(t *testing.T, dsn, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	last := res[len(res)-1]
	if len(last.Rows) == 0 {
		return "", nil
	}
	return string(last.Rows[0][0]), nil
}

// TestStartPostgres starts and stops two servers in turn: the first may
// make the template cluster, the second copies it.
func TestStartPostgres(t *testing.T) {
	for _, name := range []string{"first", "second"} {
		var (
			pid int
			dir string
		)
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			s := NewPostgresServer(t)
			t.Logf("NewPostgresServer took %v (port %d)", time.Since(start).Round(time.Millisecond), s.Port)
			pid, dir = s.PID(), s.dir
			if pid == 0 {
				t.Fatal("PID is 0 for a running server")
			}
			db, err := query(t, s.DSN, "SELECT current_database()")
			if err != nil {
				t.Fatalf("query %s: %v", s.DSN, err)
			}
			if db != PostgresDatabase {
				t.Errorf("current_database() = %q, want %q", db, PostgresDatabase)
			}
			if _, err := query(t, s.DSN, "CREATE TABLE t (id int)"); err != nil {
				t.Fatalf("create table: %v", err)
			}
		})
		if pid == 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: postgres (pid %d) still running after the test ended (kill 0: %v)", name, pid, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: data directory %s left behind (stat: %v)", name, dir, err)
		}
	}
}

// TestPostgresServerStopStart: stopped, the server refuses connections;
// started again, it is on the same port with the same data.
func TestPostgresServerStopStart(t *testing.T) {
	s := NewPostgresServer(t)
	if _, err := query(t, s.DSN, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('here')"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	pid := s.PID()
	s.Stop()
	if s.PID() != 0 {
		t.Errorf("PID = %d after Stop, want 0", s.PID())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres (pid %d) still running after Stop (kill 0: %v)", pid, err)
	}
	if err := pingPostgres(s.DSN, time.Second); err == nil {
		t.Fatal("a stopped server accepted a connection")
	}
	s.Stop() // a second Stop does nothing

	s.Start()
	v, err := query(t, s.DSN, "SELECT v FROM kept")
	if err != nil {
		t.Fatalf("query after restart: %v", err)
	}
	if v != "here" {
		t.Errorf("after restart kept.v = %q, want %q", v, "here")
	}
}

// TestStartPostgresEnv: SLUICE_TEST_POSTGRES_DSN is used as it is.
func TestStartPostgresEnv(t *testing.T) {
	s := NewPostgresServer(t)
	t.Setenv(EnvPostgresDSN, s.DSN)
	if got := StartPostgres(t); got != s.DSN {
		t.Errorf("StartPostgres = %q, want %s's value %q", got, EnvPostgresDSN, s.DSN)
	}
}
