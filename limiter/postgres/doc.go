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
// Overrides: Migrate applies the embedded schema migrations (migrations/,
// versioned, under an advisory lock so replicas starting together apply
// each once). PutOverride, GetOverride, ListOverrides, DeleteOverride and
// OverrideHistory read and write sluice_overrides; every change writes its
// sluice_override_history row and a NOTIFY on NotifyChannel in the same
// transaction. ExpireOverrides deletes what is due with a conditional
// delete, so however many replicas run it each expiry is recorded once.
// A Syncer per replica LISTENs on a connection of its own, reloads the
// full set on each notification, on each reconnect and every interval,
// enforces expiries locally on time, and publishes an immutable Snapshot:
// the request path reads that and never waits on Postgres.
//
// The package imports pgx, the standard library and limiter (for the
// Override type) only; it must not import the server, gRPC or breaker
// packages. Failures are returned as errors for the caller (its breaker
// and health checks) to handle.
package postgres
