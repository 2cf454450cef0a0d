//go:build integration

package limitertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// postgresStartTimeout bounds the wait for a started server to accept
	// connections; a restart after SIGKILL runs crash recovery first.
	postgresStartTimeout = 30 * time.Second
	// postgresStopTimeout bounds a fast shutdown (SIGINT) before SIGKILL.
	postgresStopTimeout = 10 * time.Second
	// postgresTemplateVersion changes the template directory's name when
	// what the template holds changes, so no stale one is reused.
	postgresTemplateVersion = "2"
)

// StartPostgres returns the DSN of a Postgres for t: the one named by
// SLUICE_TEST_POSTGRES_DSN when set (shared; t must tidy up after itself),
// else that of a server started for t on a free loopback port, stopped and
// removed when t ends. The DSN has the form
// postgres://postgres@127.0.0.1:PORT/sluice_test?sslmode=disable and needs
// no password (trust authentication on loopback).
//
// It fails t when the PostgreSQL server programs are not installed or the
// server does not accept connections in time.
func StartPostgres(t testing.TB) (dsn string) {
	t.Helper()
	if d := os.Getenv(EnvPostgresDSN); d != "" {
		if err := pingPostgres(d, 2*time.Second); err != nil {
			t.Fatalf("%s is set but that Postgres does not accept connections: %v", EnvPostgresDSN, err)
		}
		return d
	}
	return NewPostgresServer(t).DSN
}

// PostgresServer is a postgres process owned by one test, with its own data
// directory. Stop and Start restart it on the same port and data, for tests
// of what a client does when Postgres goes away and comes back.
type PostgresServer struct {
	// DSN reaches the sluice_test database as the postgres superuser.
	DSN string
	// Port is the TCP port on 127.0.0.1.
	Port int

	t    testing.TB
	pg   *pgInstall
	dir  string // owned by the server's user; holds data/ and the socket
	data string

	process
}

// NewPostgresServer starts a Postgres for t on a free loopback port, from a
// copy of a template cluster made once by initdb, and when t ends stops it
// (by its PID) and removes its data. It ignores SLUICE_TEST_POSTGRES_DSN: a
// test that needs to stop and start Postgres needs one of its own.
//
// When the test runs as root the server runs as the postgres user, since
// Postgres refuses to run as root; its directories are made in the
// temporary directory ($TMPDIR, else /tmp), which that user must be able
// to reach.
func NewPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	pg, err := postgresInstall()
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := pg.template()
	if err != nil {
		t.Fatalf("prepare the Postgres template cluster: %v", err)
	}
	dir, err := pg.mkdirOwned("sluice-pg-")
	if err != nil {
		t.Fatalf("make a Postgres data directory: %v", err)
	}
	s := &PostgresServer{t: t, pg: pg, dir: dir, data: filepath.Join(dir, "data")}
	t.Cleanup(func() {
		s.Stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove Postgres data directory: %v", err)
		}
	})
	if out, err := pg.run("", "cp", "-a", tmpl, s.data); err != nil {
		t.Fatalf("copy the Postgres template cluster: %v: %s", err, out)
	}
	err = startOnFreePort(func(port int) error {
		s.Port = port
		s.DSN = fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable",
			net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), PostgresDatabase)
		return s.start()
	})
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	return s
}

// Start starts the server again on its port and data after Stop. It fails
// the test when the server does not come up.
func (s *PostgresServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart postgres on port %d: %v", s.Port, err)
	}
}

// Stop shuts the server down (fast shutdown: SIGINT, which ends open
// sessions) and waits for it to exit, killing it (SIGKILL) when that takes
// longer than 10s. It does nothing when the server is not running.
func (s *PostgresServer) Stop() { s.stop(syscall.SIGINT, postgresStopTimeout) }

// PID is the postmaster's process id, or 0 when it is not running.
func (s *PostgresServer) PID() int { return s.pid() }

// Output is what the server has logged since it was last started.
func (s *PostgresServer) Output() string { return s.output() }

func (s *PostgresServer) start() error {
	cmd := s.pg.command(filepath.Join(s.pg.bindir, "postgres"),
		"-D", s.data,
		"-k", s.dir,
		"-h", "127.0.0.1",
		"-p", strconv.Itoa(s.Port),
		// Test data need not survive a machine crash.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB",
		"-c", "max_connections=50",
	)
	cmd.Dir = s.dir
	// Take the server down with the test process if that dies first.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return s.launch(cmd, fmt.Sprintf("postgres on port %d", s.Port), postgresStartTimeout,
		func() error { return pingPostgres(s.DSN, 500*time.Millisecond) }, s.Stop)
}

