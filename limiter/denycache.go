package limiter

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultDenyCacheSize is the number of buckets a DenyCache remembers when
// its config gives none.
const DefaultDenyCacheSize = 65536

// DenyCacheConfig configures a DenyCache.
type DenyCacheConfig struct {
	// Size bounds the buckets remembered; 0 means DefaultDenyCacheSize.
	Size int
	// Now is a monotonic clock in microseconds; nil means the process's
	// own monotonic clock. Tests move it by hand.
	Now func() int64
}

// DenyCacheStats counts what a DenyCache did.
type DenyCacheStats struct {
	// Hits is the calls denied because a bucket was known to be short:
	// the sluice_local_cache_hits_total counter.
	Hits uint64
	// Local is the hits answered without the next store at all (every
	// bucket of the call known short); the others went to the next store
	// with the known-short take made certain to fail, so nothing paid.
	Local uint64
	// Entries is the buckets remembered now.
	Entries int
}

// DenyCache is a Store in front of another (Redis) that remembers, for
// each bucket a call found short, a lower bound on its debt taken from the
// next store's answer, and denies later calls that need the bucket while
// it cannot hold their cost, without the next store. It never admits
// anything itself, so it is exact: what it denies, the next store would
// have denied. The rules (what it learns, which calls it answers,
// invalidation, probes of a hot bucket, when it can under-admit) are
// written once, in docs/deny-cache.md; keep that page true to this code.
type DenyCache struct {
	next   Store
	now    func() int64
	shards [denyShards]denyShard
	seed   maphash.Seed

	entries atomic.Int64
	epoch   atomic.Uint64 // bumped by every refund
	hits    atomic.Uint64
	local   atomic.Uint64

	pool sync.Pool // *denyScratch
}

const denyShards = 64

var _ Store = (*DenyCache)(nil)

// NewDenyCache returns a DenyCache in front of next.
func NewDenyCache(next Store, cfg DenyCacheConfig) *DenyCache {
	c := &DenyCache{next: next, now: cfg.Now, seed: maphash.MakeSeed()}
	if c.now == nil {
		start := time.Now()
		c.now = func() int64 { return int64(time.Since(start) / time.Microsecond) }
	}
	size := cfg.Size
	if size <= 0 {
		size = DefaultDenyCacheSize
	}
	per := max(1, (size+denyShards-1)/denyShards)
	for i := range c.shards {
		c.shards[i].m = make(map[string]int32)
		c.shards[i].limit = per
	}
	c.pool.New = func() any { return new(denyScratch) }
	return c
}

// Stats returns the counts so far.
func (c *DenyCache) Stats() DenyCacheStats {
	return DenyCacheStats{Hits: c.hits.Load(), Local: c.local.Load(), Entries: int(c.entries.Load())}
}

// Clear forgets every bucket.
func (c *DenyCache) Clear() {
	c.epoch.Add(1)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for j := range sh.ents {
			if p := sh.ents[j].probe; p != nil {
				close(p)
			}
		}
		c.entries.Add(-int64(len(sh.ents)))
		clear(sh.m)
		sh.ents = sh.ents[:0]
		sh.hand = 0
		sh.mu.Unlock()
	}
}

// denyEntry is one remembered bucket: its debt at local time t is at least
// low - (t-base)*rate.Num.
type denyEntry struct {
	key   string
	rate  Rate
	base  int64
	low   int64
	ref   bool          // clock bit: used since the hand last passed
	probe chan struct{} // closed when the call probing this bucket ends
}

// debtAt is the entry's lower bound of the debt at local time t.
func (e *denyEntry) debtAt(t int64) int64 {
	el := max(t-e.base, 0)
	num := int64(e.rate.Num)
	if el > e.low/num {
		return 0
	}
	return e.low - el*num
}

// short reports whether the bucket surely cannot hold cost at time t. A
// cost above capacity is left to the next store, which reports it as
// never passing.
func (e *denyEntry) short(cost uint64, t int64) bool {
	if cost > e.rate.Cap {
		return false
	}
	return e.debtAt(t)+int64(cost*e.rate.Den) > int64(e.rate.Cap*e.rate.Den)
}

// useless reports whether the bound does not deny even a cost of one.
func (e *denyEntry) useless(t int64) bool { return !e.short(1, t) }

