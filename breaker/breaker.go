package breaker

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// State is the state of a breaker. Its numeric value is the one exported
// by the sluice_breaker_state gauge: 0 closed, 1 half-open, 2 open.
type State uint8

const (
	StateClosed   State = 0 // calls pass and are counted
	StateHalfOpen State = 1 // a bounded number of probe calls pass
	StateOpen     State = 2 // calls are refused with ErrOpen
)

// String returns "closed", "half_open" or "open".
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half_open"
	case StateOpen:
		return "open"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText encodes s as its String form, so a State reads as "open" in
// JSON and YAML.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ErrOpen is returned by Do and Allow, without calling the backend, when
// the breaker is OPEN, or HALF_OPEN with all its probe slots taken. Callers
// test for it with errors.Is and fall back (see failure_mode in DESIGN.md).
var ErrOpen = errors.New("circuit breaker is open")

// outcome is how one finished call counts.
type outcome uint8

const (
	success outcome = iota
	failure
	ignored // the caller gave up: counts as neither
)

// permit is a call admitted by admit, to be passed to finish.
type permit struct {
	tok   uint64        // Breaker.sg when the call was admitted
	start time.Duration // since the epoch, when timed
	timed bool
}

type change struct{ from, to State }

// Breaker is a circuit breaker. It is safe for concurrent use. Make one
// with New.
type Breaker struct {
	name      string
	cfg       Config
	clock     Clock
	wall      bool // clock is the wall clock: call time.Now directly
	slowOn    bool // SlowCallDuration > 0
	slowTrips bool // SlowCallRateThreshold > 0
	epoch     time.Time

	// sg is the state in its low two bits and a generation above them; the
	// generation grows on every transition. Admission while closed reads
	// only sg, and a call whose sg is no longer current when it finishes is
	// not counted: it belongs to a state the breaker has left.
	sg atomic.Uint64
	// nextProbe is when an OPEN breaker may admit a probe, in nanoseconds
	// after epoch (math.MaxInt64 when forced open), so that calls refused
	// while open need no lock.
	nextProbe  atomic.Int64
	rejections atomic.Uint64

	_ [64]byte // keep sg, read by every call, off the cache line mu is on

	win *window
	// consecutive is the current run of failures.
	consecutive atomic.Int64

	mu         sync.Mutex
	openedAt   time.Time
	forced     bool
	probes     int // probes admitted in this HALF_OPEN period and not given back
	probesOK   int // probes in this HALF_OPEN period that succeeded
	changes    []change
	delivering bool // a goroutine is calling OnStateChange for changes
}