// pingPostgres opens and closes one connection to dsn.
func pingPostgres(dsn string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// pgInstall is the installed PostgreSQL server and the user that runs it.
type pgInstall struct {
	bindir string
	cred   *syscall.Credential // nil: run as the current user

	tmplOnce sync.Once
	tmplDir  string
	tmplErr  error
}

var (
	pgOnce    sync.Once
	pgFound   *pgInstall
	pgFindErr error
)

// postgresInstall finds initdb and postgres, once per process.
func postgresInstall() (*pgInstall, error) {
	pgOnce.Do(func() { pgFound, pgFindErr = findPostgres() })
	return pgFound, pgFindErr
}

func findPostgres() (*pgInstall, error) {
	bindir := postgresBindir()
	if bindir == "" {
		return nil, fmt.Errorf("PostgreSQL server programs (initdb, postgres) not found: looked in `pg_config --bindir`, "+
			"/usr/lib/postgresql/*/bin and PATH; run `make test`, which installs them (Debian package postgresql), "+
			"or set %s to use an existing server", EnvPostgresDSN)
	}
	pg := &pgInstall{bindir: bindir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("tests run as root, and Postgres refuses to: need a postgres user to run it as (%v); "+
				"run `make test`, which installs the Debian package postgresql that adds one", err)
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("postgres user: %w", err)
		}
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	return pg, nil
}

// postgresBindir is the directory holding initdb and postgres, or "".
func postgresBindir() string {
	has := func(dir string) bool {
		for _, prog := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, prog)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir
		}
	}
	// Debian keeps the server programs out of PATH; take the newest.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, dir := range dirs {
		if has(dir) {
			return dir
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p)
	}
	return ""
}

// command runs name as the server's user, with a small environment.
func (pg *pgInstall) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC"}
	// The test's own directory may be closed to the server's user.
	cmd.Dir = os.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	return cmd
}

// run runs name to completion as the server's user, with stdin as input.
func (pg *pgInstall) run(stdin, name string, args ...string) ([]byte, error) {
	cmd := pg.command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return []byte(strings.TrimSpace(string(out))), err
}

// mkdirOwned makes a fresh directory in the temporary directory, owned by
// the server's user and private to it.
func (pg *pgInstall) mkdirOwned(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if pg.cred != nil {
		if err := os.Chown(dir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

// template returns the data directory of a stopped cluster, made by initdb
// with the sluice_test database in it, to copy for each server.
//
// initdb takes seconds and a copy a fraction of one, so the template is
// kept in the temporary directory and shared by every test process of the
// same user and PostgreSQL install, under a name that changes with them.
// It is made under a private name and renamed into place once complete,
// so a concurrent process or a crash never leaves a partial one in use.
func (pg *pgInstall) template() (string, error) {
	pg.tmplOnce.Do(func() { pg.tmplDir, pg.tmplErr = pg.makeTemplate() })
	return pg.tmplDir, pg.tmplErr
}

func (pg *pgInstall) makeTemplate() (string, error) {
	version, err := pg.run("", filepath.Join(pg.bindir, "postgres"), "--version")
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", filepath.Join(pg.bindir, "postgres"), err, version)
	}
	uid := os.Geteuid()
	if pg.cred != nil {
		uid = int(pg.cred.Uid)
	}
	sum := sha256.Sum256([]byte(postgresTemplateVersion + "\x00" + pg.bindir + "\x00" + string(version)))
	final := filepath.Join(os.TempDir(), fmt.Sprintf("sluice-pg-template-%d-%s", uid, hex.EncodeToString(sum[:6])))
	data := filepath.Join(final, "data")
	ready := filepath.Join(final, "ready")
	if _, err := os.Stat(ready); err == nil {
		return data, nil
	}

	dir, err := pg.mkdirOwned("sluice-pg-template-new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir) // nothing left after a successful rename
	newData := filepath.Join(dir, "data")
	if out, err := pg.run("", filepath.Join(pg.bindir, "initdb"),
		"-D", newData, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
		"--no-sync", "--no-instructions",
		// 1 MiB WAL segments rather than 16: less to copy per server.
		"--wal-segsize=1"); err != nil {
		return "", fmt.Errorf("initdb: %w: %s", err, out)
	}
	// Single-user mode creates the database without starting a server.
	if out, err := pg.run("CREATE DATABASE "+PostgresDatabase+";\n", filepath.Join(pg.bindir, "postgres"),
		"--single", "-D", newData, "-F", "-c", "exit_on_error=true", "postgres"); err != nil {
		return "", fmt.Errorf("create database %s: %w: %s", PostgresDatabase, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(version), 0o644); err != nil {
		return "", fmt.Errorf("mark template ready: %w", err)
	}
	if err := os.Rename(dir, final); err != nil {
		// Another process got there first, or an incomplete one is in the
		// way: use a complete one, or replace the incomplete one.
		if _, serr := os.Stat(ready); serr == nil {
			return data, nil
		}
		if !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			return "", fmt.Errorf("move template into place: %w", err)
		}
		if err := os.RemoveAll(final); err != nil {
			return "", fmt.Errorf("remove incomplete template %s: %w", final, err)
		}
		if err := os.Rename(dir, final); err != nil {
			if _, serr := os.Stat(ready); serr == nil {
				return data, nil
			}
			return "", fmt.Errorf("move template into place: %w", err)
		}
	}
	return data, nil
}
