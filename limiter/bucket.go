package limiter

// The bucket maths shared by every Store. lua/tokenbucket.lua does the same
// steps with the same integers; keep the two in step.
//
// A stored bucket is two integers: FullAtMs, the millisecond at which the
// bucket is full again (the key's expiry, so an idle bucket costs nothing),
// and Slack, how far before FullAtMs*1000 the exact full time lies, in units
// of 1/Num microsecond (0 <= Slack < 1000*Num). From them the debt at time
// now is D = (FullAtMs*1000 - now)*Num - Slack, floored at 0 and capped at
// the rate's Bound: the full-bucket debt Cap*Den, plus MaxDebt*Den for a
// usage limit, whose balance may go below zero (a limit that shrank, or
// changed from usage to admission, caps what is stored).

// Stored is a bucket as a Store keeps it. A missing bucket is full.
type Stored struct {
	FullAtMs int64
	Slack    int64
}

// Debt is the bucket's debt at nowUs under rate r.
func (s Stored) Debt(nowUs int64, r Rate) int64 {
	diff := s.FullAtMs*1000 - nowUs
	if diff <= 0 {
		return 0
	}
	bound := r.Bound()
	num := int64(r.Num)
	// Slack was written under the bucket's last rate: under a rate with a
	// smaller Num it could stand for more than the millisecond it means.
	slack := min(s.Slack, 1000*num-1)
	if diff > bound/num+1000 {
		return bound
	}
	d := diff*num - slack
	if d < 0 {
		return 0
	}
	if d > bound {
		return bound
	}
	return d
}

// Encode stores debt d (> 0) incurred at nowUs under rate r.
func Encode(d, nowUs int64, r Rate) Stored {
	num := int64(r.Num)
	q, rem := d/num, d%num
	t := nowUs + q
	var full int64
	if rem > 0 {
		full = t/1000 + 1
	} else {
		full = (t + 999) / 1000
	}
	return Stored{FullAtMs: full, Slack: (full*1000-nowUs)*num - d}
}

// Decide runs one Store call over buckets whose debts at nowUs are in debt
// (len(reqs) entries, one per request, so a bucket listed twice appears
// twice: callers map repeated keys to one slot through slot). It fills res,
// and writes the new debts back into debt. The shared arithmetic lets the
// memory store and tests check the Lua script against the same rules.
//
// slot[i] names the index in debt that request i uses; requests sharing a
// key share a slot.
func Decide(reqs []BucketRequest, slot []int, debt []int64, res []BucketResult) bool {
	// Refunds apply first and always. The cost is capped at what the
	// bucket can owe, which also keeps cost*Den exact.
	for i := range reqs {
		res[i].Cut = 0
		if reqs[i].Op != OpRefund {
			continue
		}
		r := reqs[i].Rate
		c := min(reqs[i].Cost, r.Cap+r.MaxDebt)
		d := debt[slot[i]] - int64(c*r.Den)
		if d < 0 {
			d = 0
		}
		debt[slot[i]] = d
	}
	// Usage answers, from the balance before this call's takes: a charge
	// is OK when the bucket holds its cost, a check when it holds one
	// whole token. An enforced one that is not OK denies the call.
	allowed := true
	for i := range reqs {
		op := reqs[i].Op
		if !op.Usage() {
			continue
		}
		r := reqs[i].Rate
		capD := int64(r.Cap * r.Den)
		need := int64(r.Den) // a check needs one token
		if op == OpCharge || op == OpShadowCharge {
			if reqs[i].Cost > r.Cap {
				res[i].OK = false
				allowed = allowed && op != OpCharge
				continue
			}
			need = int64(reqs[i].Cost * r.Den)
		}
		res[i].OK = debt[slot[i]]+need <= capD
		if !res[i].OK && (op == OpCharge || op == OpCheck) {
			allowed = false
		}
	}
	// Enforced takes: all or nothing.
	for i := range reqs {
		if reqs[i].Op != OpTake {
			continue
		}
		r := reqs[i].Rate
		need := int64(reqs[i].Cost * r.Den)
		capD := int64(r.Cap * r.Den)
		if reqs[i].Cost > r.Cap || debt[slot[i]]+need > capD {
			allowed = false
			res[i].OK = false
			continue
		}
		res[i].OK = true
		debt[slot[i]] += need
	}
	// Quota takes, booked after the enforced ones (a bucket listed twice
	// sees them): the call is denied when there are some and none fits.
	quota, quotaOK := false, false
	for i := range reqs {
		if reqs[i].Op != OpQuotaTake {
			continue
		}
		quota = true
		r := reqs[i].Rate
		need := int64(reqs[i].Cost * r.Den)
		if reqs[i].Cost > r.Cap || debt[slot[i]]+need > int64(r.Cap*r.Den) {
			res[i].OK = false
			continue
		}
		res[i].OK = true
		quotaOK = true
		debt[slot[i]] += need
	}
	if quota && !quotaOK {
		allowed = false
	}
	if !allowed {
		// Undo the takes that were booked.
		for i := range reqs {
			if (reqs[i].Op == OpTake || reqs[i].Op == OpQuotaTake) && res[i].OK {
				debt[slot[i]] -= int64(reqs[i].Cost * reqs[i].Rate.Den)
			}
		}
	}
	// Shadow takes pay only when the call is allowed and they fit.
	for i := range reqs {
		if reqs[i].Op != OpShadowTake {
			continue
		}
		r := reqs[i].Rate
		need := int64(reqs[i].Cost * r.Den)
		fits := reqs[i].Cost <= r.Cap && debt[slot[i]]+need <= int64(r.Cap*r.Den)
		res[i].OK = fits
		if fits && allowed {
			debt[slot[i]] += need
		}
	}
	// Usage charges are paid in full whatever the answer, down to the
	// debt floor; what the floor cuts off is counted.
	for i := range reqs {
		if op := reqs[i].Op; op != OpCharge && op != OpShadowCharge {
			continue
		}
		r := reqs[i].Rate
		c := min(reqs[i].Cost, r.Cap+r.MaxDebt)
		cut := reqs[i].Cost - c
		d := debt[slot[i]] + int64(c*r.Den)
		if bound := r.Bound(); d > bound {
			cut += uint64(ceilDiv(d-bound, int64(r.Den)))
			d = bound
		}
		debt[slot[i]] = max(d, debt[slot[i]])
		res[i].Cut = cut
	}
	for i := range reqs {
		r := reqs[i].Rate
		d := debt[slot[i]]
		capD := int64(r.Cap * r.Den)
		num := int64(r.Num)
		// A bucket listed again with a smaller capacity can hold more debt
		// than this entry's capacity, and a usage bucket can owe: it has
		// nothing left.
		res[i].Remaining = uint64(max(capD-d, 0) / int64(r.Den))
		switch op := reqs[i].Op; {
		case op == OpPeek || op == OpRefund:
			res[i].OK = true
			res[i].ResetMicros = ceilDiv(d, num)
		case res[i].OK:
			res[i].ResetMicros = ceilDiv(d, num)
		case op == OpCheck || op == OpShadowCheck:
			res[i].ResetMicros = ceilDiv(d+int64(r.Den)-capD, num)
		case reqs[i].Cost > r.Cap:
			res[i].ResetMicros = 0 // can never pass
		default:
			res[i].ResetMicros = ceilDiv(d+int64(reqs[i].Cost*r.Den)-capD, num)
		}
	}
	return allowed
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}