// New returns a CLOSED breaker called name (used in the state-change hook
// and in Snapshot), or a *ConfigError if cfg is not valid.
func New(name string, cfg Config) (*Breaker, error) {
	if name == "" {
		return nil, errors.New("breaker: name must not be empty")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Breaker{
		name:      name,
		cfg:       cfg,
		clock:     cfg.Clock,
		slowOn:    cfg.SlowCallDuration > 0,
		slowTrips: cfg.SlowCallRateThreshold > 0,
		win:       newWindow(cfg.Window, cfg.WindowBuckets),
	}
	if b.clock == nil {
		b.clock, b.wall = wallClock{}, true
	}
	b.epoch = b.now()
	return b, nil
}

// Name returns the name given to New.
func (b *Breaker) Name() string { return b.name }

// State returns the current state. An OPEN breaker whose OpenDuration has
// passed is HALF_OPEN, its probe due: State makes that change itself
// rather than wait for the next call, so no reader sees OPEN after the
// open period (the change is reported to OnStateChange as usual).
func (b *Breaker) State() State {
	s := b.state()
	if s == StateOpen && b.since() >= time.Duration(b.nextProbe.Load()) {
		now := b.since()
		b.mu.Lock()
		b.due(now)
		s = b.state()
		b.unlock()
	}
	return s
}

// state is the state as last set, without looking at the clock.
func (b *Breaker) state() State { return State(b.sg.Load() & 3) }

// due moves an OPEN breaker whose open period has passed to HALF_OPEN.
// Called with b.mu held; the caller releases it with unlock.
func (b *Breaker) due(now time.Duration) {
	if b.state() == StateOpen && now >= time.Duration(b.nextProbe.Load()) {
		b.setState(StateHalfOpen, now)
	}
}

// ReportCheck counts the outcome of a health check of the backend made
// outside Do and Allow (a background PING) as the breaker's recovery test,
// so that a breaker recovers even when no call needs its backend. Once
// the open period has passed (HALF_OPEN, or OPEN and due), a passing check
// (err nil) closes the breaker at once: it tested the backend as a probe
// would, and probes still in flight are not counted. A failing check then
// opens it again for another OpenDuration, as a failed probe does. In any
// other state a check changes nothing: a CLOSED breaker trips on calls
// only, an OPEN one waits out its OpenDuration, and one forced open waits
// for Reset. ReportCheck reports whether the state changed.
//
// The caller must not report a check that the breaker itself refused
// (ErrOpen), since that says nothing about the backend.
func (b *Breaker) ReportCheck(err error) bool {
	now := b.since()
	b.mu.Lock()
	b.due(now)
	changed := b.state() == StateHalfOpen
	if changed {
		if err == nil {
			b.setState(StateClosed, now)
		} else {
			b.consecutive.Add(1)
			b.setState(StateOpen, now)
		}
	}
	b.unlock()
	return changed
}

func (b *Breaker) now() time.Time {
	if b.wall {
		return time.Now()
	}
	return b.clock.Now()
}

// since returns the time elapsed since the epoch. For the wall clock it
// reads only the monotonic clock, which costs half of time.Now.
func (b *Breaker) since() time.Duration {
	if b.wall {
		return time.Since(b.epoch)
	}
	return b.clock.Now().Sub(b.epoch)
}

// Do calls fn through the breaker and returns its error as is.
//
// When the breaker is OPEN, or HALF_OPEN with HalfOpenMaxCalls probes
// already in flight, Do returns ErrOpen without calling fn. Otherwise fn
// runs with ctx, bounded by CallTimeout when that is set, and its result
// is counted: nil is a success; an error after ctx itself has ended
// (cancelled, or past the caller's own deadline) is the caller giving up
// and counts as neither success nor failure; running out of CallTimeout is
// a failure; any other error is a failure unless Config.IsFailure says it
// is not. A call that took SlowCallDuration or longer is also slow.
//
// fn must honour its context: Do does not abandon a running fn, so
// CallTimeout returns promptly only if fn returns when its context ends.
// If fn panics the call counts as a failure and the panic goes on.
func (b *Breaker) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	p, err := b.admit(b.slowOn)
	if err != nil {
		return err
	}
	if b.cfg.CallTimeout > 0 {
		return b.doTimeout(ctx, p, fn)
	}
	finished := false
	defer func() {
		if !finished {
			b.finish(p, failure, false)
		}
	}()
	err = fn(ctx)
	finished = true
	o := success
	if err != nil {
		o = b.classify(ctx, err)
	}
	b.finish(p, o, false)
	return err
}

func (b *Breaker) doTimeout(ctx context.Context, p permit, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.CallTimeout)
	defer cancel()
	finished := false
	defer func() {
		if !finished {
			b.finish(p, failure, false)
		}
	}()
	err := fn(cctx)
	finished = true
	var o outcome
	switch {
	case err != nil && ctx.Err() != nil:
		o = ignored
	case ctx.Err() == nil && cctx.Err() != nil:
		o = failure // the breaker's own timeout ran out
	case err == nil:
		o = success
	default:
		o = b.classify(ctx, err)
	}
	b.finish(p, o, false)
	return err
}

// classify counts a non-nil error returned by a call made with ctx.
func (b *Breaker) classify(ctx context.Context, err error) outcome {
	if ctx.Err() != nil {
		return ignored
	}
	if b.cfg.IsFailure != nil && !b.cfg.IsFailure(err) {
		return success
	}
	return failure
}

// Allow is the two-phase form of Do, for callers that cannot wrap the
// call in a closure (a pipelined Redis round trip, say). When the call may
// go ahead it returns done, which must be called exactly once with the
// call's result; extra calls of done are ignored. Otherwise it returns
// ErrOpen, as Do does. A HALF_OPEN breaker holds a probe slot until done is
// called, so a lost done keeps it from closing.
//
// done counts its error as Do does, except that Allow cannot see the
// caller's context: an error that is (or wraps) context.Canceled or
// context.DeadlineExceeded is taken to be the caller giving up and counts
// as neither success nor failure. Report backend timeouts with another
// error. A call whose done comes CallTimeout or more after Allow is a
// failure, whatever its error. Allow allocates its done function.
func (b *Breaker) Allow() (done func(err error), err error) {
	p, err := b.admit(b.slowOn || b.cfg.CallTimeout > 0)
	if err != nil {
		return nil, err
	}
	var called atomic.Bool
	return func(err error) {
		if called.Swap(true) {
			return
		}
		o := success
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			o = ignored
		case b.cfg.IsFailure != nil && !b.cfg.IsFailure(err):
		default:
			o = failure
		}
		b.finish(p, o, true)
	}, nil
}