// result is what a denied take reports at time t.
func (e *denyEntry) result(cost uint64, t int64) BucketResult {
	d := e.debtAt(t)
	capD := int64(e.rate.Cap * e.rate.Den)
	return BucketResult{
		OK:          false,
		Remaining:   uint64(max(capD-d, 0) / int64(e.rate.Den)),
		ResetMicros: ceilDiv(d+int64(cost*e.rate.Den)-capD, int64(e.rate.Num)),
	}
}

// denyShard is one lock's worth of entries, evicted by the clock
// algorithm: the hand clears used bits and evicts the first unused entry.
type denyShard struct {
	mu    sync.Mutex
	m     map[string]int32 // key -> index in ents
	ents  []denyEntry
	hand  int
	limit int
}

func (c *DenyCache) shard(key string) *denyShard {
	return &c.shards[maphash.String(c.seed, key)%denyShards]
}

// lookup state of one bucket of a call.
const (
	stNone  uint8 = iota // not remembered, or not a take
	stKnown              // remembered, not short
	stShort              // remembered and short for this cost
	stProbe              // this call probes the bucket
)

type denyScratch struct {
	state  []uint8
	probes []chan struct{} // the probe signal a stProbe bucket's call made
	reqs   []BucketRequest
}

// Apply implements Store; see DenyCache for what it answers itself.
func (c *DenyCache) Apply(ctx context.Context, reqs []BucketRequest, res []BucketResult) (bool, error) {
	n := len(reqs)
	if n == 0 || len(res) < n {
		return c.next.Apply(ctx, reqs, res)
	}
	refunds := false
	for i := range reqs {
		if reqs[i].Op == OpRefund {
			refunds = true
			break
		}
	}
	if !refunds && c.entries.Load() == 0 {
		// Nothing remembered: straight through, learning denials only.
		epoch := c.epoch.Load()
		sent := c.now()
		allowed, err := c.next.Apply(ctx, reqs, res)
		if err == nil {
			c.learn(reqs, res, nil, sent, epoch)
			c.refunded(reqs, res)
		}
		return allowed, err
	}

	s := c.pool.Get().(*denyScratch)
	defer c.pool.Put(s)
	s.state = s.state[:0]
	for range reqs {
		s.state = append(s.state, stNone)
	}
	s.probes = slices.Grow(s.probes[:0], len(reqs))[:len(reqs)]
	defer clear(s.probes)
	if refunds {
		for i := range reqs {
			if reqs[i].Op == OpRefund {
				c.forget(reqs[i].Key)
			}
		}
		c.epoch.Add(1)
	}
	now := c.now()
	wait := c.classify(reqs, s, now)
	for waits := 0; wait != nil && !c.deniedBy(reqs, s.state) && waits < maxProbeWaits; waits++ {
		// Another call is probing a remembered bucket: wait for its
		// answer, holding no probe of our own, then look again. An
		// answer that brings back a bound already run out (the bucket
		// was about to refill) starts another probe: wait for that one
		// too rather than all go to the next store.
		c.releaseAll(reqs, s)
		select {
		case <-wait:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		now = c.now()
		wait = c.classify(reqs, s, now)
	}
	if allShort(s.state) && c.fill(reqs, res, now) {
		// Every bucket known short: an enforced take denies, and so do
		// quota takes (all short); shadow takes alone pass without paying.
		c.hits.Add(1)
		c.local.Add(1)
		return !c.deniedBy(reqs, s.state), nil
	}
	if c.deniedBy(reqs, s.state) {
		c.releaseAll(reqs, s)
		return c.deny(ctx, s, reqs, res, now)
	}

	for _, st := range s.state {
		if st == stProbe {
			// Others wait for this answer, and the bound it brings back
			// is the tighter the sooner the call goes out.
			ctx = WithUrgent(ctx)
			break
		}
	}
	epoch := c.epoch.Load()
	sent := c.now()
	allowed, err := c.next.Apply(ctx, reqs, res)
	if err == nil {
		c.learn(reqs, res, s.state, sent, epoch)
		c.refunded(reqs, res)
	} else {
		// A failed probe learned nothing and its bound has run out:
		// forget the bucket, so its waiters go on by themselves rather
		// than wait for another probe.
		for i := range reqs {
			if s.state[i] == stProbe {
				c.endProbe(reqs[i].Key, s.probes[i], true)
				s.state[i], s.probes[i] = stKnown, nil
			}
		}
	}
	c.releaseAll(reqs, s)
	return allowed, err
}

// maxProbeWaits bounds the probes a call waits for before it goes to the
// next store itself.
const maxProbeWaits = 4

type urgentKey struct{}

// WithUrgent marks ctx for a store call that others are waiting on: a
// store that could hold a call back to batch it with others should send
// this one at once.
func WithUrgent(ctx context.Context) context.Context {
	return context.WithValue(ctx, urgentKey{}, true)
}

// Urgent reports whether WithUrgent marked ctx.
func Urgent(ctx context.Context) bool {
	v, _ := ctx.Value(urgentKey{}).(bool)
	return v
}

// releaseAll ends the probes the call holds.
func (c *DenyCache) releaseAll(reqs []BucketRequest, s *denyScratch) {
	for i := range reqs {
		if s.state[i] == stProbe {
			c.endProbe(reqs[i].Key, s.probes[i], false)
			s.state[i], s.probes[i] = stKnown, nil
		}
	}
}

// deniedBy reports whether an enforced take of the call is known short,
// or the call has quota takes and every one is known short.
func (c *DenyCache) deniedBy(reqs []BucketRequest, state []uint8) bool {
	quota, quotaShort := false, true
	for i := range reqs {
		switch reqs[i].Op {
		case OpTake:
			if state[i] == stShort {
				return true
			}
		case OpQuotaTake:
			quota = true
			quotaShort = quotaShort && state[i] == stShort
		}
	}
	return quota && quotaShort
}

// forced reports whether op is a take the deny cache makes fail when its
// bucket is known short: an enforced take, or a quota take of a call
// whose quota takes are all short (deny is only called then).
func forced(op Op) bool { return op == OpTake || op == OpQuotaTake }

// classify looks up every take and shadow take of the call at time now,
// filling state, and returns the probe signal of a remembered bucket some
// other call is probing (nil when none). A key listed twice in the call is
// left to the next store.
func (c *DenyCache) classify(reqs []BucketRequest, s *denyScratch, now int64) <-chan struct{} {
	state := s.state
	var wait <-chan struct{}
	for i := range reqs {
		state[i] = stNone
		r := &reqs[i]
		if r.Op != OpTake && r.Op != OpShadowTake && r.Op != OpQuotaTake {
			continue
		}
		if repeated(reqs, i) {
			// The script decides a repeated bucket under its first rate:
			// the bound may not follow. Forget it, as for a new rate.
			if c.forget(r.Key) {
				c.epoch.Add(1)
			}
			continue
		}
		sh := c.shard(r.Key)
		sh.mu.Lock()
		j, ok := sh.m[r.Key]
		if ok {
			e := &sh.ents[j]
			switch {
			case e.rate != r.Rate:
				// Another rate (a reload, an override): this call may
				// change the bucket in ways the bound does not follow (a
				// smaller capacity caps the debt). Forget it, and what
				// calls in flight would teach.
				c.remove(sh, j)
				c.epoch.Add(1)
			case e.short(r.Cost, now):
				e.ref = true
				state[i] = stShort
			case e.probe != nil:
				e.ref = true
				state[i] = stKnown
				if wait == nil {
					wait = e.probe
				}
			default:
				// The bound has run out: this call probes the bucket,
				// and calls that come meanwhile wait for its answer.
				e.ref = true
				e.probe = make(chan struct{})
				state[i], s.probes[i] = stProbe, e.probe
			}
		}
		sh.mu.Unlock()
	}
	return wait
}

// repeated reports whether reqs[i].Key appears elsewhere in reqs.
func repeated(reqs []BucketRequest, i int) bool {
	for j := range reqs {
		if j != i && reqs[j].Key == reqs[i].Key {
			return true
		}
	}
	return false
}

func allShort(state []uint8) bool {
	for _, st := range state {
		if st != stShort {
			return false
		}
	}
	return true
}

// deny answers a call with a known-short enforced take that also has
// other buckets: through the next store, so refunds and usage charges are
// recorded and the other buckets report their state. The known-short
// takes are made to fail, and the other takes and shadow takes are sent as
// peeks (a bucket listed twice excepted: the store decides its entries in
// turn): the call is denied, so none of them would pay, and as peeks a
// store that decides in parts (Redis Cluster slot groups, each taking and
// refunding when another denied) has nothing to take.
func (c *DenyCache) deny(ctx context.Context, s *denyScratch, reqs []BucketRequest, res []BucketResult, now int64) (bool, error) {
	c.hits.Add(1)
	s.reqs = append(s.reqs[:0], reqs...)
	for i := range s.reqs {
		switch op := s.reqs[i].Op; {
		case s.state[i] == stShort && forced(op):
			s.reqs[i].Cost = s.reqs[i].Rate.Cap + 1 // cannot pass: the call is denied
		case (op == OpTake || op == OpShadowTake || op == OpQuotaTake) && !repeated(reqs, i):
			s.reqs[i].Op = OpPeek
		}
	}
	epoch := c.epoch.Load()
	sent := c.now()
	_, err := c.next.Apply(ctx, s.reqs, res)
	if err == nil {
		for i := range reqs {
			if s.reqs[i].Op == OpPeek && reqs[i].Op != OpPeek {
				res[i] = peekedTake(reqs[i], res[i])
			}
		}
	}
	clear(s.reqs) // drop the caller's keys
	if err != nil {
		return false, err
	}
	// Learn from the buckets sent as they were; the forced ones report
	// from the bound (their Remaining, the next store's, is exact).
	for i := range reqs {
		if s.state[i] == stShort {
			s.state[i] = stProbe + 1 // not learned from
		}
	}
	c.learn(reqs, res, s.state, sent, epoch)
	c.refunded(reqs, res)
	for i := range reqs {
		if s.state[i] == stProbe+1 {
			res[i].OK = false
			if b, ok := c.bound(reqs[i], now); ok {
				res[i].ResetMicros = b.ResetMicros
			}
		}
	}
	return false, nil
}

// peekedTake is what a take (or shadow take) r of a denied call reports,
// from the peek p of its bucket: OK when the bucket holds the cost, as
// Remaining tells exactly. When it does not, the time until it will is
// taken from the least debt the peek allows (its time until full and its
// remaining both bound the debt), so it may be early by a microsecond,
// never late: a bound learned from it stays a lower bound.
func peekedTake(r BucketRequest, p BucketResult) BucketResult {
	if r.Cost <= r.Rate.Cap && p.Remaining >= r.Cost {
		return p
	}
	p.OK, p.ResetMicros = false, 0
	if r.Cost > r.Rate.Cap || r.Rate.Num == 0 || r.Rate.Den == 0 {
		return p
	}
	num, den := int64(r.Rate.Num), int64(r.Rate.Den)
	capD := int64(r.Rate.Cap) * den
	var low int64
	if p.Remaining < r.Rate.Cap {
		low = capD - (int64(p.Remaining)+1)*den + 1
	}
	if full := p.ResetMicros; full > 0 {
		low = max(low, (full-1)*num+1)
	}
	p.ResetMicros = ceilDiv(low+int64(r.Cost)*den-capD, num)
	return p
}

// fill answers every bucket of the call from the cache; false when an
// entry went away meanwhile.
func (c *DenyCache) fill(reqs []BucketRequest, res []BucketResult, now int64) bool {
	for i := range reqs {
		b, ok := c.bound(reqs[i], now)
		if !ok {
			return false
		}
		res[i] = b
	}
	return true
}

// bound is what the entry of r says r gets at time now, when r is known
// short.
func (c *DenyCache) bound(r BucketRequest, now int64) (BucketResult, bool) {
	sh := c.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	j, ok := sh.m[r.Key]
	if !ok {
		return BucketResult{}, false
	}
	e := &sh.ents[j]
	if e.rate != r.Rate || !e.short(r.Cost, now) {
		return BucketResult{}, false
	}
	return e.result(r.Cost, now), true
}

// endProbe ends the probe p of key, waking the calls that wait on it, and
// with forget drops the bucket too. It does nothing when the entry was
// removed meanwhile (which woke them) or now has another call's probe.
func (c *DenyCache) endProbe(key string, p chan struct{}, forget bool) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	j, ok := sh.m[key]
	if !ok || sh.ents[j].probe != p {
		return
	}
	if forget {
		c.remove(sh, j) // closes p
		return
	}
	close(p)
	sh.ents[j].probe = nil
}

