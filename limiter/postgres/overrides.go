package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-rl/sluice/limiter"
)

// NotifyChannel is the channel every override change is announced on
// (NOTIFY, in the transaction of the change); the payload is the
// override's id.
const NotifyChannel = "sluice_overrides"

// ExpireActor is the actor history records for an expiry.
const ExpireActor = "sluice"

// ErrNotFound is returned for an override id that does not exist (or,
// from OverrideHistory, never existed): limiter.ErrOverrideNotFound.
var ErrNotFound = limiter.ErrOverrideNotFound

// History actions, as the domain names them.
const (
	ActionCreate = limiter.OverrideCreate
	ActionUpdate = limiter.OverrideUpdate
	ActionDelete = limiter.OverrideDelete
	ActionExpire = limiter.OverrideExpire
)

// HistoryEntry is one change to an override.
type HistoryEntry = limiter.OverrideChange

const overrideColumns = `id, domain, path, unit, unit_multiplier, requests_per_unit, burst, unlimited,
	name, replaces, reason, updated_by, created_at, updated_at, expires_at, charge, max_debt`

// scanOverride reads one row of overrideColumns.
func scanOverride(row pgx.Row) (limiter.Override, error) {
	var (
		o         limiter.Override
		path      []byte
		unit      *string
		mult, rpu int64
		burst     *int64
		replaces  []string
		expires   *time.Time
		charge    *string
		maxDebt   *int64
	)
	err := row.Scan(&o.ID, &o.Domain, &path, &unit, &mult, &rpu, &burst, &o.RateLimit.Unlimited,
		&o.RateLimit.Name, &replaces, &o.Reason, &o.UpdatedBy, &o.CreatedAt, &o.UpdatedAt, &expires, &charge, &maxDebt)
	if err != nil {
		return o, err
	}
	if charge != nil {
		c, ok := limiter.ParseCharge(*charge)
		if !ok {
			return o, fmt.Errorf("override %d: unknown charging mode %q", o.ID, *charge)
		}
		o.RateLimit.Charge, o.RateLimit.ChargeSet = c, true
	}
	if maxDebt != nil {
		o.RateLimit.MaxDebt = uint64(*maxDebt)
	}
	if err := json.Unmarshal(path, &o.Descriptors); err != nil {
		return o, fmt.Errorf("override %d: path: %w", o.ID, err)
	}
	if unit != nil {
		u, ok := limiter.ParseUnit(*unit)
		if !ok {
			return o, fmt.Errorf("override %d: unknown unit %q", o.ID, *unit)
		}
		o.RateLimit.Unit = u
	}
	if !o.RateLimit.Unlimited {
		o.RateLimit.UnitMultiplier = uint32(mult)
		if mult == 1 {
			o.RateLimit.UnitMultiplier = 0
		}
		o.RateLimit.RequestsPerUnit = uint32(rpu)
		if burst != nil {
			o.RateLimit.Burst = uint32(*burst)
		}
	}
	if len(replaces) > 0 {
		o.RateLimit.Replaces = replaces
	}
	o.CreatedAt = o.CreatedAt.UTC()
	o.UpdatedAt = o.UpdatedAt.UTC()
	if expires != nil {
		o.ExpiresAt = expires.UTC()
	}
	return o, nil
}

// chargeArgs are the charge and max_debt columns of r: NULL when r does
// not state them.
func chargeArgs(r *limiter.RateLimit) (charge *string, maxDebt *int64) {
	if r.ChargeSet || r.Charge != limiter.ChargeAdmission {
		c := r.Charge.String()
		charge = &c
	}
	if r.MaxDebt != 0 {
		d := int64(r.MaxDebt)
		maxDebt = &d
	}
	return charge, maxDebt
}

// limitArgs are the rate_limit columns of o, in overrideColumns' order.
func limitArgs(r *limiter.RateLimit) (unit *string, mult, rpu int64, burst *int64) {
	mult = 1
	if r.Unlimited {
		return nil, 1, 0, nil
	}
	u := r.Unit.String()
	unit = &u
	if r.UnitMultiplier > 1 {
		mult = int64(r.UnitMultiplier)
	}
	rpu = int64(r.RequestsPerUnit)
	if r.Burst != 0 && r.RequestsPerUnit > 0 {
		b := int64(r.Burst)
		burst = &b
	}
	return unit, mult, rpu, burst
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (db *DB) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, db.queryTimeout)
}

