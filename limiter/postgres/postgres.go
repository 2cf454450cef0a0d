package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config is how Sluice reaches Postgres.
type Config struct {
	// DSN is a libpq connection string, as a URL
	// (postgres://user:password@host:5432/db?sslmode=require) or as
	// keyword/value pairs (host=db user=sluice password=... dbname=sluice).
	// Empty means Postgres is off: no overrides, and health omits it.
	DSN string `yaml:"dsn"`
	// MaxConns is the most connections the pool keeps; 0 means the DSN's
	// pool_max_conns, else pgx's default (4, or one per CPU when more).
	MaxConns int32 `yaml:"max_conns"`
	// ConnectTimeout bounds dialing and authenticating one connection; 0
	// means the DSN's connect_timeout, else 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// QueryTimeout bounds one query, including waiting for a connection;
	// 0 means 2s. Ping, the health check, uses it.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

// Defaults Open applies to zero fields.
const (
	defaultConnectTimeout = 5 * time.Second
	defaultQueryTimeout   = 2 * time.Second
)

// DefaultConfig has Postgres off (no DSN) and timeouts for a store that is
// only read in the background.
func DefaultConfig() Config {
	return Config{
		ConnectTimeout: defaultConnectTimeout,
		QueryTimeout:   defaultQueryTimeout,
	}
}

// Enabled reports whether a DSN is set, that is whether Sluice uses
// Postgres at all.
func (c Config) Enabled() bool { return c.DSN != "" }

// ConfigError is an invalid Config field. Its message never contains a
// password.
type ConfigError struct {
	Field string // as spelled in config.yaml under postgres, e.g. "dsn"
	Err   error
}

func (e *ConfigError) Error() string { return "postgres." + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// FieldProblem is the field, relative to the postgres section, and the
// problem, for placing the error in config.yaml's one error format.
func (e *ConfigError) FieldProblem() (field, problem string) { return e.Field, e.Err.Error() }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks c without touching the network, and names the first bad
// field. An empty DSN is valid: Postgres is optional. Error messages never
// contain a password.
func (c Config) Validate() error {
	if c.DSN != "" {
		if _, err := c.poolConfig(); err != nil {
			return err
		}
	}
	if c.MaxConns < 0 {
		return fieldErr("max_conns", "must not be negative, got %d", c.MaxConns)
	}
	if c.ConnectTimeout < 0 {
		return fieldErr("connect_timeout", "must not be negative, got %v", c.ConnectTimeout)
	}
	if c.QueryTimeout < 0 {
		return fieldErr("query_timeout", "must not be negative, got %v", c.QueryTimeout)
	}
	return nil
}

// poolConfig parses the DSN and applies the other fields.
func (c Config) poolConfig() (*pgxpool.Config, error) {
	if c.DSN == "" {
		return nil, fieldErr("dsn", "required to open Postgres (postgres://user@host:5432/db or host=... dbname=...)")
	}
	if ambiguousURL(c.DSN) {
		return nil, fieldErr("dsn", "cannot parse %s: write the scheme in lower case, and percent-encode '/', '?', '#' and '@' in a user name, password or parameter (%%2F, %%3F, %%23, %%40)", RedactDSN(c.DSN))
	}
	pc, err := pgxpool.ParseConfig(c.DSN)
	if err != nil {
		return nil, fieldErr("dsn", "cannot parse %s: %s", RedactDSN(c.DSN), parseReason(c.DSN, err))
	}
	if c.MaxConns > 0 {
		pc.MaxConns = c.MaxConns
	}
	switch {
	case c.ConnectTimeout > 0:
		pc.ConnConfig.ConnectTimeout = c.ConnectTimeout
	case pc.ConnConfig.ConnectTimeout == 0:
		pc.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	// Nothing is dialed until a query needs it: Sluice starts and serves
	// while Postgres is down.
	pc.MinConns = 0
	pc.MinIdleConns = 0
	return pc, nil
}

// parseReason is why pgx could not parse dsn, without the DSN itself (the
// caller shows it redacted) and without anything that could be its
// password.
func parseReason(dsn string, err error) string {
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// pgx writes: cannot parse `<redacted dsn>`: <reason>
		const prefix = "cannot parse `"
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			if i := strings.Index(rest, "`: "); i >= 0 {
				msg = rest[i+len("`: "):]
			}
		}
	}
	for _, secret := range passwordCandidates(dsn) {
		msg = strings.ReplaceAll(msg, secret, mask)
	}
	// What pgx quotes is a piece of the DSN, which may be a piece of a
	// password (an invalid port): say what kind of problem it is only.
	return quoted.ReplaceAllString(msg, "(hidden)")
}

var quoted = regexp.MustCompile("\"[^\"]*\"|`[^`]*`")

// passwordCandidates are the substrings of dsn that may be a password, as
// written and as decoded, for scrubbing messages that quote parts of it.
func passwordCandidates(dsn string) []string {
	red := maskDSN(dsn)
	var out []string
	// Walk dsn and its redaction together: every span the redaction
	// replaced with the mask is a candidate.
	i, j := 0, 0
	for i < len(dsn) && j < len(red) {
		if dsn[i] == red[j] {
			i++
			j++
			continue
		}
		if !strings.HasPrefix(red[j:], mask) {
			break
		}
		// The hidden span ends where the text after the mask resumes.
		after := red[j+len(mask):]
		end := len(dsn)
		if after != "" {
			n := min(len(after), 8)
			if k := strings.Index(dsn[i:], after[:n]); k >= 0 {
				end = i + k
			}
		}
		if s := dsn[i:end]; len(s) >= 3 {
			out = append(out, s)
			if d := decodeLenient(s); d != s {
				out = append(out, d)
			}
			if q := strings.Trim(s, "'"); q != s && len(q) >= 3 {
				out = append(out, q)
			}
		}
		i = end
		j += len(mask)
	}
	return out
}

// DB is a pool of connections to Postgres. It is safe for concurrent use.
type DB struct {
	pool         *pgxpool.Pool
	dsn          string // redacted
	addr         string // host:port of each server tried, for health
	queryTimeout time.Duration
}

// Open checks cfg and prepares a pool of connections to cfg.DSN without
// connecting: it succeeds while Postgres is down, and the first query (or
// Ping) dials. It fails only for an invalid cfg, with a *ConfigError that
// names the field. Close the DB when done.
func Open(cfg Config) (*DB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := cfg.poolConfig()
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %s", RedactDSN(cfg.DSN), parseReason(cfg.DSN, err))
	}
	qt := cfg.QueryTimeout
	if qt == 0 {
		qt = defaultQueryTimeout
	}
	return &DB{pool: pool, dsn: RedactDSN(cfg.DSN), addr: addresses(&pc.ConnConfig.Config), queryTimeout: qt}, nil
}

