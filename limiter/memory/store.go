// Package memory is the embedded token-bucket store: the same semantics as
// limiter/redis, kept in process. It serves `make run`, single-replica use
// and the degraded mode when Redis is unavailable. It imports only limiter
// and, for the optional span of a call, OpenTelemetry's trace API.
package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-rl/sluice/limiter"
)

const shards = 64

// MinBuckets is the smallest bound on the buckets held: one per shard.
const MinBuckets = shards

// DefaultMaxBuckets is Config.MaxBuckets unless configured: about a million
// buckets, 2^14 per shard.
const DefaultMaxBuckets = 1 << 20

// evictSamples is how many buckets of a full shard are looked at to choose
// the one to evict: the one with the least debt among them. More samples
// come closer to the exact order at a higher cost per insert; a bucket is
// evicted before one with less debt only when every sample owes more.
const evictSamples = 8

// Config configures a Store.
type Config struct {
	// MaxBuckets bounds the buckets held, at least MinBuckets. Each of the
	// 64 shards holds at most MaxBuckets/64; inserting into a full shard
	// first evicts the bucket with the least debt among a few sampled.
	MaxBuckets int `yaml:"max_buckets"`
}

// DefaultConfig is the configuration New uses.
func DefaultConfig() Config { return Config{MaxBuckets: DefaultMaxBuckets} }

// Validate checks c.
func (c Config) Validate() error {
	if c.MaxBuckets < MinBuckets {
		return fmt.Errorf("max_buckets: must be at least %d (one per shard), got %d", MinBuckets, c.MaxBuckets)
	}
	return nil
}

// Store keeps buckets in lock-striped maps. A bucket is dropped once it is
// full again, so memory follows the number of buckets in use, up to a
// bound: past it, inserting a bucket evicts the one that owes least.
type Store struct {
	clock    limiter.Clock
	seed     maphash.Seed
	perShard int
	shards   [shards]shard
	cut      atomic.Uint64 // usage tokens cut by the debt floor
	tracer   trace.Tracer  // nil: no spans (trace.go)
}

type shard struct {
	mu      sync.Mutex
	buckets map[string]entry
	ops     uint32

	evictions   uint64
	evictedDebt float64 // tokens
}

// entry is a stored bucket with the rate of its last write, which values
// its debt in tokens when it is a candidate for eviction. The stored debt
// is at most that rate's Bound (capacity, plus max_debt for a usage limit)
// and only falls, so no cap is needed.
type entry struct {
	st       limiter.Stored
	num, den uint64
}

var _ limiter.Store = (*Store)(nil)

// New returns an empty store with the default configuration. clock may be
// nil for the wall clock; tests pass one they can move.
func New(clock limiter.Clock) *Store {
	s, _ := NewWithConfig(clock, DefaultConfig())
	return s
}

// NewWithConfig returns an empty store configured by cfg. It fails when
// cfg is not valid.
func NewWithConfig(clock limiter.Clock, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = func() int64 { return time.Now().UnixMicro() }
	}
	s := &Store{clock: clock, seed: maphash.MakeSeed(), perShard: cfg.MaxBuckets / shards}
	for i := range s.shards {
		s.shards[i].buckets = make(map[string]entry)
	}
	return s, nil
}

// scratch holds the per-call working set.
type scratch struct {
	slot   []int
	debt   []int64
	before []int64
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Apply implements limiter.Store. The shards the call touches are locked in
// ascending order, so the call is atomic and cannot deadlock another.
func (s *Store) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	if s.tracer != nil && trace.SpanFromContext(ctx).IsRecording() {
		return s.applyTraced(ctx, reqs, res)
	}
	return s.apply(ctx, reqs, res)
}

