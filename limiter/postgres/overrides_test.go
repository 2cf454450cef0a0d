//go:build integration

package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/postgres"
)

// openDB opens dsn for t and closes it when t ends.
func openDB(t testing.TB, dsn string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(postgres.Config{DSN: dsn, QueryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// migratedDB is a fresh Postgres with the schema in place.
func migratedDB(t testing.TB) (*postgres.DB, string) {
	t.Helper()
	dsn := limitertest.StartPostgres(t)
	db := openDB(t, dsn)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, dsn
}

func exec1(t testing.TB, db *postgres.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t testing.TB, db *postgres.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestMigrateTwice(t *testing.T) {
	db := openDB(t, limitertest.StartPostgres(t))
	ctx := context.Background()
	first, err := db.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	migs, err := postgres.Migrations()
	if err != nil || len(migs) == 0 {
		t.Fatalf("Migrations() = %v, %v", migs, err)
	}
	if len(first) != len(migs) || first[0] != 1 {
		t.Fatalf("first Migrate applied %v, want every version of %d", first, len(migs))
	}
	second, err := db.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 0 {
		t.Fatalf("second Migrate applied %v, want nothing", second)
	}
	if n := count(t, db, "SELECT count(*) FROM sluice_schema_migrations"); n != len(migs) {
		t.Fatalf("%d migrations recorded, want %d", n, len(migs))
	}
	if n := count(t, db, "SELECT count(*) FROM sluice_overrides"); n != 0 {
		t.Fatalf("%d overrides in a fresh schema", n)
	}
}

// TestMigrateConcurrent starts replicas at once: eight sessions migrate the
// same fresh database together, and each migration is applied once.
func TestMigrateConcurrent(t *testing.T) {
	dsn := limitertest.StartPostgres(t)
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied [][]int
		errs    []error
	)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		db := openDB(t, dsn)
		if err := db.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			a, err := db.Migrate(context.Background())
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, a)
			errs = append(errs, err)
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	appliers := 0
	for _, a := range applied {
		if len(a) > 0 {
			appliers++
		}
	}
	if appliers != 1 {
		t.Fatalf("%d sessions applied migrations (%v), want exactly 1", appliers, applied)
	}
	migs, err := postgres.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, dsn)
	if got := count(t, db, "SELECT count(*) FROM sluice_schema_migrations"); got != len(migs) {
		t.Fatalf("%d migrations recorded, want %d", got, len(migs))
	}
}

const envMigrateHelper = "SLUICE_TEST_MIGRATE_HELPER_DSN"

// TestMigrateHelperProcess is run as a child process by
// TestMigrateConcurrentProcesses; on its own it does nothing.
func TestMigrateHelperProcess(t *testing.T) {
	dsn := os.Getenv(envMigrateHelper)
	if dsn == "" {
		t.Skip("helper process for TestMigrateConcurrentProcesses")
	}
	db := openDB(t, dsn)
	applied, err := db.Migrate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("APPLIED=%v\n", applied)
}

// TestMigrateConcurrentProcesses migrates one database from four processes
// started together.
func TestMigrateConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dsn := limitertest.StartPostgres(t)
	const n = 4
	outs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateHelperProcess$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), envMigrateHelper+"="+dsn)
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}()
	}
	wg.Wait()
	appliers := 0
	for i := range outs {
		if errs[i] != nil {
			t.Fatalf("process %d: %v\n%s", i, errs[i], outs[i])
		}
		switch {
		case strings.Contains(outs[i], "APPLIED=[]"):
		case strings.Contains(outs[i], "APPLIED=[1"):
			appliers++
		default:
			t.Fatalf("process %d did not report: %s", i, outs[i])
		}
	}
	if appliers != 1 {
		t.Fatalf("%d processes applied migrations, want 1:\n%s", appliers, strings.Join(outs, "\n"))
	}
}

func newOverride(value string, rpu uint32) limiter.Override {
	return limiter.Override{
		Domain:      "edge",
		Descriptors: []limiter.OverrideEntry{{Key: "remote_address", Value: value}},
		RateLimit:   limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: rpu, Burst: 2 * rpu},
		Reason:      "partner load test",
	}
}

// sameOverride compares what a caller gave with what came back, ignoring
// what the store sets.
func sameOverride(t *testing.T, got, want limiter.Override) {
	t.Helper()
	got.ID, got.CreatedAt, got.UpdatedAt, got.UpdatedBy = 0, time.Time{}, time.Time{}, ""
	want.ID, want.CreatedAt, want.UpdatedAt, want.UpdatedBy = 0, time.Time{}, time.Time{}, ""
	if !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("expires_at %v, want %v", got.ExpiresAt, want.ExpiresAt)
	}
	got.ExpiresAt, want.ExpiresAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stored\n %+v\nwant\n %+v", got, want)
	}
}