// PutOverride creates the override for o's domain and path, or replaces
// the one there (keeping its id and created_at), and records the change
// in the history, in one transaction that also notifies every replica.
// o.ID and the timestamps are ignored; o is not validated here (see
// limiter.Override.Validate). actor is recorded as updated_by. It returns
// the stored override and whether it was created.
func (db *DB) PutOverride(ctx context.Context, o limiter.Override, actor string) (stored limiter.Override, created bool, err error) {
	path, err := json.Marshal(o.Descriptors)
	if err != nil {
		return stored, false, err
	}
	unit, mult, rpu, burst := limitArgs(&o.RateLimit)
	charge, maxDebt := chargeArgs(&o.RateLimit)
	replaces := o.RateLimit.Replaces
	if replaces == nil {
		replaces = []string{}
	}
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// An insert racing another for the same new path finds the row on
		// its next look, and updates it.
		for attempt := 0; attempt < 3; attempt++ {
			old, err := scanOverride(tx.QueryRow(ctx, `SELECT `+overrideColumns+` FROM sluice_overrides
				WHERE domain = $1 AND md5(path::text) = md5($2::jsonb::text) AND path = $2::jsonb FOR UPDATE`,
				o.Domain, path))
			switch {
			case err == nil:
				stored, err = scanOverride(tx.QueryRow(ctx, `UPDATE sluice_overrides SET
					unit = $2, unit_multiplier = $3, requests_per_unit = $4, burst = $5, unlimited = $6,
					name = $7, replaces = $8, reason = $9, updated_by = $10, updated_at = now(), expires_at = $11,
					charge = $12, max_debt = $13
					WHERE id = $1 RETURNING `+overrideColumns,
					old.ID, unit, mult, rpu, burst, o.RateLimit.Unlimited,
					o.RateLimit.Name, replaces, o.Reason, actor, nullTime(o.ExpiresAt), charge, maxDebt))
				if err != nil {
					return fmt.Errorf("update override %d: %w", old.ID, err)
				}
				return db.record(ctx, tx, stored.ID, ActionUpdate, &old, &stored, actor)
			case !errors.Is(err, pgx.ErrNoRows):
				return fmt.Errorf("look up override: %w", err)
			}
			stored, err = scanOverride(tx.QueryRow(ctx, `INSERT INTO sluice_overrides
				(domain, path, unit, unit_multiplier, requests_per_unit, burst, unlimited, name, replaces, reason, updated_by, expires_at,
				 charge, max_debt)
				VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
				ON CONFLICT DO NOTHING RETURNING `+overrideColumns,
				o.Domain, path, unit, mult, rpu, burst, o.RateLimit.Unlimited,
				o.RateLimit.Name, replaces, o.Reason, actor, nullTime(o.ExpiresAt), charge, maxDebt))
			switch {
			case err == nil:
				created = true
				return db.record(ctx, tx, stored.ID, ActionCreate, nil, &stored, actor)
			case !errors.Is(err, pgx.ErrNoRows):
				return fmt.Errorf("insert override: %w", err)
			}
		}
		return fmt.Errorf("override for %s %s keeps changing under this write; try again", o.Domain, o.PathString())
	})
	if err != nil {
		return limiter.Override{}, false, refused(fmt.Errorf("put override: %w", err))
	}
	return stored, created, nil
}

// record writes a history row for a change and announces the change.
func (db *DB) record(ctx context.Context, tx pgx.Tx, id int64, action string, old, new *limiter.Override, actor string) error {
	var oldDoc, newDoc []byte
	var err error
	if old != nil {
		if oldDoc, err = json.Marshal(old); err != nil {
			return err
		}
	}
	if new != nil {
		if newDoc, err = json.Marshal(new); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO sluice_override_history (override_id, action, old, new, actor)
		VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)`, id, action, oldDoc, newDoc, actor); err != nil {
		return fmt.Errorf("record %s of override %d: %w", action, id, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, strconv.FormatInt(id, 10)); err != nil {
		return fmt.Errorf("notify %s of override %d: %w", action, id, err)
	}
	return nil
}

// GetOverride returns the override with id, or ErrNotFound.
func (db *DB) GetOverride(ctx context.Context, id int64) (limiter.Override, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	o, err := scanOverride(db.pool.QueryRow(ctx, `SELECT `+overrideColumns+` FROM sluice_overrides WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("get override %d: %w", id, err)
	}
	return o, nil
}