// admit decides whether a call may go ahead. timed asks for the start time.
func (b *Breaker) admit(timed bool) (permit, error) {
	tok := b.sg.Load()
	if State(tok&3) == StateClosed {
		p := permit{tok: tok, timed: timed}
		if timed {
			p.start = b.since()
		}
		return p, nil
	}
	return b.admitSlow(tok)
}

// admitSlow admits a call when the breaker was not CLOSED at tok.
func (b *Breaker) admitSlow(tok uint64) (permit, error) {
	since := b.since()
	if State(tok&3) == StateOpen && since < time.Duration(b.nextProbe.Load()) {
		b.rejections.Add(1)
		return permit{}, ErrOpen
	}
	b.mu.Lock()
	tok = b.sg.Load()
	switch State(tok & 3) {
	case StateClosed:
		b.mu.Unlock()
		return permit{tok: tok, start: since, timed: true}, nil
	case StateOpen:
		if since < time.Duration(b.nextProbe.Load()) {
			b.mu.Unlock()
			b.rejections.Add(1)
			return permit{}, ErrOpen
		}
		b.setState(StateHalfOpen, since)
		tok = b.sg.Load()
	}
	if b.probes >= b.cfg.HalfOpenMaxCalls {
		b.unlock()
		b.rejections.Add(1)
		return permit{}, ErrOpen
	}
	b.probes++
	b.unlock()
	return permit{tok: tok, start: since, timed: true}, nil
}

// finish counts the outcome of a call admitted with p. viaAllow applies
// CallTimeout to the measured duration, as Do's context cannot.
func (b *Breaker) finish(p permit, o outcome, viaAllow bool) {
	if o == ignored && State(p.tok&3) == StateClosed {
		return // nothing to count, no slot to give back
	}
	now := b.since()
	slow := false
	if p.timed {
		d := now - p.start
		slow = b.slowOn && d >= b.cfg.SlowCallDuration
		if viaAllow && o != ignored && b.cfg.CallTimeout > 0 && d >= b.cfg.CallTimeout {
			o = failure
		}
	}
	if State(p.tok&3) == StateClosed {
		b.finishClosed(p.tok, now, o == failure, slow)
		return
	}
	b.mu.Lock()
	if b.sg.Load() == p.tok { // else admitted in a state the breaker has left
		switch {
		case o == ignored:
			b.probes-- // give the slot to another caller
		case o == failure || slow && b.slowTrips:
			b.consecutive.Add(1)
			b.setState(StateOpen, now)
		default:
			b.probesOK++
			if b.probesOK >= b.cfg.HalfOpenMaxCalls {
				b.setState(StateClosed, now)
			}
		}
	}
	b.unlock()
}

// finishClosed counts a call admitted while CLOSED at tok. It takes no
// lock unless the call starts a new window bucket or trips the breaker.
func (b *Breaker) finishClosed(tok uint64, now time.Duration, failed, slow bool) {
	if b.sg.Load() != tok {
		return // admitted in a state the breaker has left
	}
	b.win.add(&b.mu, now, failed, slow)
	var run int64
	if failed {
		run = b.consecutive.Add(1)
	} else if b.consecutive.Load() != 0 {
		b.consecutive.Store(0)
	}
	// Only a failure or a slow call can raise a rate, so only they check
	// for a trip.
	if (failed || slow && b.slowTrips) && b.shouldTrip(run, now) {
		b.mu.Lock()
		if b.sg.Load() == tok {
			b.setState(StateOpen, now)
		}
		b.unlock()
	}
}

// shouldTrip reports whether a CLOSED breaker's counts call for OPEN, with
// run the current run of failures.
func (b *Breaker) shouldTrip(run int64, now time.Duration) bool {
	c := &b.cfg
	if c.ConsecutiveFailures > 0 && run >= int64(c.ConsecutiveFailures) {
		return true
	}
	if c.FailureRateThreshold == 0 && c.SlowCallRateThreshold == 0 {
		return false
	}
	t := b.win.totals(now)
	if t.calls == 0 || t.calls < int64(c.MinCalls) {
		return false
	}
	if c.FailureRateThreshold > 0 && float64(t.failures)/float64(t.calls) >= c.FailureRateThreshold {
		return true
	}
	return c.SlowCallRateThreshold > 0 && float64(t.slow)/float64(t.calls) >= c.SlowCallRateThreshold
}

