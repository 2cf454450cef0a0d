package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
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

// startHeapFloor runs heapFloor for the serving process and returns the
// function that stops it and puts back the GC percent found at start.
func startHeapFloor(base int, floorMB int) (stop func()) {
	prev := debug.SetGCPercent(base)
	if floorMB == 0 {
		return func() { debug.SetGCPercent(prev) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		heapFloor(ctx, base, uint64(floorMB)<<20, time.Second, debug.SetGCPercent, liveHeap)
	}()
	return func() {
		cancel()
		<-done
		debug.SetGCPercent(prev)
	}
}
