//go:build integration

package postgres_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/postgres"
)

// replica is one Syncer with what it has published.
type replica struct {
	s *postgres.Syncer

	mu    sync.Mutex
	calls int
	last  *postgres.Snapshot
}

func startReplica(t *testing.T, dsn string, cfg postgres.SyncConfig) *replica {
	t.Helper()
	db := openDB(t, dsn)
	r := &replica{}
	cfg.OnSnapshot = func(s *postgres.Snapshot) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls++
		r.last = s
	}
	r.s = postgres.NewSyncer(db, cfg)
	r.s.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return r
}

// has reports whether the replica's snapshot holds an override for value
// with requests_per_unit rpu (any rpu when rpu is 0).
func (r *replica) has(value string, rpu uint32) bool {
	for _, o := range r.s.Snapshot().Overrides {
		if o.Descriptors[0].Value == value && (rpu == 0 || o.RateLimit.RequestsPerUnit == rpu) {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or timeout passes, and returns how
// long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	limitertest.Eventually(t, timeout, what, cond)
	return time.Since(start)
}

// noResync is an interval long enough that only notifications and
// reconnects make a replica reload during a test.
const noResync = time.Hour

func TestSyncerPropagates(t *testing.T) {
	db, dsn := migratedDB(t)
	a := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync})
	b := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync})
	waitFor(t, 5*time.Second, "listeners up", func() bool { return a.s.Status().Listening && b.s.Status().Listening })
	ctx := context.Background()

	start := time.Now()
	o, _, err := db.PutOverride(ctx, newOverride("10.0.0.7", 50), "alice")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "create seen by both", func() bool { return a.has("10.0.0.7", 50) && b.has("10.0.0.7", 50) })
	t.Logf("create propagated to both replicas in %v", time.Since(start))

	start = time.Now()
	if _, _, err := db.PutOverride(ctx, newOverride("10.0.0.7", 60), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "update seen by both", func() bool { return a.has("10.0.0.7", 60) && b.has("10.0.0.7", 60) })
	t.Logf("update propagated in %v", time.Since(start))

	start = time.Now()
	if _, err := db.DeleteOverride(ctx, o.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "delete seen by both", func() bool { return !a.has("10.0.0.7", 0) && !b.has("10.0.0.7", 0) })
	t.Logf("delete propagated in %v", time.Since(start))

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.calls != 3 || len(a.last.Overrides) != 0 || a.last.LoadedAt.IsZero() {
		t.Fatalf("OnSnapshot called %d times, last %+v; want 3 calls ending empty", a.calls, a.last)
	}
	if st := a.s.Status(); st.LastError != nil || st.Overrides != 0 || !st.Listening {
		t.Fatalf("status %+v", st)
	}
}

// TestSyncerStartsWithExisting: a replica that starts finds the overrides
// already stored, before Start returns.
func TestSyncerStartsWithExisting(t *testing.T) {
	db, dsn := migratedDB(t)
	if _, _, err := db.PutOverride(context.Background(), newOverride("10.0.0.7", 50), "alice"); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync})
	if !r.has("10.0.0.7", 50) {
		t.Fatalf("snapshot after Start: %+v", r.s.Snapshot())
	}
}