// setState moves the breaker to state to, starting a new generation, and
// queues the change for OnStateChange when the state differs. Called with
// b.mu held; the caller releases it with unlock.
func (b *Breaker) setState(to State, now time.Duration) {
	old := b.sg.Load()
	from := State(old & 3)
	b.sg.Store((old>>2+1)<<2 | uint64(to))
	switch to {
	case StateClosed:
		b.win.reset()
		b.consecutive.Store(0)
		b.openedAt = time.Time{}
		b.forced = false
		b.nextProbe.Store(0)
	case StateOpen:
		b.openedAt = b.epoch.Add(now)
		next := int64(math.MaxInt64)
		if !b.forced {
			next = int64(now + b.cfg.OpenDuration)
		}
		b.nextProbe.Store(next)
	case StateHalfOpen:
		b.probes, b.probesOK = 0, 0
	}
	if from != to && b.cfg.OnStateChange != nil {
		b.changes = append(b.changes, change{from, to})
	}
}

// unlock releases b.mu and, unless another goroutine is already at it,
// passes queued state changes to OnStateChange outside the lock. Changes
// queued while the hook runs (even by the hook itself) are delivered by
// the same loop, so the hook sees them one at a time and in order.
func (b *Breaker) unlock() {
	if len(b.changes) == 0 || b.delivering {
		b.mu.Unlock()
		return
	}
	b.delivering = true
	b.mu.Unlock()
	b.deliver()
}

func (b *Breaker) deliver() {
	clean := false
	defer func() {
		if !clean { // the hook panicked: let the next change be delivered
			b.mu.Lock()
			b.delivering = false
			b.mu.Unlock()
		}
	}()
	for {
		b.mu.Lock()
		if len(b.changes) == 0 {
			b.delivering = false
			b.mu.Unlock()
			clean = true
			return
		}
		c := b.changes[0]
		b.changes = append(b.changes[:0], b.changes[1:]...)
		b.mu.Unlock()
		b.cfg.OnStateChange(b.name, c.from, c.to)
	}
}

// Reset closes the breaker, whatever its state, and clears its counts
// (not the rejection total). It also ends ForceOpen. Calls in flight when
// Reset is called are not counted.
func (b *Breaker) Reset() {
	now := b.since()
	b.mu.Lock()
	b.setState(StateClosed, now)
	b.unlock()
}

// ForceOpen opens the breaker and keeps it OPEN, with no probes, until
// Reset. Calls in flight are not counted.
func (b *Breaker) ForceOpen() {
	now := b.since()
	b.mu.Lock()
	b.forced = true
	if b.state() == StateOpen {
		b.nextProbe.Store(math.MaxInt64)
	} else {
		b.setState(StateOpen, now)
	}
	b.unlock()
}

// Snapshot is a breaker's state and counts at one moment, for health and
// metrics.
type Snapshot struct {
	Name   string
	State  State
	Forced bool // opened by ForceOpen; stays OPEN until Reset
	// ConsecutiveFailures is the current run of failures (for a breaker that
	// tripped, the run that tripped it, plus failed probes).
	ConsecutiveFailures int
	// Window counts: calls counted in the sliding window, and how many of
	// them failed or were slow. Cleared when the breaker closes.
	WindowCalls     int
	WindowFailures  int
	WindowSlowCalls int
	// OpenedAt is when the breaker last opened; zero while CLOSED. It stays
	// set in HALF_OPEN, which is part of the same outage.
	OpenedAt time.Time
	// NextProbeAt is when an OPEN breaker admits its first probe (the first
	// call or ReportCheck at or after it); for a HALF_OPEN breaker, when
	// its probes became due, now or in the past. Zero when CLOSED or forced
	// open.
	NextProbeAt time.Time
	// HalfOpenProbes is the number of probes admitted in this HALF_OPEN
	// period (in flight or succeeded), at most HalfOpenMaxCalls.
	HalfOpenProbes int
	// Rejections is the number of calls refused with ErrOpen since New.
	Rejections uint64
}

// Snapshot returns the breaker's state and counts, with the window slid
// to the current time.
func (b *Breaker) Snapshot() Snapshot {
	now := b.since()
	b.mu.Lock()
	defer b.unlock()
	b.due(now)
	s := Snapshot{
		Name:                b.name,
		State:               b.state(),
		Forced:              b.forced,
		ConsecutiveFailures: int(b.consecutive.Load()),
		OpenedAt:            b.openedAt,
		Rejections:          b.rejections.Load(),
	}
	w := b.win.totals(now)
	s.WindowCalls, s.WindowFailures, s.WindowSlowCalls = int(w.calls), int(w.failures), int(w.slow)
	switch s.State {
	case StateOpen:
		if !b.forced {
			s.NextProbeAt = b.openedAt.Add(b.cfg.OpenDuration)
		}
	case StateHalfOpen:
		// Probes are due: NextProbeAt is when they became due, now or
		// in the past.
		s.NextProbeAt = b.openedAt.Add(b.cfg.OpenDuration)
		s.HalfOpenProbes = b.probes
	}
	return s
}
