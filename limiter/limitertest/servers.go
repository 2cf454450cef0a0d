package limitertest

// Tests that start real servers (redis-server, postgres) are built only
// with -tags integration (make test); make test-unit runs the rest, on any
// machine. The helpers that start servers live in integration-tagged files;
// in a build without the tag they fail the test that calls them (unit.go).

// EnvRedisAddr names an existing Redis (host:port) for StartRedis to use
// instead of starting its own.
const EnvRedisAddr = "SLUICE_TEST_REDIS_ADDR"

// EnvPostgresDSN names an existing Postgres (a DSN) for StartPostgres to use
// instead of starting its own.
const EnvPostgresDSN = "SLUICE_TEST_POSTGRES_DSN"

// PostgresDatabase is the database that every test server has, empty.
const PostgresDatabase = "sluice_test"
