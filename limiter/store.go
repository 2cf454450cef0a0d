package limiter

import "context"

// Op says what a request does to one bucket.
type Op uint8

const (
	// OpTake pays the cost if every OpTake bucket of the call holds its
	// cost; otherwise no bucket of the call pays.
	OpTake Op = iota
	// OpShadowTake is a take that never denies: it pays when the call is
	// allowed and the bucket holds the cost, and pays nothing otherwise.
	OpShadowTake
	// OpPeek reports the bucket and pays nothing.
	OpPeek
	// OpRefund gives the cost back (capped at capacity), always. Under a
	// usage rate (Rate.Usage) it pays debt back, down to a full bucket.
	OpRefund
	// OpCharge is a usage take (charge: usage): it is OK when the bucket
	// holds the cost before the call, and is charged in full either way,
	// down to the debt floor (Rate.MaxDebt tokens below zero). A denied
	// OpCharge denies the call's OpTake buckets as a denied OpTake does.
	OpCharge
	// OpShadowCharge is an OpCharge of a shadow-mode limit: charged in
	// full the same way, but it never denies the call.
	OpShadowCharge
	// OpCheck is a usage-mode check (cost 0): it pays nothing and is OK
	// when the bucket holds at least one whole token. A failed OpCheck
	// denies the call's OpTake buckets.
	OpCheck
	// OpShadowCheck is an OpCheck that never denies the call.
	OpShadowCheck
	// OpQuotaTake is a take of a quota-mode limit: it is OK when the
	// bucket holds its cost, and denies the call only when every
	// OpQuotaTake of the call is short. It pays when the call is allowed
	// and it is OK; a short one pays nothing, nor does any when the call
	// is denied.
	OpQuotaTake
)

// Usage reports whether op is one of usage mode's (charges and checks).
func (op Op) Usage() bool { return op >= OpCharge && op <= OpShadowCheck }

// BucketRequest is one bucket of one Store call.
type BucketRequest struct {
	Key  string // from AppendKey; collision-free and bounded
	Rate Rate
	Cost uint64 // tokens; at most Rate.Cap for takes (the decision handles larger costs)
	Op   Op
}

// BucketResult is the state of one bucket after a Store call.
type BucketResult struct {
	// OK is false when the bucket did not hold the cost of a take or
	// shadow take.
	OK bool
	// Remaining is the whole tokens left after the call.
	Remaining uint64
	// ResetMicros is, when OK, the time until the bucket is full again;
	// otherwise the time until it holds the cost (one token for a check).
	ResetMicros int64
	// Cut is the tokens of an OpCharge or OpShadowCharge that the debt
	// floor cut off (not charged); counted so that none is lost silently.
	Cut uint64
	// Refunded is set on a bucket that paid in a call that was then
	// denied, and was given the payment back before the answer (a refund
	// across Redis Cluster slots): the state reported is after the
	// refund, but answers to other calls made meanwhile saw the payment.
	Refunded bool
	// Pending is set on a bucket that paid in a call that was then
	// denied, when the store could not yet give the payment back (a
	// refund across Redis Cluster slots still being retried): its state
	// holds tokens that will come back, so it is no bound a deny cache
	// may keep.
	Pending bool
	// Unsettled is, on a bucket short after the call, the tokens of its
	// debt that calls across Redis Cluster slots took and may still give
	// back (over-counted, never under): a deny cache learns its bound
	// from the debt less these, which holds whatever is refunded. The
	// answer itself (Remaining, ResetMicros) is the bucket as it is.
	Unsettled uint64
}

// Store keeps token buckets. Apply decides all buckets of one request in one
// atomic step: if any OpTake bucket lacks its cost, or any OpCharge or
// OpCheck is not OK, or the call has OpQuotaTake buckets and every one
// lacks its cost, no take pays (refunds and usage charges still apply); a
// bucket listed twice sees the earlier entries' effect. res has len(reqs)
// entries and is filled in order. Apply returns whether the request was
// allowed (every OpTake, OpCharge and OpCheck bucket OK, and some
// OpQuotaTake OK when there is one), or an error when the backend failed,
// in which case nothing is known to have been paid.
type Store interface {
	Apply(ctx context.Context, reqs []BucketRequest, res []BucketResult) (allowed bool, err error)
}

// Clock gives the time in microseconds since the Unix epoch. Stores that
// keep time themselves (Redis) ignore it.
type Clock func() int64
