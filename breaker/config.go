package breaker

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Clock tells the breaker the time. Tests inject one they can move; the
// default is the wall clock. CallTimeout is not driven by Clock: it uses
// context.WithTimeout, which always runs on the wall clock.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Config sets when a breaker trips and how it recovers. Start from
// DefaultConfig and change what you need; a zero threshold or count turns
// that trip condition off.
type Config struct {
	// ConsecutiveFailures trips the breaker after this many failures in a
	// row (successes reset the run; ignored calls do not). 0 turns it off.
	ConsecutiveFailures int `yaml:"consecutive_failures"`

	// FailureRateThreshold (0..1) trips the breaker when failures/calls in
	// the sliding window reaches it, once the window holds at least
	// MinCalls calls. 0 turns it off.
	FailureRateThreshold float64 `yaml:"failure_rate_threshold"`
	// MinCalls is the number of calls the window must hold before either
	// rate (failure or slow) can trip the breaker.
	MinCalls int `yaml:"min_calls"`
	// Window is the length of the sliding window the rates are taken over.
	Window time.Duration `yaml:"window"`
	// WindowBuckets is how many buckets Window is split into; the window
	// slides one bucket (Window/WindowBuckets) at a time.
	WindowBuckets int `yaml:"window_buckets"`

	// SlowCallDuration marks a call that takes at least this long as slow,
	// whether it succeeded or failed. 0 turns slow-call tracking off (and
	// saves reading the clock before each call).
	SlowCallDuration time.Duration `yaml:"slow_call_duration"`
	// SlowCallRateThreshold (0..1) trips the breaker when slow/calls in the
	// sliding window reaches it, once the window holds MinCalls calls. It
	// also makes a slow probe count as a failed probe. 0 turns it off.
	SlowCallRateThreshold float64 `yaml:"slow_call_rate_threshold"`

	// CallTimeout bounds each call made through Do: fn gets a context that
	// ends after CallTimeout, and a call that runs out of it is a failure.
	// 0 means no timeout (and no allocation per call). With Allow, a call
	// reported as done later than CallTimeout is a failure.
	CallTimeout time.Duration `yaml:"call_timeout"`

	// OpenDuration is how long the breaker stays OPEN before it lets probe
	// calls through (HALF_OPEN).
	OpenDuration time.Duration `yaml:"open_duration"`
	// HalfOpenMaxCalls is the number of probe calls HALF_OPEN admits. Once
	// that many are in flight further calls get ErrOpen. The breaker closes
	// when HalfOpenMaxCalls probes have succeeded, and opens again on the
	// first probe that fails.
	HalfOpenMaxCalls int `yaml:"half_open_max_calls"`

	// Clock is the time source; nil means the wall clock.
	Clock Clock `yaml:"-"`
	// IsFailure decides whether an error returned by a call counts against
	// the backend; an error it rejects counts as a success. nil means every
	// error is a failure. It is never asked about the caller's own context
	// errors, which count as neither (see Do and Allow).
	IsFailure func(error) bool `yaml:"-"`
	// OnStateChange, when set, is called after every state change, in the
	// order the changes happened, outside the breaker's lock: it may call
	// the breaker's methods. It runs on the goroutine of a call that caused
	// or observed a change, so it should be quick and must not block.
	OnStateChange func(name string, from, to State) `yaml:"-"`
}

// MaxWindowBuckets bounds Config.WindowBuckets.
const MaxWindowBuckets = 1000

// DefaultConfig suits a breaker in front of a store on the request path:
// trip after 5 failures in a row, or when half of at least 20 calls in the
// last 10 s failed, or when 80% of them took 100 ms or more; stay open 5 s,
// then close after 3 good probes. No per-call timeout: the store client's
// own read and write timeouts bound its calls.
func DefaultConfig() Config {
	return Config{
		ConsecutiveFailures:   5,
		FailureRateThreshold:  0.5,
		MinCalls:              20,
		Window:                10 * time.Second,
		WindowBuckets:         10,
		SlowCallDuration:      100 * time.Millisecond,
		SlowCallRateThreshold: 0.8,
		CallTimeout:           0,
		OpenDuration:          5 * time.Second,
		HalfOpenMaxCalls:      3,
	}
}

// ConfigError is an invalid Config field. It prints as "field: problem",
// the field relative to the breaker's section, which the caller knows
// (redis.breaker, postgres.breaker) and places it under.
type ConfigError struct {
	Field string // as spelled in config.yaml, e.g. "half_open_max_calls"
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// FieldProblem is the field and the problem, for placing the error in
// config.yaml's one error format.
func (e *ConfigError) FieldProblem() (field, problem string) { return e.Field, e.Err.Error() }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks c and names the first bad field in a *ConfigError.
func (c Config) Validate() error {
	if c.ConsecutiveFailures < 0 {
		return fieldErr("consecutive_failures", "must not be negative, got %d", c.ConsecutiveFailures)
	}
	for _, r := range []struct {
		field string
		v     float64
	}{{"failure_rate_threshold", c.FailureRateThreshold}, {"slow_call_rate_threshold", c.SlowCallRateThreshold}} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			return fieldErr(r.field, "must be between 0 and 1, got %v", r.v)
		}
	}
	if c.MinCalls < 0 {
		return fieldErr("min_calls", "must not be negative, got %d", c.MinCalls)
	}
	if c.WindowBuckets < 1 || c.WindowBuckets > MaxWindowBuckets {
		return fieldErr("window_buckets", "must be between 1 and %d, got %d", MaxWindowBuckets, c.WindowBuckets)
	}
	if c.Window <= 0 {
		return fieldErr("window", "must be positive, got %v", c.Window)
	}
	if c.Window/time.Duration(c.WindowBuckets) < time.Millisecond {
		return fieldErr("window", "%v split into %d buckets gives buckets shorter than 1ms", c.Window, c.WindowBuckets)
	}
	if c.SlowCallDuration < 0 {
		return fieldErr("slow_call_duration", "must not be negative, got %v", c.SlowCallDuration)
	}
	if c.SlowCallRateThreshold > 0 && c.SlowCallDuration == 0 {
		return fieldErr("slow_call_duration", "required when slow_call_rate_threshold is set")
	}
	if c.CallTimeout < 0 {
		return fieldErr("call_timeout", "must not be negative, got %v", c.CallTimeout)
	}
	if c.OpenDuration <= 0 {
		return fieldErr("open_duration", "must be positive, got %v", c.OpenDuration)
	}
	if c.HalfOpenMaxCalls < 1 {
		return fieldErr("half_open_max_calls", "must be at least 1, got %d", c.HalfOpenMaxCalls)
	}
	if c.ConsecutiveFailures == 0 && c.FailureRateThreshold == 0 && c.SlowCallRateThreshold == 0 {
		return fieldErr("consecutive_failures", "%w", errNoTrip)
	}
	return nil
}

var errNoTrip = errors.New("no trip condition: set consecutive_failures, failure_rate_threshold or slow_call_rate_threshold")