func (s *Store) apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	sc.slot, sc.debt = sc.slot[:0], sc.debt[:0]

	var locked [shards]bool
	for i := range reqs {
		locked[s.shardOf(reqs[i].Key)] = true
	}
	for i := range locked {
		if locked[i] {
			s.shards[i].mu.Lock()
		}
	}
	defer func() {
		for i := range locked {
			if locked[i] {
				s.shards[i].mu.Unlock()
			}
		}
	}()

	now := s.clock()
	for i := range reqs {
		slot := i
		for j := 0; j < i; j++ {
			if reqs[j].Key == reqs[i].Key {
				slot = sc.slot[j]
				break
			}
		}
		sc.slot = append(sc.slot, slot)
		var d int64
		if slot == i {
			sh := &s.shards[s.shardOf(reqs[i].Key)]
			if e, ok := sh.buckets[reqs[i].Key]; ok {
				d = e.st.Debt(now, reqs[i].Rate)
			}
		}
		sc.debt = append(sc.debt, d)
	}
	sc.before = append(sc.before[:0], sc.debt...)
	allowed := limiter.Decide(reqs, sc.slot, sc.debt, res)
	for i := range res[:len(reqs)] {
		if res[i].Cut > 0 {
			s.cut.Add(res[i].Cut)
		}
	}
	for i := range reqs {
		if sc.slot[i] != i || sc.before[i] == sc.debt[i] {
			continue
		}
		sh := &s.shards[s.shardOf(reqs[i].Key)]
		if d := sc.debt[i]; d > 0 {
			key, r := reqs[i].Key, reqs[i].Rate
			if len(sh.buckets) >= s.perShard {
				// Look again rather than trust the first read: an eviction
				// for an earlier bucket of this call may have taken this one.
				if _, ok := sh.buckets[key]; !ok {
					sh.evict(now)
				}
			}
			sh.buckets[key] = entry{st: limiter.Encode(d, now, r), num: r.Num, den: r.Den}
		} else {
			delete(sh.buckets, reqs[i].Key)
		}
		sh.ops++
		if sh.ops%64 == 0 {
			sh.sweep(now, 32)
		}
	}
	return allowed, nil
}

func (s *Store) shardOf(key string) int {
	return int(maphash.String(s.seed, key) % shards)
}

// sweep drops up to n buckets that are full again. Map iteration starts at
// a random place, so repeated sweeps cover the shard.
func (sh *shard) sweep(nowUs int64, n int) {
	for k, e := range sh.buckets {
		if n == 0 {
			return
		}
		n--
		if e.st.FullAtMs*1000 <= nowUs {
			delete(sh.buckets, k)
		}
	}
}

// evict drops the bucket with the least debt at nowUs among evictSamples
// of the shard, and counts the debt it forgives: a forgotten bucket comes
// back full. Map iteration starts at a random place, so the samples are a
// random run of the shard; a full bucket among them ends the search, as
// forgetting it costs nothing.
func (sh *shard) evict(nowUs int64) {
	var (
		victim string
		least  float64
		n      int
	)
	for k, e := range sh.buckets {
		d := e.debt(nowUs)
		if n == 0 || d < least {
			victim, least = k, d
		}
		n++
		if n == evictSamples || d == 0 {
			break
		}
	}
	if n == 0 {
		return
	}
	delete(sh.buckets, victim)
	sh.evictions++
	sh.evictedDebt += least
}

// debt is the tokens e lacks at nowUs.
func (e entry) debt(nowUs int64) float64 {
	diff := e.st.FullAtMs*1000 - nowUs
	if diff <= 0 {
		return 0
	}
	num := int64(e.num)
	// The debt stays below 2^53 (limiter.Rate's bound); a clock that went
	// back could push diff past it, so cap before multiplying.
	if diff > (1<<53)/num {
		return float64(1<<53) / float64(e.den)
	}
	d := diff*num - e.st.Slack
	if d <= 0 {
		return 0
	}
	return float64(d) / float64(e.den)
}

// TTL reports how long until the bucket at key is full again, and whether
// the store holds it (a full bucket is not held).
func (s *Store) TTL(key string) (time.Duration, bool) {
	sh := &s.shards[s.shardOf(key)]
	sh.mu.Lock()
	e, ok := sh.buckets[key]
	sh.mu.Unlock()
	if !ok {
		return 0, false
	}
	left := e.st.FullAtMs*1000 - s.clock()
	if left <= 0 {
		return 0, false
	}
	return time.Duration(left) * time.Microsecond, true
}

// Len is the number of buckets held, including any not yet swept.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].buckets)
		s.shards[i].mu.Unlock()
	}
	return n
}

// Stats is what a Store has held and forgotten.
type Stats struct {
	// Buckets is the number held, including any full ones not yet swept.
	Buckets int
	// Evictions counts the buckets dropped to make room for others.
	Evictions uint64
	// EvictedDebt is the debt those buckets had when dropped, in tokens:
	// each came back full, so this bounds what was admitted beyond the
	// limits because of the bound.
	EvictedDebt float64
	// Cut is the usage-charged tokens the debt floor (max_debt) cut off:
	// reported costs that were not charged.
	Cut uint64
}

// Stats returns the store's counts so far.
func (s *Store) Stats() Stats {
	var st Stats
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		st.Buckets += len(sh.buckets)
		st.Evictions += sh.evictions
		st.EvictedDebt += sh.evictedDebt
		sh.mu.Unlock()
	}
	st.Cut = s.cut.Load()
	return st
}

// MaxBuckets is the most buckets the store holds.
func (s *Store) MaxBuckets() int { return s.perShard * shards }
