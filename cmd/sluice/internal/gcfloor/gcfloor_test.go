package gcfloor

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		name        string
		base        int
		floor, live uint64
		want        int
	}{
		{"off", 400, 0, 2 * mb, 400},
		{"small heap: the runtime's minimum reaches the floor", 400, 64 * mb, 2 * mb, 1600},
		{"no live heap yet", 400, 64 * mb, 0, 1600},
		{"live heap where the proportional target reaches it", 400, 64 * mb, 12 * mb, 433},
		{"live heap above a fifth of the floor: base", 400, 64 * mb, 16 * mb, 400},
		{"live heap above the floor", 400, 64 * mb, 200 * mb, 400},
		{"a higher base wins", 2000, 64 * mb, 2 * mb, 2000},
		{"capped at 10000", 100, 1 << 40, 1, 10000},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := gcPercentFor(c.base, c.floor, c.live)
			if got != c.want {
				t.Fatalf("gcPercentFor(%d, %d, %d) = %d, want %d", c.base, c.floor, c.live, got, c.want)
			}
			// The heap target it gives reaches the floor (or the base
			// already does).
			target := max(float64(c.live)*(1+float64(got)/100), float64(runtimeMinHeap)*float64(got)/100)
			if got < 10000 && got > c.base && target < float64(c.floor)*0.99 {
				t.Fatalf("percent %d gives a target of %.0f MiB, under the floor", got, target/mb)
			}
		})
	}
}

// TestHeapFloorFollowsLiveHeap: the percent is set at once, set again only
// when the live heap moves it, and the loop ends with its context.
func TestHeapFloorFollowsLiveHeap(t *testing.T) {
	var mu sync.Mutex
	var live uint64 = 2 << 20
	var sets []int
	setCh := make(chan int, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		heapFloor(ctx, 400, 64<<20, time.Millisecond,
			func(p int) int { setCh <- p; return 0 },
			func() uint64 { mu.Lock(); defer mu.Unlock(); return live })
	}()
	sets = append(sets, <-setCh)
	mu.Lock()
	live = 100 << 20
	mu.Unlock()
	sets = append(sets, <-setCh)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("heapFloor did not end with its context")
	}
	close(setCh)
	for p := range setCh {
		sets = append(sets, p)
	}
	if len(sets) != 2 || sets[0] != 1600 || sets[1] != 400 {
		t.Fatalf("percents set %v, want [1600 400]", sets)
	}
}

// TestFloorOpenClose: Open sets the percent for the live heap and follows
// it; Close stops the goroutine (no percent set after it) and puts back
// the percent found at Open. With no floor, no goroutine runs.
func TestFloorOpenClose(t *testing.T) {
	for _, c := range []struct {
		name    string
		floorMB int
		want    int // the percent while open
	}{
		{"floor", 64, 1600},
		{"no floor", 0, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				percent, sets := 100, 0
				f := New(400, c.floorMB)
				f.set = func(p int) int {
					mu.Lock()
					defer mu.Unlock()
					old := percent
					percent, sets = p, sets+1
					return old
				}
				f.live = func() uint64 { return 2 << 20 }
				read := func() (int, int) {
					mu.Lock()
					defer mu.Unlock()
					return percent, sets
				}
				f.Open(context.Background())
				time.Sleep(3 * time.Second)
				synctest.Wait()
				if p, _ := read(); p != c.want {
					t.Fatalf("percent while open = %d, want %d", p, c.want)
				}
				f.Close()
				p, n := read()
				if p != 100 {
					t.Fatalf("percent after Close = %d, want 100 put back", p)
				}
				time.Sleep(time.Minute)
				synctest.Wait()
				if _, again := read(); again != n {
					t.Fatalf("percent set %d times after Close", again-n)
				}
			})
		})
	}
}
