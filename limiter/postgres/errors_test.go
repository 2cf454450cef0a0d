package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestCallerError(t *testing.T) {
	for _, c := range []struct {
		name     string
		err      error
		code     string
		caller   bool
		conflict bool
	}{
		{"nul in jsonb", &pgconn.PgError{Code: "22P05"}, "22P05", true, false},
		{"nul in text, wrapped", fmt.Errorf("put override: %w", &pgconn.PgError{Code: "22021"}), "22021", true, false},
		{"check violation", &pgconn.PgError{Code: "23514"}, "23514", true, false},
		{"unique violation", &pgconn.PgError{Code: "23505"}, "23505", true, true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, "", false, false},
		{"disk full", &pgconn.PgError{Code: "53100"}, "", false, false},
		{"connection", &pgconn.ConnectError{}, "", false, false},
		{"timeout", context.DeadlineExceeded, "", false, false},
		{"other", errors.New("broken pipe"), "", false, false},
		{"nil", nil, "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, ok := CallerError(c.err)
			if code != c.code || ok != c.caller || IsConflict(code) != c.conflict {
				t.Fatalf("CallerError = %q, %v (conflict %v); want %q, %v (conflict %v)",
					code, ok, IsConflict(code), c.code, c.caller, c.conflict)
			}
		})
	}
}
