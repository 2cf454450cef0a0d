package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-rl/sluice/limiter"
)

// SyncConfig tunes a Syncer. Zero fields take the defaults.
type SyncConfig struct {
	// Interval is how often the full override set is read again even
	// without a notification, healing a missed one; default 30s.
	Interval time.Duration
	// RetryMin and RetryMax bound the wait before the listener dials again
	// after losing its connection (doubling from RetryMin); defaults 100ms
	// and 5s.
	RetryMin, RetryMax time.Duration
	// OnSnapshot is called with each new set of overrides in force: after
	// a load that changed it, and when an override's expiry passes. Calls
	// come from one goroutine, in order; the snapshot must not be modified.
	OnSnapshot func(*Snapshot)
	// Logger; nil discards.
	Logger *slog.Logger
}

// Defaults for SyncConfig's zero fields.
const (
	DefaultSyncInterval = 30 * time.Second
	defaultRetryMin     = 100 * time.Millisecond
	defaultRetryMax     = 5 * time.Second
)

// ListenerApplicationName is the application_name of the listener's
// connection, which tells it apart in pg_stat_activity.
const ListenerApplicationName = "sluice-overrides-listener"

// Snapshot is the set of overrides in force at one moment. It is immutable.
type Snapshot struct {
	// Overrides in force (not past their expiry), by domain then id.
	Overrides []limiter.Override
	// LoadedAt is when the set was last read from Postgres; zero before the
	// first read.
	LoadedAt time.Time
}

// SyncStatus is a Syncer's state, for health checks.
type SyncStatus struct {
	Listening bool      // the listener's connection is up and listening
	LoadedAt  time.Time // last successful load
	LastError error     // of the last load or listen attempt; nil when it worked
	Overrides int       // in force
}

// Syncer keeps every replica's view of the overrides current: it LISTENs
// for change notifications on a connection of its own and reloads the
// full set on each one, on each (re)connect and every Interval, so a
// notification missed while disconnected is made up for. Expiries are
// enforced locally, on time, whether Postgres answers or not; each
// replica also runs ExpireOverrides, which records each expiry once.
//
// The request path reads Snapshot, which never waits on Postgres. Create
// with NewSyncer, then Start; Close stops its goroutines.
type Syncer struct {
	db  *DB
	cfg SyncConfig
	log *slog.Logger

	snap atomic.Pointer[Snapshot]
	kick chan struct{} // buffered 1: a reload is wanted

	mu        sync.Mutex
	listening bool
	loadErr   error
	listenErr error
	migrated  bool

	loaded []limiter.Override // last set read, expired ones included

	// Loads started and finished, for ResyncWait; synced is closed and
	// replaced when one finishes, stopped when the loop ends.
	started, finished uint64
	synced            chan struct{}
	stopped           chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewSyncer returns a Syncer for db; it does nothing until Start.
func NewSyncer(db *DB, cfg SyncConfig) *Syncer {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultSyncInterval
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = defaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(defaultRetryMax, cfg.RetryMin)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{db: db, cfg: cfg, log: log.With("component", "overrides"), kick: make(chan struct{}, 1),
		synced: make(chan struct{}), stopped: make(chan struct{})}
	s.snap.Store(&Snapshot{})
	return s
}

// Start makes sure the schema is migrated, loads the overrides once
// (within twice the query timeout, so a replica starts with them when
// Postgres answers; a failure is logged, and the load is retried when the
// listener connects and every Interval), and starts
// the listener and the reload loop, which run until Close or until ctx
// ends. Start must be called once.
func (s *Syncer) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	ictx, cancel := context.WithTimeout(ctx, 2*s.db.queryTimeout)
	s.sync(ictx)
	cancel()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.listen(ctx)
	}()
	go func() {
		defer s.wg.Done()
		defer close(s.stopped)
		s.loop(ctx)
	}()
}

// Close stops the Syncer and waits for its goroutines, or for ctx to end.
// The last snapshot stays readable.
func (s *Syncer) Close(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close overrides syncer: %w", ctx.Err())
	}
}

// Snapshot is the set of overrides in force. It never blocks.
func (s *Syncer) Snapshot() *Snapshot { return s.snap.Load() }

// Resync asks for a reload as soon as possible, without waiting for it:
// after a change made through this replica, or on an operator's request.
func (s *Syncer) Resync() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// ResyncWait asks for a reload and waits until one that started after the
// call has finished, its overrides published (OnSnapshot called) or its
// failure recorded in Status, or until ctx ends or the Syncer stops. After
// a change made through this replica, the replica decides with it when
// ResyncWait returns nil.
func (s *Syncer) ResyncWait(ctx context.Context) error {
	s.mu.Lock()
	target := s.started + 1
	s.mu.Unlock()
	s.Resync()
	for {
		s.mu.Lock()
		done, next := s.finished >= target, s.synced
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-next:
		case <-s.stopped:
			return errors.New("overrides syncer stopped")
		case <-ctx.Done():
			return fmt.Errorf("overrides reload: %w", ctx.Err())
		}
	}
}

// Status reports the listener's connection and the last load.
func (s *Syncer) Status() SyncStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snap.Load()
	err := s.loadErr
	if err == nil {
		err = s.listenErr
	}
	return SyncStatus{Listening: s.listening, LoadedAt: snap.LoadedAt, LastError: err, Overrides: len(snap.Overrides)}
}

