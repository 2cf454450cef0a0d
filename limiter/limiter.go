package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Entry is one (key, value) pair of a request descriptor.
type Entry struct {
	Key   string
	Value string
}

// Descriptor is one descriptor of a request.
type Descriptor struct {
	Entries []Entry
	// Override is the request-side limit (RateLimitDescriptor.limit); it
	// replaces the configured limit and uses its own bucket.
	Override *RateLimit
	// Cost is the descriptor's own hits_addend when HasCost is set; an
	// explicit 0 is a peek.
	Cost    uint64
	HasCost bool
	// Refund gives the cost back instead of taking it (is_negative_hits).
	Refund bool
}

// Request asks for one decision.
type Request struct {
	Domain      string
	Descriptors []Descriptor
	// HitsAddend is the request-level cost; 0 means 1.
	HitsAddend uint64
}

// Code is a decision's outcome.
type Code uint8

const (
	OK Code = iota + 1
	OverLimit
)

func (c Code) String() string {
	switch c {
	case OK:
		return "OK"
	case OverLimit:
		return "OVER_LIMIT"
	}
	return "UNKNOWN"
}

// Unlimited is the limit_remaining reported for unlimited descriptors.
const Unlimited = 1<<32 - 1

// Status is the outcome for one request descriptor.
type Status struct {
	Code Code
	// Limit is the limit that applied; nil when none did (no match,
	// unlimited, replaced).
	Limit *RateLimit
	// Rule is the matched configured rule (nil for none or a request-side
	// override); for metrics.
	Rule *Rule
	// Remaining is the whole tokens left after the decision.
	Remaining uint32
	// ResetMicros: for OK the time until the bucket is full, for OVER_LIMIT
	// the time until it holds the cost (0 when it never will).
	ResetMicros int64
	// Shadow is set when a shadow-mode limit applied; ShadowDenied when it
	// would have denied.
	Shadow       bool
	ShadowDenied bool
	// Quota is set when a quota-mode limit applied: its code is its own,
	// and it makes the request OVER_LIMIT only when every quota-mode
	// descriptor of the request is over.
	Quota bool
	// Cut is the tokens of a usage charge that the debt floor (max_debt)
	// cut off rather than charged; counted so none is lost silently.
	Cut uint64
}

// Response is a decision. Reuse one across calls to avoid allocation.
type Response struct {
	Code     Code
	Statuses []Status
}

// Bounds limit the size of a request. Zero fields take DefaultBounds.
type Bounds struct {
	MaxDescriptors int // descriptors per request
	MaxEntries     int // entries per descriptor
	MaxKeyLen      int // bytes per entry key
	MaxValueLen    int // bytes per entry value
	MaxCost        uint64
}

// DefaultBounds are the request bounds used when none are configured.
var DefaultBounds = Bounds{MaxDescriptors: 64, MaxEntries: 16, MaxKeyLen: 256, MaxValueLen: 1024, MaxCost: 1 << 32}

// InvalidRequestError is a request that breaks a rule or a bound. Field
// names what was wrong, in the protobuf's terms.
type InvalidRequestError struct {
	Field string
	Msg   string
}

func (e *InvalidRequestError) Error() string { return e.Field + ": " + e.Msg }

// ErrNoLimits is returned by Decide before limits are set.
var ErrNoLimits = errors.New("no limits loaded")

// Config configures a Limiter.
type Config struct {
	KeyPrefix string // bucket key prefix; default "sl:"
	Bounds    Bounds
}

// Limiter decides requests against the current Limits and a Store. It is
// safe for concurrent use; SetLimits swaps the limits atomically.
type Limiter struct {
	store  Store
	prefix string
	bounds Bounds
	limits atomic.Pointer[Limits]
	pool   sync.Pool // *scratch
}

// New returns a Limiter deciding with store.
func New(store Store, cfg Config) *Limiter {
	l := &Limiter{store: store, prefix: cfg.KeyPrefix, bounds: cfg.Bounds}
	if l.prefix == "" {
		l.prefix = "sl:"
	}
	def := DefaultBounds
	if l.bounds.MaxDescriptors <= 0 {
		l.bounds.MaxDescriptors = def.MaxDescriptors
	}
	if l.bounds.MaxEntries <= 0 {
		l.bounds.MaxEntries = def.MaxEntries
	}
	if l.bounds.MaxKeyLen <= 0 {
		l.bounds.MaxKeyLen = def.MaxKeyLen
	}
	if l.bounds.MaxValueLen <= 0 {
		l.bounds.MaxValueLen = def.MaxValueLen
	}
	if l.bounds.MaxCost == 0 {
		l.bounds.MaxCost = def.MaxCost
	}
	l.pool.New = func() any { return new(scratch) }
	return l
}

// SetLimits replaces the limits used by later decisions.
func (l *Limiter) SetLimits(lim *Limits) { l.limits.Store(lim) }

// Limits returns the current limits (nil before SetLimits).
func (l *Limiter) Limits() *Limits { return l.limits.Load() }