// ListOverrides returns every stored override, by domain then id,
// including any past its expiry that no replica has expired yet.
func (db *DB) ListOverrides(ctx context.Context) ([]limiter.Override, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	return db.listOverrides(ctx, db.pool)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (db *DB) listOverrides(ctx context.Context, q querier) ([]limiter.Override, error) {
	rows, err := q.Query(ctx, `SELECT `+overrideColumns+` FROM sluice_overrides ORDER BY domain, id`)
	if err != nil {
		return nil, fmt.Errorf("list overrides: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (limiter.Override, error) { return scanOverride(r) })
	if err != nil {
		return nil, fmt.Errorf("list overrides: %w", err)
	}
	return out, nil
}

// DeleteOverride deletes the override with id and records who did, in one
// transaction that also notifies every replica. It returns the deleted
// override, or ErrNotFound.
func (db *DB) DeleteOverride(ctx context.Context, id int64, actor string) (limiter.Override, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	var old limiter.Override
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var err error
		old, err = scanOverride(tx.QueryRow(ctx, `DELETE FROM sluice_overrides WHERE id = $1 RETURNING `+overrideColumns, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return db.record(ctx, tx, id, ActionDelete, &old, nil, actor)
	})
	if errors.Is(err, ErrNotFound) {
		return old, ErrNotFound
	}
	if err != nil {
		return old, refused(fmt.Errorf("delete override %d: %w", id, err))
	}
	return old, nil
}

// OverrideHistory returns the changes to the override with id, oldest
// first; a deleted or expired override keeps its history. ErrNotFound means
// no override ever had the id.
func (db *DB) OverrideHistory(ctx context.Context, id int64) ([]HistoryEntry, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT override_id, action, old, new, actor, at
		FROM sluice_override_history WHERE override_id = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("override %d history: %w", id, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HistoryEntry, error) {
		var h HistoryEntry
		var oldDoc, newDoc []byte
		if err := r.Scan(&h.OverrideID, &h.Action, &oldDoc, &newDoc, &h.Actor, &h.At); err != nil {
			return h, err
		}
		h.At = h.At.UTC()
		for _, d := range []struct {
			doc []byte
			to  **limiter.Override
		}{{oldDoc, &h.Old}, {newDoc, &h.New}} {
			if d.doc == nil {
				continue
			}
			var o limiter.Override
			if err := json.Unmarshal(d.doc, &o); err != nil {
				return h, fmt.Errorf("%s entry: %w", h.Action, err)
			}
			*d.to = &o
		}
		return h, nil
	})
	if err != nil {
		return nil, fmt.Errorf("override %d history: %w", id, err)
	}
	if len(out) == 0 {
		if _, err := db.GetOverride(ctx, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ExpireOverrides deletes every override whose expires_at has passed (by
// Postgres's clock) and records each expiry, in one transaction that also
// notifies every replica. Every replica runs it: a conditional delete
// returns a row to only one of them, so each expiry is recorded once. It
// returns the expired overrides.
func (db *DB) ExpireOverrides(ctx context.Context) ([]limiter.Override, error) {
	ctx, cancel := db.withTimeout(ctx)
	defer cancel()
	var gone []limiter.Override
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM sluice_overrides
			WHERE expires_at IS NOT NULL AND expires_at <= now() RETURNING `+overrideColumns)
		if err != nil {
			return err
		}
		gone, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (limiter.Override, error) { return scanOverride(r) })
		if err != nil {
			return err
		}
		for i := range gone {
			if err := db.record(ctx, tx, gone[i].ID, ActionExpire, &gone[i], nil, ExpireActor); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire overrides: %w", err)
	}
	return gone, nil
}