// Ping runs SELECT 1 within the query timeout (or ctx's deadline, when
// sooner), dialing a connection when the pool has none. It is the health
// check: nil means Postgres answers. The error says when Postgres did not
// answer in time, and never contains the password.
func (db *DB) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, db.queryTimeout)
	defer cancel()
	start := time.Now()
	var one int
	err := hideUser(db.pool.QueryRow(ctx, "SELECT 1").Scan(&one))
	switch {
	case err == nil && one != 1:
		return fmt.Errorf("ping postgres %s: SELECT 1 returned %d", db.addr, one)
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("ping postgres %s: no answer within %v: %w", db.addr, time.Since(start).Round(time.Millisecond), err)
	default:
		return fmt.Errorf("ping postgres %s: %w", db.addr, err)
	}
}

// hideUser is err without the user and database names pgx writes at the
// head of a connection error, for health output, which names a backend by
// host:port only.
func hideUser(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err
	}
	inner := "failed to connect"
	if u := errors.Unwrap(ce); u != nil {
		inner += ": " + u.Error()
	}
	return &connectError{err: err, msg: strings.Replace(err.Error(), ce.Error(), inner, 1)}
}

// connectError is a connection error with its message rewritten.
type connectError struct {
	err error
	msg string
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }

// DSN is the DSN the DB was opened with, shown from its parsed form with
// no password.
func (db *DB) DSN() string { return db.dsn }

// Addr is the host:port of every server the DB tries, comma-separated: no
// user name, no password, no database.
func (db *DB) Addr() string { return db.addr }

// QueryTimeout is the bound on one query that Ping applies, for callers
// that run queries on Pool.
func (db *DB) QueryTimeout() time.Duration { return db.queryTimeout }

// Pool is the underlying pgx pool, for the code that reads and writes
// overrides. The DB owns it: do not close it.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Close closes the pool's connections, waiting for those in use to be
// released. The DB must not be used after.
func (db *DB) Close() { db.pool.Close() }
