package limiter

import (
	"fmt"
	"strconv"
	"time"
)

// Unit is the period a limit's requests_per_unit is counted over.
type Unit uint8

// Units, with the lengths envoyproxy/ratelimit uses (a month is 30 days, a
// year 365 days).
const (
	UnitUnknown Unit = iota
	Second
	Minute
	Hour
	Day
	Week
	Month
	Year
)

var unitNames = [...]string{"unknown", "second", "minute", "hour", "day", "week", "month", "year"}

var unitSeconds = [...]int64{0, 1, 60, 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400}

// ParseUnit maps a limit-file unit name (case-insensitive) to a Unit.
func ParseUnit(s string) (Unit, bool) {
	for i := 1; i < len(unitNames); i++ {
		if equalFold(s, unitNames[i]) {
			return Unit(i), true
		}
	}
	return UnitUnknown, false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

func (u Unit) String() string {
	if int(u) < len(unitNames) {
		return unitNames[u]
	}
	return "unit(" + strconv.Itoa(int(u)) + ")"
}

// Seconds is the unit's length in seconds, 0 for UnitUnknown.
func (u Unit) Seconds() int64 {
	if int(u) < len(unitSeconds) {
		return unitSeconds[u]
	}
	return 0
}

// UnitNames lists the valid unit names, for error messages.
func UnitNames() []string { return append([]string(nil), unitNames[1:]...) }

// Charge is a limit's charging mode (rate_limit.charge).
type Charge uint8

const (
	// ChargeAdmission decides before the work: a request pays only when
	// every bucket holds its cost (the default).
	ChargeAdmission Charge = iota
	// ChargeUsage charges costs reported after the work in full, answered
	// OK or not: the balance may go into debt, down to MaxDebt.
	ChargeUsage
)

var chargeNames = [...]string{"admission", "usage"}

func (c Charge) String() string {
	if int(c) < len(chargeNames) {
		return chargeNames[c]
	}
	return "charge(" + strconv.Itoa(int(c)) + ")"
}

// ParseCharge maps a charge name (case-insensitive) to a Charge.
func ParseCharge(s string) (Charge, bool) {
	for i, n := range chargeNames {
		if equalFold(s, n) {
			return Charge(i), true
		}
	}
	return ChargeAdmission, false
}

// DefaultDebtFactor times the capacity is a usage limit's max_debt when
// none is given (within what the integer maths holds exactly).
const DefaultDebtFactor = 1000

// RateLimit is one limit as the limit file states it, with defaults applied.
type RateLimit struct {
	Name            string
	RequestsPerUnit uint32
	Unit            Unit
	UnitMultiplier  uint32 // at least 1
	Burst           uint32 // bucket capacity; Normalize sets it to RequestsPerUnit when 0
	Unlimited       bool
	Replaces        []string
	// Charge is the charging mode; the zero value is admission.
	Charge Charge
	// ChargeSet records that the limit states its charging mode (charge:
	// in a limit file or override). Compile's defaults (CompileOptions)
	// apply only to limits that leave it unset, such as those delivered
	// over xDS, whose format has no such field. A Charge other than
	// admission counts as stated either way.
	ChargeSet bool
	// MaxDebt is the most tokens a usage bucket may owe below zero; 0
	// means the default, DefaultDebtFactor times the capacity, lowered to
	// what the integer maths holds exactly. Only for ChargeUsage.
	MaxDebt uint64
}

// Window is the limit's period: unit times multiplier.
func (r *RateLimit) Window() time.Duration {
	return time.Duration(r.Unit.Seconds()) * time.Duration(r.multiplier()) * time.Second
}

func (r *RateLimit) multiplier() uint64 {
	if r.UnitMultiplier == 0 {
		return 1
	}
	return uint64(r.UnitMultiplier)
}

// Banned reports whether the limit admits nothing (requests_per_unit 0).
func (r *RateLimit) Banned() bool { return !r.Unlimited && r.RequestsPerUnit == 0 }

// Capacity is the bucket size in tokens: burst when set, else requests_per_unit.
func (r *RateLimit) Capacity() uint64 {
	if r.Burst != 0 {
		return uint64(r.Burst)
	}
	return uint64(r.RequestsPerUnit)
}

// maxExact bounds every integer the bucket maths handles, so Lua's doubles
// stay exact (2^53).
const maxExact = 1 << 53

// Rate is a limit reduced to the integers the bucket maths uses; see the
// package documentation.
type Rate struct {
	Num uint64 // debt repaid per microsecond
	Den uint64 // debt one token costs
	Cap uint64 // capacity in tokens
	// MaxDebt is the tokens a usage bucket may owe below zero; 0 for an
	// admission limit. The stored debt is at most (Cap+MaxDebt)*Den.
	MaxDebt uint64
}

// Bound is the most debt a bucket of the rate holds: a full bucket's worth
// (Cap*Den), plus MaxDebt tokens for a usage limit.
func (r Rate) Bound() int64 { return int64((r.Cap + r.MaxDebt) * r.Den) }

// Rate reduces a limit for the bucket maths. It fails when the limit is
// unlimited or a ban (neither has a bucket), has no unit, or is too coarse
// to keep exactly: the full-bucket debt Cap*Den plus one millisecond of
// refill must stay below 2^53.
//
// For a usage limit it also sets MaxDebt, failing when an explicit
// max_debt is more than the integer maths holds exactly.
func (r *RateLimit) Rate() (Rate, error) { return r.rate(false) }

// rate is Rate; with clampDebt an explicit max_debt too large to hold is
// lowered to the most that fits rather than refused (a request-side limit
// that takes the charging mode of the rule it replaces).
func (r *RateLimit) rate(clampDebt bool) (Rate, error) {
	if r.Unlimited || r.RequestsPerUnit == 0 {
		return Rate{}, fmt.Errorf("limit has no bucket")
	}
	secs := r.Unit.Seconds()
	if secs == 0 {
		return Rate{}, fmt.Errorf("unknown unit")
	}
	period := uint64(secs) * r.multiplier() * 1e6 // microseconds, < 2^63 for multiplier < 2^32
	if r.multiplier() > 1<<32 || period/1e6/r.multiplier() != uint64(secs) {
		return Rate{}, fmt.Errorf("unit_multiplier %d too large", r.UnitMultiplier)
	}
	rpu := uint64(r.RequestsPerUnit)
	g := gcd(rpu, period)
	rt := Rate{Num: rpu / g, Den: period / g, Cap: r.Capacity()}
	if rt.Den > maxExact || rt.Cap > maxExact/rt.Den || rt.Cap*rt.Den+1000*rt.Num >= maxExact {
		return Rate{}, fmt.Errorf("burst %d at %d per %s x %d takes too long to refill to be kept exactly; raise requests_per_unit or lower burst",
			rt.Cap, rpu, r.Unit, r.multiplier())
	}
	if r.Charge == ChargeUsage {
		// (Cap+MaxDebt)*Den plus one millisecond of refill stays below
		// 2^53, as Cap*Den does above; room >= Cap by that check.
		room := (maxExact-1-1000*rt.Num)/rt.Den - rt.Cap
		md := r.MaxDebt
		switch {
		case md == 0:
			md = min(DefaultDebtFactor*rt.Cap, room)
		case md > room && clampDebt:
			md = room
		case md > room:
			return Rate{}, fmt.Errorf("max_debt %d is more than the bucket maths holds exactly at %d per %s x %d with burst %d (at most %d)",
				md, rpu, r.Unit, r.multiplier(), rt.Cap, room)
		}
		rt.MaxDebt = md
	}
	return rt, nil
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// chargeStated reports whether the limit states its charging mode, so
// that no default changes it.
func (r *RateLimit) chargeStated() bool { return r.ChargeSet || r.Charge != ChargeAdmission }

// Equal reports whether two limits are the same limit.
func (r *RateLimit) Equal(o *RateLimit) bool {
	if r == nil || o == nil {
		return r == o
	}
	if r.Name != o.Name || r.RequestsPerUnit != o.RequestsPerUnit || r.Unit != o.Unit ||
		r.multiplier() != o.multiplier() || r.Capacity() != o.Capacity() || r.Unlimited != o.Unlimited ||
		r.Charge != o.Charge || r.chargeStated() != o.chargeStated() || r.MaxDebt != o.MaxDebt || len(r.Replaces) != len(o.Replaces) {
		return false
	}
	for i := range r.Replaces {
		if r.Replaces[i] != o.Replaces[i] {
			return false
		}
	}
	return true
}