// Bounds returns the request bounds in force.
func (l *Limiter) Bounds() Bounds { return l.bounds }

// Validate checks a request against the protocol rules and the bounds.
func (l *Limiter) Validate(req *Request) error {
	b := &l.bounds
	if req.Domain == "" {
		return &InvalidRequestError{Field: "domain", Msg: "must not be empty"}
	}
	if len(req.Domain) > b.MaxValueLen {
		return &InvalidRequestError{Field: "domain", Msg: fmt.Sprintf("longer than %d bytes", b.MaxValueLen)}
	}
	if len(req.Descriptors) == 0 {
		return &InvalidRequestError{Field: "descriptors", Msg: "must not be empty"}
	}
	if len(req.Descriptors) > b.MaxDescriptors {
		return &InvalidRequestError{Field: "descriptors", Msg: fmt.Sprintf("%d descriptors, more than the bound of %d", len(req.Descriptors), b.MaxDescriptors)}
	}
	if req.HitsAddend > b.MaxCost {
		return &InvalidRequestError{Field: "hits_addend", Msg: fmt.Sprintf("%d is more than the bound of %d", req.HitsAddend, b.MaxCost)}
	}
	for i := range req.Descriptors {
		d := &req.Descriptors[i]
		if len(d.Entries) == 0 {
			return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].entries", i), Msg: "must not be empty"}
		}
		if len(d.Entries) > b.MaxEntries {
			return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].entries", i), Msg: fmt.Sprintf("%d entries, more than the bound of %d", len(d.Entries), b.MaxEntries)}
		}
		for j, e := range d.Entries {
			if e.Key == "" {
				return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].entries[%d].key", i, j), Msg: "must not be empty"}
			}
			if len(e.Key) > b.MaxKeyLen {
				return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].entries[%d].key", i, j), Msg: fmt.Sprintf("%d bytes, longer than the bound of %d", len(e.Key), b.MaxKeyLen)}
			}
			if len(e.Value) > b.MaxValueLen {
				return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].entries[%d].value", i, j), Msg: fmt.Sprintf("%d bytes, longer than the bound of %d", len(e.Value), b.MaxValueLen)}
			}
		}
		if d.HasCost && d.Cost > b.MaxCost {
			return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].hits_addend", i), Msg: fmt.Sprintf("%d is more than the bound of %d", d.Cost, b.MaxCost)}
		}
		if o := d.Override; o != nil {
			if o.Unit == UnitUnknown {
				return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].limit.unit", i), Msg: "must be set"}
			}
			if o.RequestsPerUnit > 0 {
				if _, err := o.Rate(); err != nil {
					return &InvalidRequestError{Field: fmt.Sprintf("descriptors[%d].limit", i), Msg: err.Error()}
				}
			}
		}
	}
	return nil
}

type scratch struct {
	reqs  []BucketRequest
	res   []BucketResult
	idx   []int // status index of each bucket request
	parts []KeyPart
	key   []byte
	rules []*Rule
	spans [][2]int // each descriptor's key parts in parts
}

