package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-rl/sluice/limiter"
)

// refused wraps a caller-class error (see CallerError) as the domain's
// *limiter.OverrideRefused, so callers classify it without knowing
// Postgres; any other error is returned as it is.
func refused(err error) error {
	code, ok := CallerError(err)
	if !ok {
		return err
	}
	return &limiter.OverrideRefused{Code: code, Conflict: IsConflict(code), Err: err}
}

// CallerError reports whether err is Postgres refusing a statement for
// the data it was given: SQLSTATE class 22 (data exception, such as a NUL
// byte in text, 22021, or in jsonb, 22P05) or class 23 (integrity
// constraint violation). Such an error is the caller's, not a failure of
// the server: it must not count against the Postgres breaker, and the
// admin API answers it 400 (409 for a conflict, see IsConflict). It
// returns the SQLSTATE.
func CallerError(err error) (sqlstate string, ok bool) {
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &pe) {
		return "", false
	}
	if strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23") {
		return pe.Code, true
	}
	return "", false
}

// IsConflict reports whether sqlstate is a unique or exclusion constraint
// violation: the row clashes with another, as when two changes race.
func IsConflict(sqlstate string) bool { return sqlstate == "23505" || sqlstate == "23P01" }
