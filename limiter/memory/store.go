// Package memory is the embedded token-bucket store: the same semantics as
// limiter/redis, kept in process. It serves `make run`, single-replica use
// and the degraded mode when Redis is unavailable. It imports only limiter.
package memory

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/sluice-rl/sluice/limiter"
)

const shards = 64

// Store keeps buckets in lock-striped maps. A bucket is dropped once it is
// full again, so memory follows the number of buckets in use.
type Store struct {
	clock  limiter.Clock
	seed   maphash.Seed
	shards [shards]shard
}

type shard struct {
	mu      sync.Mutex
	buckets map[string]limiter.Stored
	ops     uint32
}

var _ limiter.Store = (*Store)(nil)

// New returns an empty store. clock may be nil for the wall clock; tests
// pass one they can move.
func New(clock limiter.Clock) *Store {
	if clock == nil {
		clock = func() int64 { return time.Now().UnixMicro() }
	}
	s := &Store{clock: clock, seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].buckets = make(map[string]limiter.Stored)
	}
	return s
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
			if st, ok := sh.buckets[reqs[i].Key]; ok {
				d = st.Debt(now, reqs[i].Rate)
			}
		}
		sc.debt = append(sc.debt, d)
	}
	sc.before = append(sc.before[:0], sc.debt...)
	allowed := limiter.Decide(reqs, sc.slot, sc.debt, res)
	for i := range reqs {
		if sc.slot[i] != i || sc.before[i] == sc.debt[i] {
			continue
		}
		sh := &s.shards[s.shardOf(reqs[i].Key)]
		if d := sc.debt[i]; d > 0 {
			sh.buckets[reqs[i].Key] = limiter.Encode(d, now, reqs[i].Rate)
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
	for k, st := range sh.buckets {
		if n == 0 {
			return
		}
		n--
		if st.FullAtMs*1000 <= nowUs {
			delete(sh.buckets, k)
		}
	}
}

// TTL reports how long until the bucket at key is full again, and whether
// the store holds it (a full bucket is not held).
func (s *Store) TTL(key string) (time.Duration, bool) {
	sh := &s.shards[s.shardOf(key)]
	sh.mu.Lock()
	st, ok := sh.buckets[key]
	sh.mu.Unlock()
	if !ok {
		return 0, false
	}
	left := st.FullAtMs*1000 - s.clock()
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
