// Package breaker is a circuit breaker for the calls Sluice makes to its
// backends (one breaker guards Redis, one Postgres). While a backend fails,
// the breaker refuses calls at once with ErrOpen instead of letting every
// request wait for a timeout, and the caller applies its failure mode.
//
// It has no dependencies beyond the standard library, and imports no other
// Sluice package: a consumer declares the one-method interface it needs
// (Do(ctx, fn) error) and is handed a *Breaker.
//
// # States
//
//	          trip                      OpenDuration passed,
//	CLOSED ───────────▶ OPEN ─────────▶ next call is a probe ──▶ HALF_OPEN
//	  ▲                  ▲                                          │
//	  │                  └── a probe or a check fails (slow probe) ─┤
//	  └───── HalfOpenMaxCalls probes succeed, or a check passes ────┘
//
// CLOSED: calls pass and are counted. The breaker trips to OPEN when
// ConsecutiveFailures calls fail in a row, or when the sliding window
// (Window, in WindowBuckets buckets) holds at least MinCalls calls and the
// share of failures reaches FailureRateThreshold, or the share of slow
// calls (taking SlowCallDuration or more) reaches SlowCallRateThreshold.
// Rates are checked when a call fails or is slow.
//
// OPEN: calls get ErrOpen without reaching the backend. After
// OpenDuration the breaker is HALF_OPEN and the next call is its first
// probe. No timer runs: the change is made by whatever looks first (a
// call, State, Snapshot or ReportCheck), so no reader ever sees OPEN past
// the open period.
//
// HALF_OPEN: up to HalfOpenMaxCalls probes are admitted (further calls get
// ErrOpen). The breaker closes, with fresh counts, when HalfOpenMaxCalls
// probes have succeeded, and opens again, for another OpenDuration, on the
// first probe that fails, or that is slow when SlowCallRateThreshold is
// set. A probe whose caller gave up counts as neither and frees its slot.
// A call admitted in one state and finishing after the breaker has left it
// is not counted.
//
// A background health check of the backend counts too, through
// ReportCheck, so a breaker recovers when no call needs its backend: once
// the open period has passed, a passing check closes the breaker and a
// failing one opens it again for another OpenDuration. Checks change
// nothing while the breaker is CLOSED or still within its open period.
//
// Reset closes the breaker from any state. ForceOpen opens it and holds it
// OPEN, without probes, until Reset.
//
// # Outcomes
//
// A call's error decides how it counts: nil is a success; an error after
// the caller's own context ended (cancelled or past its deadline) counts as
// neither, since the backend is not to blame; running out of CallTimeout is
// a failure; any other error is a failure unless Config.IsFailure rejects
// it.
//
// # Cost
//
// A call through a CLOSED breaker takes no lock and allocates nothing:
// admission is one atomic load, and the outcome goes to atomic counters in
// the current window bucket. The clock is read once per call, twice with
// slow-call tracking on. CallTimeout costs a context.WithTimeout (several
// allocations) per call, so on the request path leave it 0 and let the
// store client's own timeouts bound the call.
//
// State changes are reported to Config.OnStateChange in order, outside
// the breaker's lock, and to Snapshot for health and metrics.
package breaker