// forget drops a bucket, and reports whether it was remembered.
func (c *DenyCache) forget(key string) bool {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	j, ok := sh.m[key]
	if ok {
		c.remove(sh, j)
	}
	return ok
}

// remove deletes entry j of sh, which must be locked.
func (c *DenyCache) remove(sh *denyShard, j int32) {
	e := &sh.ents[j]
	if e.probe != nil {
		close(e.probe)
	}
	delete(sh.m, e.key)
	last := int32(len(sh.ents) - 1)
	if j != last {
		sh.ents[j] = sh.ents[last]
		sh.m[sh.ents[j].key] = j
	}
	sh.ents[last] = denyEntry{}
	sh.ents = sh.ents[:last]
	if sh.hand >= len(sh.ents) {
		sh.hand = 0
	}
	c.entries.Add(-1)
}

// refunded treats the buckets the next store took and gave back within the
// call (Refunded, or Pending while the refund is retried) as refunds made
// through the cache: answers to calls in flight meanwhile may have seen the
// payment, so they teach nothing (the epoch), and a bound already learned
// from one is forgotten. The call's own answer, from after the refund, has
// been learned from already.
func (c *DenyCache) refunded(reqs []BucketRequest, res []BucketResult) {
	found := false
	for i := range reqs {
		if res[i].Refunded || res[i].Pending {
			c.forget(reqs[i].Key)
			found = true
		}
	}
	if found {
		c.epoch.Add(1)
	}
}