// loop reloads on a kick and every Interval, and publishes on time when an
// override expires.
func (s *Syncer) loop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	for {
		expiry.Reset(s.untilExpiry())
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
			s.sync(ctx)
		case <-tick.C:
			s.sync(ctx)
		case <-expiry.C:
			// Stop applying it now, whether or not Postgres answers; then
			// record the expiry and reload.
			s.publish()
			s.sync(ctx)
		}
	}
}

// untilExpiry is the wait until the next loaded override expires (an
// hour when none does).
func (s *Syncer) untilExpiry() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	next := time.Hour
	for i := range s.loaded {
		if e := s.loaded[i].ExpiresAt; !e.IsZero() {
			d := e.Sub(now)
			if d < 0 {
				d = 0
			}
			next = min(next, d)
		}
	}
	// A moment past the expiry, so the clocks of this host and Postgres
	// agree that it has passed.
	return next + 10*time.Millisecond
}

// sync migrates (once), expires what is due, and loads and publishes the
// override set. A failure keeps the last set in force.
func (s *Syncer) sync(ctx context.Context) {
	s.mu.Lock()
	s.started++
	n := s.started
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.finished = n
		close(s.synced)
		s.synced = make(chan struct{})
		s.mu.Unlock()
	}()
	err := s.load(ctx)
	s.mu.Lock()
	prev := s.loadErr
	s.loadErr = err
	s.mu.Unlock()
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
	case err != nil && (prev == nil || prev.Error() != err.Error()):
		s.log.Warn("overrides not loaded; keeping the last set", "err", err.Error())
	case err == nil && prev != nil:
		s.log.Info("overrides loaded again")
	}
	s.publish()
}

func (s *Syncer) load(ctx context.Context) error {
	s.mu.Lock()
	migrated := s.migrated
	s.mu.Unlock()
	if !migrated {
		mctx, cancel := context.WithTimeout(ctx, 4*s.db.queryTimeout)
		applied, err := s.db.Migrate(mctx)
		cancel()
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			s.log.Info("postgres schema migrated", "versions", applied)
		}
		s.mu.Lock()
		s.migrated = true
		s.mu.Unlock()
	}
	expired, err := s.db.ExpireOverrides(ctx)
	if err != nil {
		return err
	}
	for _, o := range expired {
		s.log.Info("override expired", "id", o.ID, "domain", o.Domain, "path", o.PathString(), "expires_at", o.ExpiresAt)
	}
	set, err := s.db.ListOverrides(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.loaded = set
	s.mu.Unlock()
	s.snap.Store(&Snapshot{Overrides: s.snap.Load().Overrides, LoadedAt: time.Now()})
	return nil
}

// publish stores the loaded overrides not past their expiry as the
// snapshot, and calls OnSnapshot when the set differs from the last one.
func (s *Syncer) publish() {
	now := time.Now()
	s.mu.Lock()
	var live []limiter.Override
	for _, o := range s.loaded {
		if o.ExpiresAt.IsZero() || o.ExpiresAt.After(now) {
			live = append(live, o)
		}
	}
	s.mu.Unlock()
	cur := s.snap.Load()
	if reflect.DeepEqual(live, cur.Overrides) {
		return
	}
	next := &Snapshot{Overrides: live, LoadedAt: cur.LoadedAt}
	s.snap.Store(next)
	s.log.Info("overrides in force changed", "overrides", len(live))
	if s.cfg.OnSnapshot != nil {
		s.cfg.OnSnapshot(next)
	}
}

// listen keeps a connection LISTENing on NotifyChannel, kicking a reload on
// each notification and each (re)connect, until ctx ends.
func (s *Syncer) listen(ctx context.Context) {
	wait := s.cfg.RetryMin
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() { wait = s.cfg.RetryMin })
		s.setListening(false, err)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("override listener disconnected; dialing again", "in", wait, "err", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, s.cfg.RetryMax)
	}
}

// listenOnce dials, LISTENs and waits for notifications until the
// connection fails or ctx ends. connected is called once listening.
func (s *Syncer) listenOnce(ctx context.Context, connected func()) error {
	cc := s.db.pool.Config().ConnConfig
	cc.RuntimeParams["application_name"] = ListenerApplicationName
	dctx, cancel := context.WithTimeout(ctx, cc.ConnectTimeout+s.db.queryTimeout)
	conn, err := pgx.ConnectConfig(dctx, cc)
	if err != nil {
		cancel()
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	_, err = conn.Exec(dctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize())
	cancel()
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.setListening(true, nil)
	connected()
	s.log.Info("override listener connected")
	// Whatever changed while the listener was away is read now.
	s.Resync()
	for {
		// Wake up every interval to check the connection: a peer that
		// vanished without closing it would otherwise leave this waiting
		// for ever.
		wctx, cancel := context.WithTimeout(ctx, s.cfg.Interval)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			s.Resync()
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, s.db.queryTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping: %w", err)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

func (s *Syncer) setListening(on bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listening = on
	s.listenErr = err
	if errors.Is(err, context.Canceled) {
		s.listenErr = nil
	}
}
