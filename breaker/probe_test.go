package breaker

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type stepClock struct{ ns atomic.Int64 }

func (c *stepClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// TestProbeLimitConcurrent checks, from inside the calls, that a HALF_OPEN
// period never has more than HalfOpenMaxCalls probes running at once,
// whatever many goroutines try. Probes are told apart from CLOSED calls by
// the token they were admitted with, which Do and Allow do not expose.
func TestProbeLimitConcurrent(t *testing.T) {
	clk := &stepClock{}
	cfg := DefaultConfig()
	cfg.Clock = clk
	cfg.ConsecutiveFailures = 2
	cfg.OpenDuration = time.Millisecond
	cfg.HalfOpenMaxCalls = 3
	b, err := New("probe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		running sync.Map // token -> *atomic.Int64, probes running in that HALF_OPEN period
		probes  atomic.Int64
		wg      sync.WaitGroup
	)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 2))
			for range 3000 {
				clk.ns.Add(int64(r.IntN(20)) * int64(time.Microsecond))
				p, err := b.admit(false)
				if err != nil {
					continue
				}
				if State(p.tok&3) == StateHalfOpen {
					v, _ := running.LoadOrStore(p.tok, new(atomic.Int64))
					n := v.(*atomic.Int64)
					if k := n.Add(1); k > int64(cfg.HalfOpenMaxCalls) {
						t.Errorf("%d probes running at once, limit %d", k, cfg.HalfOpenMaxCalls)
					}
					probes.Add(1)
					runtime.Gosched()
					n.Add(-1)
				}
				o := outcome(r.IntN(3)) // success, failure or ignored
				b.finish(p, o, false)
			}
		}()
	}
	wg.Wait()
	if probes.Load() == 0 {
		t.Fatal("no probes ran; the test exercised nothing")
	}
	t.Logf("%d probes", probes.Load())
}