// TestSyncerExpiry: two replicas stop applying an override at its expiry,
// and its history gets one expire row.
func TestSyncerExpiry(t *testing.T) {
	db, dsn := migratedDB(t)
	a := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync})
	b := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync})
	o := newOverride("10.0.0.7", 50)
	o.ExpiresAt = time.Now().Add(1500 * time.Millisecond)
	stored, _, err := db.PutOverride(context.Background(), o, "alice")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "create seen", func() bool { return a.has("10.0.0.7", 0) && b.has("10.0.0.7", 0) })
	waitFor(t, 3*time.Second, "expiry applied", func() bool { return !a.has("10.0.0.7", 0) && !b.has("10.0.0.7", 0) })
	late := time.Since(o.ExpiresAt)
	t.Logf("expiry applied on both replicas %v after expires_at", late)
	if late > 500*time.Millisecond {
		t.Errorf("expiry applied %v late", late)
	}
	waitFor(t, 2*time.Second, "override deleted", func() bool {
		return count(t, db, "SELECT count(*) FROM sluice_overrides") == 0
	})
	// A replica's syncs run one at a time, each expiring what is due
	// before it loads: once a sync that started now has finished on both,
	// neither has an expiry of this override still in flight.
	for _, r := range []*replica{a, b} {
		if err := r.s.ResyncWait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	h, err := db.OverrideHistory(context.Background(), stored.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[1].Action != postgres.ActionExpire {
		t.Fatalf("history %+v, want create and one expire", h)
	}
}

// TestSyncerListenerReconnect kills the listener's connection, changes an
// override while it is down, and expects the replica to catch up when it
// reconnects (the periodic reload is an hour away).
func TestSyncerListenerReconnect(t *testing.T) {
	db, dsn := migratedDB(t)
	r := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync, RetryMin: 700 * time.Millisecond, RetryMax: time.Second})
	waitFor(t, 5*time.Second, "listener up", func() bool { return r.s.Status().Listening })

	for round := 1; round <= 2; round++ {
		n := count(t, db, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = $1) t`, postgres.ListenerApplicationName)
		if n != 1 {
			t.Fatalf("round %d: terminated %d listener connections, want 1", round, n)
		}
		waitFor(t, 2*time.Second, "listener noticed", func() bool { return !r.s.Status().Listening })
		rpu := uint32(10 * round)
		if _, _, err := db.PutOverride(context.Background(), newOverride("10.0.0.7", rpu), "alice"); err != nil {
			t.Fatal(err)
		}
		if r.s.Status().Listening {
			t.Fatalf("round %d: listener back before the change; the test proves nothing", round)
		}
		took := waitFor(t, 5*time.Second, "change made while down seen", func() bool { return r.has("10.0.0.7", rpu) })
		t.Logf("round %d: change made while the listener was down applied %v later", round, took)
		if !r.s.Status().Listening {
			t.Fatalf("round %d: caught up without listening again", round)
		}
	}
}

// TestSyncerPostgresOutage stops Postgres: the replica keeps its overrides,
// still expires them on time, and catches up when Postgres is back.
func TestSyncerPostgresOutage(t *testing.T) {
	srv := limitertest.NewPostgresServer(t)
	db := openDB(t, srv.DSN)
	r := startReplica(t, srv.DSN, postgres.SyncConfig{Interval: noResync, RetryMin: 100 * time.Millisecond, RetryMax: 300 * time.Millisecond})
	ctx := context.Background()
	if _, _, err := db.PutOverride(ctx, newOverride("10.0.0.1", 5), "alice"); err != nil {
		t.Fatal(err)
	}
	soon := newOverride("10.0.0.2", 5)
	soon.ExpiresAt = time.Now().Add(1500 * time.Millisecond)
	expiring, _, err := db.PutOverride(ctx, soon, "alice")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "both seen", func() bool { return r.has("10.0.0.1", 0) && r.has("10.0.0.2", 0) })

	srv.Stop()
	waitFor(t, 3*time.Second, "listener down", func() bool { return !r.s.Status().Listening })
	if !r.has("10.0.0.1", 0) {
		t.Fatal("overrides lost while Postgres is down")
	}
	waitFor(t, 3*time.Second, "expiry applied while Postgres is down", func() bool { return !r.has("10.0.0.2", 0) })
	if late := time.Since(soon.ExpiresAt); late > 500*time.Millisecond {
		t.Errorf("expiry applied %v late", late)
	}
	if !r.has("10.0.0.1", 0) {
		t.Fatal("the other override went with the expiry")
	}

	srv.Start()
	waitFor(t, 5*time.Second, "listener back", func() bool { return r.s.Status().Listening })
	if _, _, err := db.PutOverride(ctx, newOverride("10.0.0.3", 5), "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "new override seen after the outage", func() bool { return r.has("10.0.0.3", 0) })
	if st := r.s.Status(); st.LastError != nil {
		t.Fatalf("status after recovery: %+v", st)
	}
	h, err := db.OverrideHistory(ctx, expiring.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[1].Action != postgres.ActionExpire {
		t.Fatalf("history of the override that expired during the outage: %+v", h)
	}
}

// TestSyncerStartsWithoutPostgres: Start returns promptly with Postgres
// down; the replica migrates and loads once Postgres comes up.
func TestSyncerStartsWithoutPostgres(t *testing.T) {
	srv := limitertest.NewPostgresServer(t)
	srv.Stop()
	start := time.Now()
	r := startReplica(t, srv.DSN, postgres.SyncConfig{Interval: noResync, RetryMin: 100 * time.Millisecond, RetryMax: 300 * time.Millisecond})
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Start took %v with Postgres down", d)
	}
	st := r.s.Status()
	if st.LastError == nil || st.Listening || len(r.s.Snapshot().Overrides) != 0 {
		t.Fatalf("status with Postgres down: %+v", st)
	}
	t.Logf("status with Postgres down: %v", st.LastError)
	srv.Start()
	waitFor(t, 5*time.Second, "listening", func() bool { return r.s.Status().Listening })
	waitFor(t, 5*time.Second, "loaded", func() bool { return r.s.Status().LastError == nil })
	db := openDB(t, srv.DSN)
	if _, _, err := db.PutOverride(context.Background(), newOverride("10.0.0.7", 50), "alice"); err != nil {
		t.Fatalf("put after the replica migrated: %v", err)
	}
	waitFor(t, time.Second, "seen", func() bool { return r.has("10.0.0.7", 50) })
}

// TestSyncerResync: Resync reloads without a notification (here, a change
// written with notifications lost: straight into the table).
func TestSyncerResync(t *testing.T) {
	db, dsn := migratedDB(t)
	r := startReplica(t, dsn, postgres.SyncConfig{Interval: noResync})
	// The reload that follows the listener's connect is over.
	waitFor(t, 5*time.Second, "listener up", func() bool { return r.s.Status().Listening })
	// The reload that follows the listener's connect may still be running
	// on a slow machine and pick up a row inserted now: insert until one
	// row stays unseen, which shows nothing but a resync will load it.
	var ip string
	for i := 1; ; i++ {
		if i > 5 {
			t.Fatal("every row inserted by hand was seen without a notification or resync")
		}
		time.Sleep(200 * time.Millisecond)
		ip = "10.0.0." + strconv.Itoa(i)
		exec1(t, db, `INSERT INTO sluice_overrides (domain, path, unit, requests_per_unit, updated_by)
			VALUES ('edge', '[{"key":"remote_address","value":"`+ip+`"}]', 'second', 3, 'hand')`)
		time.Sleep(300 * time.Millisecond)
		if !r.has(ip, 0) {
			break
		}
	}
	r.s.Resync()
	waitFor(t, 2*time.Second, "resync", func() bool { return r.has(ip, 3) })

	// ResyncWait returns once a reload that includes a row inserted
	// before the call has been published: no polling.
	for i := 0; i < 20; i++ {
		ip := "10.0.1." + strconv.Itoa(i)
		exec1(t, db, `INSERT INTO sluice_overrides (domain, path, unit, requests_per_unit, updated_by)
			VALUES ('edge', '[{"key":"remote_address","value":"`+ip+`"}]', 'second', 4, 'hand')`)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.s.ResyncWait(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ResyncWait: %v", err)
		}
		if !r.has(ip, 4) {
			t.Fatalf("row %d: not in the snapshot when ResyncWait returned", i)
		}
	}
	// A stopped syncer says so rather than waiting out the context.
	if err := r.s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.s.ResyncWait(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("ResyncWait on a stopped syncer: %v after %v", err, time.Since(start))
	}
}

// TestSyncerInterval: the periodic reload heals a missed notification.
func TestSyncerInterval(t *testing.T) {
	db, dsn := migratedDB(t)
	r := startReplica(t, dsn, postgres.SyncConfig{Interval: 300 * time.Millisecond})
	exec1(t, db, `INSERT INTO sluice_overrides (domain, path, unit, requests_per_unit, updated_by)
		VALUES ('edge', '[{"key":"remote_address","value":"10.0.0.9"}]', 'second', 3, 'hand')`)
	waitFor(t, 2*time.Second, "periodic reload", func() bool { return r.has("10.0.0.9", 3) })
}
