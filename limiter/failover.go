package limiter

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
)

// FailureMode says how decisions are made while the primary store (Redis)
// fails or its breaker is open.
type FailureMode uint8

const (
	// FailLocal decides from a local store, each limit scaled by the local
	// fraction: every replica enforces its share on its own.
	FailLocal FailureMode = iota
	// FailAllow answers OK without deciding (fail open).
	FailAllow
	// FailError returns the store's error, which the edges turn into gRPC
	// UNAVAILABLE (HTTP 503), so the caller's own policy decides (Envoy's
	// failure_mode_deny).
	FailError
)

func (m FailureMode) String() string {
	switch m {
	case FailLocal:
		return "local"
	case FailAllow:
		return "allow"
	case FailError:
		return "error"
	}
	return "unknown(" + strconv.Itoa(int(m)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (m FailureMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// ParseFailureMode parses "local", "allow" or "error".
func ParseFailureMode(s string) (FailureMode, error) {
	switch s {
	case "local":
		return FailLocal, nil
	case "allow":
		return FailAllow, nil
	case "error":
		return FailError, nil
	}
	return 0, fmt.Errorf("%q is not one of local, allow, error", s)
}

// FailoverConfig configures a Failover.
type FailoverConfig struct {
	Mode FailureMode
	// LocalFraction (0 < f <= 1) scales each limit's capacity and refill
	// rate in FailLocal mode, so N replicas deciding alone admit about what
	// one shared bucket would when it is 1/N. 0 means 1.
	LocalFraction float64
	// Local is the store FailLocal decides with (a memory store); required
	// for that mode, ignored by the others.
	Local Store
	// OnFailover, when set, is called for every call answered by the
	// failure mode, with the mode and the primary's error. It runs on the
	// request path: keep it quick (a metrics counter).
	OnFailover func(mode FailureMode, err error)
}

// Validate checks c.
func (c FailoverConfig) Validate() error {
	switch c.Mode {
	case FailLocal:
		if c.Local == nil {
			return fmt.Errorf("failure mode local needs a local store")
		}
	case FailAllow, FailError:
	default:
		return fmt.Errorf("unknown failure mode %d", c.Mode)
	}
	if f := c.LocalFraction; math.IsNaN(f) || f < 0 || f > 1 {
		return fmt.Errorf("local_fraction must be above 0 and at most 1, got %v", f)
	}
	return nil
}

// FailoverCounts is how many calls a Failover answered, by path.
type FailoverCounts struct {
	Primary uint64 // answered by the primary store
	Local   uint64 // primary failed; decided by the local store
	Allowed uint64 // primary failed; answered OK without a decision
	Errors  uint64 // primary failed; its error returned (FailError)
	// LostUsage is the usage-charged tokens (charge: usage reports) that
	// no store charged because the primary failed under FailAllow or
	// FailError: counted, so no report is dropped silently.
	LostUsage uint64
	// LocalUsage is the usage-charged tokens the local store charged
	// under FailLocal: they hold this replica's local budget, but are
	// never charged to the primary when it comes back.
	LocalUsage uint64
}

// Failover is a Store that decides with a primary store and applies a
// failure mode when the primary returns an error, including an open
// breaker's refusal, which costs no wait. Each call tries the primary
// first, so decisions go back to it as soon as it answers again. It is
// safe for concurrent use.
type Failover struct {
	primary  Store
	local    Store
	mode     FailureMode
	fraction float64
	scaled   bool // fraction < 1
	hook     func(FailureMode, error)

	primaryN, localN, allowedN, errorsN atomic.Uint64
	lostUsage, localUsage               atomic.Uint64

	pool sync.Pool // *[]BucketRequest
}

var _ Store = (*Failover)(nil)

// NewFailover returns a Failover over primary. It fails when cfg is not
// valid.
func NewFailover(primary Store, cfg FailoverConfig) (*Failover, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Failover{primary: primary, local: cfg.Local, mode: cfg.Mode, fraction: cfg.LocalFraction, hook: cfg.OnFailover}
	if f.fraction == 0 {
		f.fraction = 1
	}
	f.scaled = f.fraction < 1
	f.pool.New = func() any { return new([]BucketRequest) }
	return f, nil
}

// Mode is the failure mode in force.
func (f *Failover) Mode() FailureMode { return f.mode }

// LocalFraction is the share of each limit the local store enforces.
func (f *Failover) LocalFraction() float64 { return f.fraction }

// Counts returns the calls answered so far, by path.
func (f *Failover) Counts() FailoverCounts {
	return FailoverCounts{Primary: f.primaryN.Load(), Local: f.localN.Load(),
		Allowed: f.allowedN.Load(), Errors: f.errorsN.Load(), LostUsage: f.lostUsage.Load(),
		LocalUsage: f.localUsage.Load()}
}

// Apply implements Store. When the primary fails it answers by the
// failure mode: FailLocal returns the local store's decision on the scaled
// limits, FailAllow allows every bucket (each reports its full capacity
// and pays nothing), FailError returns the primary's error. A call whose
// own context has ended gets the error, whatever the mode.
func (f *Failover) Apply(ctx context.Context, reqs []BucketRequest, res []BucketResult) (bool, error) {
	allowed, err := f.primary.Apply(ctx, reqs, res)
	if err == nil {
		f.primaryN.Add(1)
		return allowed, nil
	}
	if ctx.Err() != nil {
		return false, err
	}
	if f.hook != nil {
		f.hook(f.mode, err)
	}
	switch f.mode {
	case FailLocal:
		f.localN.Add(1)
		allowed, err := f.applyLocal(ctx, reqs, res)
		if err == nil {
			f.localUsage.Add(usageTokens(reqs))
		}
		return allowed, err
	case FailAllow:
		f.allowedN.Add(1)
		f.lostUsage.Add(usageTokens(reqs))
		for i := range reqs {
			res[i] = BucketResult{OK: true, Remaining: reqs[i].Rate.Cap}
		}
		return true, nil
	}
	f.errorsN.Add(1)
	f.lostUsage.Add(usageTokens(reqs))
	return false, err
}

// usageTokens is the tokens the usage charges of a call report.
func usageTokens(reqs []BucketRequest) uint64 {
	var n uint64
	for i := range reqs {
		if op := reqs[i].Op; op == OpCharge || op == OpShadowCharge {
			n += reqs[i].Cost
		}
	}
	return n
}

func (f *Failover) applyLocal(ctx context.Context, reqs []BucketRequest, res []BucketResult) (bool, error) {
	if !f.scaled {
		return f.local.Apply(ctx, reqs, res)
	}
	p := f.pool.Get().(*[]BucketRequest)
	defer f.pool.Put(p)
	s := append((*p)[:0], reqs...)
	for i := range s {
		s[i].Rate = ScaleRate(s[i].Rate, f.fraction)
	}
	*p = s
	return f.local.Apply(ctx, s, res)
}

// fractionDen is the resolution of a scaling fraction.
const fractionDen = 1_000_000

// ScaleRate returns r with its capacity and its refill rate scaled by
// frac (0 < frac <= 1). The capacity is rounded down but kept at least 1;
// the refill rate is exact to six decimal places of frac when that fits
// the bucket maths' bounds, otherwise rounded down slightly.
func ScaleRate(r Rate, frac float64) Rate {
	if frac >= 1 || frac <= 0 || math.IsNaN(frac) {
		return r
	}
	out := r
	out.Cap = max(1, uint64(float64(r.Cap)*frac))
	p := uint64(math.Round(frac * fractionDen))
	if p == 0 {
		p = 1
	}
	q := uint64(fractionDen)
	g := gcd(p, q)
	p, q = p/g, q/g
	hiN, num := bits.Mul64(r.Num, p)
	hiD, den := bits.Mul64(r.Den, q)
	if hiN == 0 && hiD == 0 {
		g := gcd(num, den)
		out.Num, out.Den = num/g, den/g
	} else {
		// Keep Num and stretch Den instead: a token takes a little longer.
		out.Num, out.Den = r.Num, uint64(math.Ceil(float64(r.Den)/frac))
	}
	if out.Den > maxExact || out.Cap > maxExact/out.Den || out.Cap*out.Den+1000*out.Num >= maxExact {
		// Out of the exact range: scale the capacity only.
		out.Num, out.Den = r.Num, r.Den
	}
	if r.MaxDebt > 0 {
		// A usage limit's floor scales with it, and must stay exact under
		// the new Den too.
		room := (maxExact-1-1000*out.Num)/out.Den - out.Cap
		out.MaxDebt = min(max(1, uint64(float64(r.MaxDebt)*frac)), room)
	}
	return out
}