// learn takes bounds from an answer of the next store to a call sent at
// local time sent. state (nil: nothing remembered when the call was made)
// marks the buckets not to learn from. Nothing is learned when a refund
// was made since epoch.
func (c *DenyCache) learn(reqs []BucketRequest, res []BucketResult, state []uint8, sent int64, epoch uint64) {
	for i := range reqs {
		r := &reqs[i]
		if state != nil && state[i] > stProbe {
			continue
		}
		if r.Op == OpRefund || r.Rate.Num == 0 || r.Rate.Den == 0 || res[i].Pending {
			continue
		}
		num := int64(r.Rate.Num)
		capD := int64(r.Rate.Cap * r.Rate.Den)
		var low int64
		short := !res[i].OK && (r.Op == OpTake || r.Op == OpShadowTake || r.Op == OpQuotaTake)
		switch {
		case short:
			if r.Cost > r.Rate.Cap || res[i].ResetMicros < 1 {
				continue
			}
			low = (res[i].ResetMicros-1)*num + capD - int64(r.Cost*r.Rate.Den) + 1
		case state == nil || state[i] == stNone:
			// Admitted and not remembered: nothing worth keeping.
			continue
		case res[i].ResetMicros >= 1:
			low = (res[i].ResetMicros-1)*num + 1
		}
		low = min(low, capD)
		if u := res[i].Unsettled; u > 0 {
			// Takes of other calls across Cluster slots may still be
			// refunded: learn only the debt that holds after every one.
			low -= int64(min(u, r.Rate.Cap+r.Rate.MaxDebt+1) * r.Rate.Den)
			if short && low+int64(r.Cost*r.Rate.Den) <= capD {
				continue // not short once refunded: nothing to learn
			}
			low = max(low, 0)
		}
		if repeated(reqs, i) {
			continue
		}
		if c.epoch.Load() != epoch {
			return
		}
		c.store(r.Key, r.Rate, sent, low, short)
	}
}