// Decide answers req into resp (whose Statuses are reused). It returns an
// *InvalidRequestError for a bad request, ErrNoLimits before limits are set,
// or the store's error; over limit is a decision, not an error. All
// enforced buckets of the request pay their cost, or none does.
func (l *Limiter) Decide(ctx context.Context, req *Request, resp *Response) error {
	if err := l.Validate(req); err != nil {
		return err
	}
	lim := l.limits.Load()
	if lim == nil {
		return ErrNoLimits
	}
	n := len(req.Descriptors)
	if cap(resp.Statuses) < n {
		resp.Statuses = make([]Status, n)
	}
	resp.Statuses = resp.Statuses[:n]
	resp.Code = OK

	s := l.pool.Get().(*scratch)
	defer l.pool.Put(s)
	s.reqs, s.res, s.idx, s.rules, s.spans, s.parts = s.reqs[:0], s.res[:0], s.idx[:0], s.rules[:0], s.spans[:0], s.parts[:0]

	reqCost := req.HitsAddend
	if reqCost == 0 {
		reqCost = 1
	}

	// Match every descriptor first, so replaces can see all matched limits.
	for i := range req.Descriptors {
		d := &req.Descriptors[i]
		var rule *Rule
		start := len(s.parts)
		if d.Override == nil {
			rule, s.parts = lim.Match(req.Domain, d.Entries, s.parts)
		} else {
			for _, e := range d.Entries {
				s.parts = append(s.parts, KeyPart{Key: e.Key, Value: e.Value})
			}
		}
		s.rules = append(s.rules, rule)
		s.spans = append(s.spans, [2]int{start, len(s.parts)})
	}
	replaced := func(r *Rule) bool {
		if r == nil || r.Limit.Name == "" {
			return false
		}
		for _, o := range s.rules {
			if o == nil || o == r {
				continue
			}
			for _, name := range o.Limit.Replaces {
				if name == r.Limit.Name {
					return true
				}
			}
		}
		return false
	}

	banned := false
	quotaBans, quotaTakes := 0, 0
	for i := range req.Descriptors {
		d := &req.Descriptors[i]
		st := &resp.Statuses[i]
		*st = Status{Code: OK}
		cost := reqCost
		if d.HasCost {
			cost = d.Cost
		}
		var limit *RateLimit
		var rate Rate
		shadow, quota := false, false
		charge := ChargeAdmission
		if d.Override != nil {
			limit = d.Override
			if !limit.Unlimited && limit.RequestsPerUnit > 0 {
				o := *limit
				o.Charge, o.MaxDebt = ChargeAdmission, 0
				if lim.usage {
					// The rule the request-side limit replaces lends it
					// its charging mode; the bucket is the override's own.
					var r *Rule
					n := len(s.parts)
					r, s.parts = lim.Match(req.Domain, d.Entries, s.parts)
					s.parts = s.parts[:n]
					if r != nil && r.Limit.Charge == ChargeUsage {
						o.Charge, o.MaxDebt = ChargeUsage, r.Limit.MaxDebt
					}
				}
				charge = o.Charge
				rate, _ = o.rate(true) // checked by Validate; usage only adds a clamped debt
			}
			shadow = lim.shadow
			quota = lim.quota && charge != ChargeUsage
		} else {
			rule := s.rules[i]
			if rule == nil || replaced(rule) {
				continue
			}
			st.Rule = rule
			limit, rate, shadow, charge = &rule.Limit, rule.Rate, rule.Shadow, rule.Limit.Charge
			// The global quota mode never makes a usage limit a quota
			// (Compile refuses quota_mode with usage on one rule).
			quota = rule.QuotaMode || (lim.quota && charge != ChargeUsage)
		}
		if limit.Unlimited {
			st.Remaining = Unlimited
			continue
		}
		st.Limit = limit
		st.Shadow = shadow
		if limit.RequestsPerUnit == 0 { // ban
			if d.Refund || (d.HasCost && cost == 0) {
				continue
			}
			if shadow {
				st.ShadowDenied = true
				continue
			}
			st.Code = OverLimit
			if quota {
				// A quota that is always over: it denies the request
				// only when no other quota can pass (below).
				st.Quota = true
				quotaBans++
				continue
			}
			banned = true
			continue
		}
		op := OpTake
		switch {
		case d.Refund:
			op = OpRefund
		case charge == ChargeUsage && d.HasCost && cost == 0:
			op = OpCheck
			if shadow {
				op = OpShadowCheck
			}
		case charge == ChargeUsage:
			op = OpCharge
			if shadow {
				op = OpShadowCharge
			}
		case d.HasCost && cost == 0:
			op = OpPeek
		case shadow:
			op = OpShadowTake
		case quota:
			op = OpQuotaTake
			st.Quota = true
			quotaTakes++
		}
		sp := s.spans[i]
		s.key = AppendKey(s.key[:0], l.prefix, req.Domain, s.parts[sp[0]:sp[1]], d.Override)
		s.reqs = append(s.reqs, BucketRequest{Key: string(s.key), Rate: rate, Cost: cost, Op: op})
		s.idx = append(s.idx, i)
	}

	if quotaBans > 0 && quotaTakes == 0 {
		// Every quota-mode descriptor is a ban: the request is over, as
		// for a plain ban.
		banned = true
	}
	if len(s.reqs) > 0 {
		if banned {
			// A banned descriptor denies the request: no admission take
			// pays, but the other buckets still report their state, and
			// usage charges (reports of work done) are charged anyway.
			for j := range s.reqs {
				if op := s.reqs[j].Op; op == OpTake || op == OpShadowTake || op == OpQuotaTake {
					s.reqs[j].Op = OpPeek
				}
			}
		}
		if cap(s.res) < len(s.reqs) {
			s.res = make([]BucketResult, len(s.reqs))
		}
		s.res = s.res[:len(s.reqs)]
		if _, err := l.store.Apply(ctx, s.reqs, s.res); err != nil {
			return err
		}
		for j := range s.reqs {
			st := &resp.Statuses[s.idx[j]]
			r := &s.res[j]
			st.Remaining = clamp32(r.Remaining)
			st.ResetMicros = r.ResetMicros
			st.Cut = r.Cut
			if r.OK {
				continue
			}
			if st.Shadow {
				st.ShadowDenied = true
				continue
			}
			st.Code = OverLimit
		}
	}
	// OVER_LIMIT when a plain descriptor is over, or every quota-mode
	// descriptor is (envoyproxy/ratelimit's quota mode).
	quotas, quotasOver := 0, 0
	for i := range resp.Statuses {
		st := &resp.Statuses[i]
		if st.Quota {
			quotas++
			if st.Code == OverLimit {
				quotasOver++
			}
			continue
		}
		if st.Code == OverLimit {
			resp.Code = OverLimit
		}
	}
	if quotas > 0 && quotas == quotasOver {
		resp.Code = OverLimit
	}
	return nil
}

func clamp32(v uint64) uint32 {
	if v > Unlimited {
		return Unlimited
	}
	return uint32(v)
}
