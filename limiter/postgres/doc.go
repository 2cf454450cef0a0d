// Package postgres is Sluice's connection to PostgreSQL, which holds the
// dynamic overrides of the configured limits.
//
// Postgres is optional and never on the request path: a replica starts and
// serves without it, and decisions never wait on it. Open therefore only
// checks the configuration and prepares a pgx connection pool, which
// connects on first use; Ping (SELECT 1 within Config.QueryTimeout) is the
// health check that tells whether Postgres answers. After Postgres goes
// away and comes back, the same DB works again without being reopened: the
// pool drops broken connections and dials new ones.
//
// Passwords never leave the package: errors and DB.DSN show the DSN through
// RedactDSN, which handles both the URL and the keyword/value forms.
//
// The package imports pgx and the standard library only; it must not import
// the server, gRPC or breaker packages. Failures are returned as errors for
// the caller (its breaker and health checks) to handle.
package postgres