// store merges the bound (debt >= low at local time base) into the entry
// for key, creating it when create is set.
func (c *DenyCache) store(key string, rate Rate, base, low int64, create bool) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if j, ok := sh.m[key]; ok {
		e := &sh.ents[j]
		if e.rate == rate {
			// Both bounds hold; keep the higher, taken at the later time.
			if base >= e.base {
				old := e.debtAt(base)
				e.base, e.low = base, max(low, old)
			} else {
				nl := (&denyEntry{rate: rate, base: base, low: low}).debtAt(e.base)
				e.low = max(e.low, nl)
			}
			e.ref = true
		} else {
			e.rate, e.base, e.low, e.ref = rate, base, low, true
		}
		if !create && e.useless(base) {
			// Admitted with a token or more to spare: the bucket is not
			// near empty, and probing it would only serialize its calls.
			c.remove(sh, j)
		}
		return
	}
	if !create {
		return
	}
	e := denyEntry{key: key, rate: rate, base: base, low: low}
	if len(sh.ents) < sh.limit {
		sh.ents = append(sh.ents, e)
		sh.m[key] = int32(len(sh.ents) - 1)
		c.entries.Add(1)
		return
	}
	// Full: the clock hand clears used bits until it finds an unused
	// entry that no call is probing.
	for range 2 * len(sh.ents) {
		v := &sh.ents[sh.hand]
		if v.ref || v.probe != nil {
			v.ref = false
			sh.hand = (sh.hand + 1) % len(sh.ents)
			continue
		}
		delete(sh.m, v.key)
		*v = e
		sh.m[key] = int32(sh.hand)
		sh.hand = (sh.hand + 1) % len(sh.ents)
		return
	}
}
