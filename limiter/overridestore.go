package limiter

import (
	"errors"
	"time"
)

// The contract between the admin API and the store that keeps overrides
// (limiter/postgres implements it): the errors it returns and the history
// it keeps. The domain owns these, so the server needs no store package.

// ErrOverrideNotFound is returned for an override id that does not exist
// (or, from a history lookup, never existed).
var ErrOverrideNotFound = errors.New("override not found")

// The actions of an override's history.
const (
	OverrideCreate = "create"
	OverrideUpdate = "update"
	OverrideDelete = "delete"
	OverrideExpire = "expire"
)

// OverrideChange is one change to an override: Old is nil for a create,
// New nil for a delete or an expiry.
type OverrideChange struct {
	OverrideID int64     `json:"override_id"`
	Action     string    `json:"action"`
	Old        *Override `json:"old"`
	New        *Override `json:"new"`
	Actor      string    `json:"actor"`
	At         time.Time `json:"at"`
}

// OverrideRefused is a store refusing an override for the data it was
// given, as Postgres refuses text with a NUL byte or a row that clashes
// with another. It is the caller's error, never a failure of the store:
// it must not count against the store's breaker, and the admin API
// answers it 400, or 409 for a Conflict.
type OverrideRefused struct {
	// Code is the store's own code for the refusal (a Postgres SQLSTATE).
	Code string
	// Conflict: the override clashes with another, as when two changes race.
	Conflict bool
	Err      error
}

func (e *OverrideRefused) Error() string { return e.Err.Error() }
func (e *OverrideRefused) Unwrap() error { return e.Err }
