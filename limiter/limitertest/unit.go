//go:build !integration

package limitertest

import "testing"

// UnitModeMessage is how a server-starting helper fails a test built
// without the integration tag.
const UnitModeMessage = "integration test in unit mode: build with -tags integration (make test)"

// In unit mode the server types exist, so that callers compile, but no
// helper makes one: each fails the test that asks, and never looks for the
// server programs or the SLUICE_TEST_* variables.

// RedisServer is a redis-server process owned by one test (integration
// builds only).
type RedisServer struct {
	// Addr is host:port on the loopback interface.
	Addr string
}

// PostgresServer is a postgres process owned by one test (integration
// builds only).
type PostgresServer struct {
	// DSN reaches the sluice_test database as the postgres superuser.
	DSN string
	// Port is the TCP port on 127.0.0.1.
	Port int
}

// RedisCluster is a Redis Cluster owned by one test (integration builds
// only).
type RedisCluster struct {
	// Addrs are the masters' host:port.
	Addrs []string
}

// RedisSentinel is a master, a replica and a sentinel owned by one test
// (integration builds only).
type RedisSentinel struct {
	// MasterName is the name the sentinel monitors the master under.
	MasterName   string
	SentinelAddr string
}

func unitMode(t testing.TB, helper string) {
	t.Helper()
	t.Fatalf("%s: %s", helper, UnitModeMessage)
}

// StartRedis fails t: it needs a real Redis.
func StartRedis(t testing.TB) (addr string) {
	t.Helper()
	unitMode(t, "StartRedis")
	return ""
}

// NewRedisServer fails t: it needs a real Redis.
func NewRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	unitMode(t, "NewRedisServer")
	return nil
}

// StartPostgres fails t: it needs a real Postgres.
func StartPostgres(t testing.TB) (dsn string) {
	t.Helper()
	unitMode(t, "StartPostgres")
	return ""
}

// NewPostgresServer fails t: it needs a real Postgres.
func NewPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	unitMode(t, "NewPostgresServer")
	return nil
}

// StartRedisCluster fails t: it needs real Redis nodes.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	unitMode(t, "StartRedisCluster")
	return nil
}

// StartRedisSentinel fails t: it needs real Redis nodes.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	unitMode(t, "StartRedisSentinel")
	return nil
}
