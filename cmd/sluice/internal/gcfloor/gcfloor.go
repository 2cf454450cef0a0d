// Package gcfloor tunes the Go garbage collector of the serving process:
// it sets the GC percent (runtime.gc_percent) and, with a heap floor
// (runtime.min_heap_mb), raises it while the live heap is small, so a small
// heap is not collected many times a second.
//
// It imports nothing of Sluice.
package gcfloor

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// runtimeMinHeap is the Go runtime's smallest heap target at a GC percent
// of 100; the runtime scales it with the percent (4 MiB at 100, 16 MiB at
// 400).
const runtimeMinHeap = 4 << 20

// gcPercentFor is the GC percent for a live heap of live bytes: base,
// raised as far as needed (and no further) for the heap to grow to floor
// bytes before the next collection, so a small live heap is not collected
// many times a second. At most 10000.
func gcPercentFor(base int, floor, live uint64) int {
	if floor == 0 {
		return base
	}
	// The target is max(live*(1+p/100), runtimeMinHeap*p/100): the second
	// reaches floor at p = floor*100/runtimeMinHeap, the first at
	// p = (floor/live-1)*100. The smaller of the two is enough.
	p := floor * 100 / runtimeMinHeap
	if live > 0 {
		q := uint64(0)
		if floor > live {
			q = (floor - live) * 100 / live
		}
		p = min(p, q)
	}
	return max(base, int(min(p, 10000)))
}

// liveHeap reads the live heap the last collection left.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// heapFloor keeps the GC percent at gcPercentFor(base, floor, live heap),
// looking again every interval, until ctx ends. set is debug.SetGCPercent
// in the server; live reads the live heap.
func heapFloor(ctx context.Context, base int, floor uint64, every time.Duration, set func(int) int, live func() uint64) {
	cur := -1
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if p := gcPercentFor(base, floor, live()); p != cur {
			set(p)
			cur = p
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Floor keeps the process's GC percent at gcPercentFor(GCPercent, floor,
// live heap) between Open and Close. Open and Close are called once each,
// from one goroutine.
type Floor struct {
	base   int
	floor  uint64 // bytes; 0: no goroutine, only the base percent
	every  time.Duration
	set    func(int) int
	live   func() uint64
	prev   int // the GC percent found at Open, put back by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Floor for a base GC percent and a heap floor of floorMB
// MiB (0: off, the base percent only). It changes nothing until Open.
func New(gcPercent, floorMB int) *Floor {
	return &Floor{base: gcPercent, floor: uint64(floorMB) << 20, every: time.Second,
		set: debug.SetGCPercent, live: liveHeap}
}

// Open sets the base GC percent and, with a floor, starts the goroutine
// that follows the live heap; it runs until Close (or until ctx ends).
func (f *Floor) Open(ctx context.Context) {
	f.prev = f.set(f.base)
	if f.floor == 0 {
		return
	}
	ctx, f.cancel = context.WithCancel(ctx)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		heapFloor(ctx, f.base, f.floor, f.every, f.set, f.live)
	}()
}

// Close stops the goroutine, waits for it, and puts back the GC percent
// found at Open.
func (f *Floor) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	f.set(f.prev)
}
