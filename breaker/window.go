package breaker

import (
	"sync"
	"sync/atomic"
	"time"
)

// counts are the calls in a window.
type counts struct {
	calls, failures, slow int64
}

// bucket holds the calls of one slice of time. idx says which slice: a
// bucket whose idx has fallen out of the window holds stale counts, which
// totals skips and the next add clears.
type bucket struct {
	idx      atomic.Int64
	calls    atomic.Int64
	failures atomic.Int64
	slow     atomic.Int64
	_        [32]byte // one bucket per cache line
}

// window is a sliding time window of call counts, split into buckets of
// width nanoseconds kept in a ring: slice i, covering [i*width,
// (i+1)*width) after the breaker's epoch, lives in buckets[i%len]. Adding
// to the current bucket is lock-free; the first add of a new slice takes
// mu to clear the bucket it reuses. Old calls drop out as the clock moves
// because totals counts only the buckets of the last len slices.
//
// A call that is slow to add (it read the clock, then waited a whole
// window before adding) may land in a newer slice than its own; a
// breaker can live with that.
type window struct {
	width   int64
	buckets []bucket
}

func newWindow(length time.Duration, n int) *window {
	w := &window{width: int64(length) / int64(n), buckets: make([]bucket, n)}
	for i := range w.buckets {
		w.buckets[i].idx.Store(int64(i - n)) // slices before the epoch: empty
	}
	return w
}

func (w *window) slice(since time.Duration) int64 {
	if since < 0 {
		return 0
	}
	return int64(since) / w.width
}

// add records one call at since. mu guards the clearing of reused buckets.
func (w *window) add(mu *sync.Mutex, since time.Duration, failure, slow bool) {
	i := w.slice(since)
	b := &w.buckets[i%int64(len(w.buckets))]
	if b.idx.Load() < i {
		mu.Lock()
		if b.idx.Load() < i {
			// Clear, then claim: an add that sees the new idx finds the
			// counts already cleared.
			b.calls.Store(0)
			b.failures.Store(0)
			b.slow.Store(0)
			b.idx.Store(i)
		}
		mu.Unlock()
	}
	b.calls.Add(1)
	if failure {
		b.failures.Add(1)
	}
	if slow {
		b.slow.Add(1)
	}
}

// totals sums the window as it stands at since.
func (w *window) totals(since time.Duration) counts {
	i := w.slice(since)
	oldest := i - int64(len(w.buckets))
	var t counts
	for k := range w.buckets {
		b := &w.buckets[k]
		if b.idx.Load() > oldest {
			t.calls += b.calls.Load()
			t.failures += b.failures.Load()
			t.slow += b.slow.Load()
		}
	}
	return t
}

// reset empties the window. Called with the breaker's mu held.
func (w *window) reset() {
	for k := range w.buckets {
		b := &w.buckets[k]
		b.calls.Store(0)
		b.failures.Store(0)
		b.slow.Store(0)
	}
}