func TestOverrideCRUD(t *testing.T) {
	db, _ := migratedDB(t)
	ctx := context.Background()

	o := newOverride("10.0.0.7", 50)
	created, isNew, err := db.PutOverride(ctx, o, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !isNew || created.ID == 0 || created.UpdatedBy != "alice" || created.CreatedAt.IsZero() || !created.CreatedAt.Equal(created.UpdatedAt) {
		t.Fatalf("created %+v (new %v)", created, isNew)
	}
	sameOverride(t, created, o)
	got, err := db.GetOverride(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("Get = %+v, want %+v", got, created)
	}

	// The same path again replaces it, keeping id and created_at.
	o2 := newOverride("10.0.0.7", 80)
	o2.Reason = "more"
	o2.ExpiresAt = time.Now().Add(time.Hour).Truncate(time.Microsecond).UTC()
	updated, isNew, err := db.PutOverride(ctx, o2, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if isNew || updated.ID != created.ID || !updated.CreatedAt.Equal(created.CreatedAt) || updated.UpdatedAt.Before(created.UpdatedAt) || updated.UpdatedBy != "bob" {
		t.Fatalf("updated %+v (new %v), created %+v", updated, isNew, created)
	}
	sameOverride(t, updated, o2)

	// Every form of rate_limit round-trips.
	forms := []limiter.Override{
		{Domain: "edge", Descriptors: []limiter.OverrideEntry{{Key: "remote_address", Value: ""}}, RateLimit: limiter.RateLimit{Unit: limiter.Minute, RequestsPerUnit: 7}},
		{Domain: "edge", Descriptors: []limiter.OverrideEntry{{Key: "remote_address", Value: "6.6.6.6"}}, RateLimit: limiter.RateLimit{Unit: limiter.Hour}},
		{Domain: "edge", Descriptors: []limiter.OverrideEntry{{Key: "remote_address", Value: "127.0.0.1"}}, RateLimit: limiter.RateLimit{Unlimited: true, Name: "loopback"}},
		{Domain: "api", Descriptors: []limiter.OverrideEntry{{Key: "tenant", Value: "acme"}, {Key: "plan", Value: "free"}},
			RateLimit: limiter.RateLimit{Unit: limiter.Day, UnitMultiplier: 2, RequestsPerUnit: 1000, Burst: 10, Name: "acme-free", Replaces: []string{"free"}}},
		{Domain: "edge", Descriptors: []limiter.OverrideEntry{{Key: "path", Value: "weird \" : | {} \n ü"}}, RateLimit: limiter.RateLimit{Unit: limiter.Second, RequestsPerUnit: 1}},
	}
	for _, f := range forms {
		s, isNew, err := db.PutOverride(ctx, f, "carol")
		if err != nil {
			t.Fatalf("put %+v: %v", f, err)
		}
		if !isNew {
			t.Fatalf("put %+v: not new", f)
		}
		sameOverride(t, s, f)
		g, err := db.GetOverride(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameOverride(t, g, f)
	}
	list, err := db.ListOverrides(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1+len(forms) {
		t.Fatalf("List has %d overrides, want %d", len(list), 1+len(forms))
	}
	if list[0].Domain != "api" {
		t.Fatalf("List not ordered by domain: %+v", list[0])
	}

	deleted, err := db.DeleteOverride(ctx, created.ID, "dave")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(deleted, updated) {
		t.Fatalf("Delete returned %+v, want %+v", deleted, updated)
	}
	if _, err := db.GetOverride(ctx, created.ID); !errors.Is(err, postgres.ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if _, err := db.DeleteOverride(ctx, created.ID, "dave"); !errors.Is(err, postgres.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := db.GetOverride(ctx, 999999); !errors.Is(err, postgres.ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}

	hist, err := db.OverrideHistory(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		action, actor string
		old, new      *limiter.Override
	}
	want := []row{
		{postgres.ActionCreate, "alice", nil, &created},
		{postgres.ActionUpdate, "bob", &created, &updated},
		{postgres.ActionDelete, "dave", &updated, nil},
	}
	if len(hist) != len(want) {
		t.Fatalf("history %+v, want %d entries", hist, len(want))
	}
	for i, h := range hist {
		w := want[i]
		if h.Action != w.action || h.Actor != w.actor || h.OverrideID != created.ID || h.At.IsZero() {
			t.Errorf("history[%d] = %+v, want %s by %s", i, h, w.action, w.actor)
		}
		if !reflect.DeepEqual(h.Old, w.old) || !reflect.DeepEqual(h.New, w.new) {
			t.Errorf("history[%d] old/new\n %+v %+v\nwant\n %+v %+v", i, h.Old, h.New, w.old, w.new)
		}
		if i > 0 && h.At.Before(hist[i-1].At) {
			t.Errorf("history out of order")
		}
	}
	if _, err := db.OverrideHistory(ctx, 999999); !errors.Is(err, postgres.ErrNotFound) {
		t.Fatalf("history of an unknown id: %v", err)
	}
	// A live override has its create row.
	if h, err := db.OverrideHistory(ctx, list[0].ID); err != nil || len(h) != 1 {
		t.Fatalf("history of a live override: %v, %v", h, err)
	}
}

// TestOverrideAuditSameTransaction makes the history write fail and checks
// that the change it records did not happen either.
func TestOverrideAuditSameTransaction(t *testing.T) {
	db, _ := migratedDB(t)
	ctx := context.Background()
	exec1(t, db, "ALTER TABLE sluice_override_history ADD CONSTRAINT test_no_mallory CHECK (actor <> 'mallory')")

	if _, _, err := db.PutOverride(ctx, newOverride("10.0.0.1", 5), "mallory"); err == nil {
		t.Fatal("put by mallory succeeded")
	}
	if n := count(t, db, "SELECT count(*) FROM sluice_overrides"); n != 0 {
		t.Fatalf("%d overrides written without their history", n)
	}
	o, _, err := db.PutOverride(ctx, newOverride("10.0.0.1", 5), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.PutOverride(ctx, newOverride("10.0.0.1", 99), "mallory"); err == nil {
		t.Fatal("update by mallory succeeded")
	}
	if _, err := db.DeleteOverride(ctx, o.ID, "mallory"); err == nil {
		t.Fatal("delete by mallory succeeded")
	}
	got, err := db.GetOverride(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, o) {
		t.Fatalf("override changed without history: %+v, was %+v", got, o)
	}
	if n := count(t, db, "SELECT count(*) FROM sluice_override_history"); n != 1 {
		t.Fatalf("%d history rows, want 1", n)
	}
}

// TestOverridePutConcurrent writes one new path from many sessions at once:
// one creates it, the others update it, and none fails.
func TestOverridePutConcurrent(t *testing.T) {
	db, dsn := migratedDB(t)
	const n = 8
	var wg sync.WaitGroup
	results := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		d := openDB(t, dsn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, results[i], errs[i] = d.PutOverride(context.Background(), newOverride("10.9.9.9", uint32(i+1)), fmt.Sprintf("writer-%d", i))
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	createdN := 0
	for _, c := range results {
		if c {
			createdN++
		}
	}
	if createdN != 1 {
		t.Fatalf("%d writers created the override, want 1", createdN)
	}
	if got := count(t, db, "SELECT count(*) FROM sluice_overrides"); got != 1 {
		t.Fatalf("%d rows, want 1", got)
	}
	if got := count(t, db, "SELECT count(*) FROM sluice_override_history WHERE action = 'create'"); got != 1 {
		t.Fatalf("%d create rows, want 1", got)
	}
	if got := count(t, db, "SELECT count(*) FROM sluice_override_history WHERE action = 'update'"); got != n-1 {
		t.Fatalf("%d update rows, want %d", got, n-1)
	}
}

// TestExpireOverridesOnce expires from eight replicas at once: one expire
// row per override.
func TestExpireOverridesOnce(t *testing.T) {
	db, dsn := migratedDB(t)
	ctx := context.Background()
	var ids []int64
	for _, v := range []string{"1.1.1.1", "2.2.2.2"} {
		o := newOverride(v, 5)
		o.ExpiresAt = time.Now().Add(time.Hour)
		s, _, err := db.PutOverride(ctx, o, "alice")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	keep, _, err := db.PutOverride(ctx, newOverride("3.3.3.3", 5), "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is due yet.
	if gone, err := db.ExpireOverrides(ctx); err != nil || len(gone) != 0 {
		t.Fatalf("ExpireOverrides before expiry = %v, %v", gone, err)
	}
	exec1(t, db, "UPDATE sluice_overrides SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL")

	const n = 8
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  []error
	)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		d := openDB(t, dsn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			gone, err := d.ExpireOverrides(context.Background())
			mu.Lock()
			defer mu.Unlock()
			total += len(gone)
			errs = append(errs, err)
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if total != len(ids) {
		t.Fatalf("%d expiries returned, want %d", total, len(ids))
	}
	for _, id := range ids {
		h, err := db.OverrideHistory(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 2 || h[1].Action != postgres.ActionExpire || h[1].Actor != postgres.ExpireActor || h[1].Old == nil || h[1].New != nil {
			t.Fatalf("history of %d: %+v, want create then one expire", id, h)
		}
	}
	if _, err := db.GetOverride(ctx, keep.ID); err != nil {
		t.Fatalf("an override with no expiry went: %v", err)
	}
}

// TestOverrideNotify checks every change is announced, with the id.
func TestOverrideNotify(t *testing.T) {
	db, dsn := migratedDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	o, _, err := db.PutOverride(ctx, newOverride("1.2.3.4", 5), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.PutOverride(ctx, newOverride("1.2.3.4", 6), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteOverride(ctx, o.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
		if n.Payload != fmt.Sprint(o.ID) {
			t.Fatalf("notification %d payload %q, want %d", i, n.Payload, o.ID)
		}
	}
}
