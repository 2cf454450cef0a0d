package redis

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
)

// batcher writes queued script calls to Redis as pipelines. A fixed number
// of writers take calls from one queue: a writer blocks for the first call,
// then takes whatever else is already queued, up to the batch bound, and
// sends them all in one pipeline. There is no waiting window: under light
// load every call goes out alone at once, and under load calls gather in
// the queue while the writers' previous pipelines are in flight, so the
// batch size follows the load. A writer that finds its first call alone
// yields the processor once before sending it, so the callers that the
// same socket read woke can join; that is not a timer, only a turn.
//
// Each pipeline has its own deadline, its oldest call's queueing time plus
// the call timeout, so a slow or failed pipeline fails only its own calls.
// A reply of NOSCRIPT (a restarted or flushed Redis) means that call did
// not run: those calls are sent again once, as EVAL, which reloads the
// script.
type batcher struct {
	s        *Store
	queue    chan *script
	maxBatch int

	mu     sync.RWMutex // held for reading while queueing; closed under the write lock
	closed bool
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pipelines, calls atomic.Uint64
}

func newBatcher(s *Store, maxBatch, writers int) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	b := &batcher{s: s, queue: make(chan *script, maxBatch*writers), maxBatch: maxBatch, cancel: cancel}
	b.wg.Add(writers)
	for i := 0; i < writers; i++ {
		go func() {
			defer b.wg.Done()
			b.write(ctx)
		}()
	}
	return b
}

// BatchStats counts what the pipeline writers sent.
type BatchStats struct {
	Pipelines uint64 // pipelines sent
	Calls     uint64 // script calls in them
}

// BatchStats returns the counts so far; zero when batching is off.
func (s *Store) BatchStats() BatchStats {
	if s.b == nil {
		return BatchStats{}
	}
	return BatchStats{Pipelines: s.b.pipelines.Load(), Calls: s.b.calls.Load()}
}

// enqueue hands sc to the writers. It waits for room in the queue no
// longer than the call timeout.
func (b *batcher) enqueue(sc *script) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	select {
	case b.queue <- sc:
		return nil
	default:
	}
	t := time.NewTimer(b.s.timeout)
	defer t.Stop()
	select {
	case b.queue <- sc:
		return nil
	case <-t.C:
		return fmt.Errorf("%w (%v; queue full)", ErrTimeout, b.s.timeout)
	}
}

// close stops the writers after their pipelines in flight, and fails the
// calls still queued.
func (b *batcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	for {
		select {
		case sc := <-b.queue:
			sc.err = ErrClosed
			sc.done <- struct{}{}
		default:
			return
		}
	}
}

func (b *batcher) write(ctx context.Context) {
	pipe := b.s.client.Pipeline()
	batch := make([]*script, 0, b.maxBatch)
	cmds := make([]*goredis.IntSliceCmd, 0, b.maxBatch)
	for {
		batch = batch[:0]
		select {
		case sc := <-b.queue:
			batch = append(batch, sc)
		case <-ctx.Done():
			return
		}
		if len(b.queue) == 0 && !limiter.Urgent(batch[0].ctx) {
			// Callers woken by the same answers (theirs, or the gRPC
			// frames read with them) are likely runnable: let them queue
			// before this call goes out alone. Under light load nothing
			// else runs and the yield returns at once. A deny cache's
			// probe, which others wait on, goes at once.
			runtime.Gosched()
		}
	fill:
		for len(batch) < b.maxBatch {
			select {
			case sc := <-b.queue:
				batch = append(batch, sc)
			default:
				break fill
			}
		}
		cmds = b.send(pipe, batch, cmds)
	}
}

// send writes one batch and tells each call its outcome.
func (b *batcher) send(pipe goredis.Pipeliner, batch []*script, cmds []*goredis.IntSliceCmd) []*goredis.IntSliceCmd {
	now := time.Now()
	live := batch[:0]
	var oldest time.Time
	for _, sc := range batch {
		switch {
		case sc.ctx.Err() != nil:
			// The caller has gone: do not pay for it.
			sc.err = sc.ctx.Err()
			sc.done <- struct{}{}
		case now.Sub(sc.enq) >= b.s.timeout:
			sc.err = fmt.Errorf("%w (%v, queued)", ErrTimeout, b.s.timeout)
			sc.done <- struct{}{}
		default:
			if len(live) == 0 || sc.enq.Before(oldest) {
				oldest = sc.enq
			}
			live = append(live, sc)
		}
	}
	if len(live) == 0 {
		return cmds
	}
	for _, sc := range live {
		sc.batch = len(live)
	}
	b.pipelines.Add(1)
	b.calls.Add(uint64(len(live)))
	if b.s.observe != nil {
		b.s.observe(len(live))
	}
	ctx, cancel := context.WithDeadline(context.Background(), oldest.Add(b.s.timeout))
	defer cancel()

	cmds = b.exec(ctx, pipe, live, cmds)
	retry := 0
	var lost error // a failure the guard will not hear of from the callers
	for i, sc := range live {
		if goredis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			sc.useEval(b.s)
			live[retry] = sc
			retry++
			continue
		}
		if err := b.finish(ctx, sc, cmds[i]); lost == nil {
			lost = err
		}
	}
	if retry > 0 {
		cmds = b.exec(ctx, pipe, live[:retry], cmds)
		for i, sc := range live[:retry] {
			if err := b.finish(ctx, sc, cmds[i]); lost == nil {
				lost = err
			}
		}
	}
	if lost != nil {
		if r, ok := b.s.guard.(failureReporter); ok {
			if done, err := r.Allow(); err == nil {
				done(lost)
			}
		}
	}
	clear(cmds)
	return cmds[:0]
}

func (b *batcher) exec(ctx context.Context, pipe goredis.Pipeliner, live []*script, cmds []*goredis.IntSliceCmd) []*goredis.IntSliceCmd {
	cmds = cmds[:0]
	for _, sc := range live {
		cmd := goredis.NewIntSliceCmd(ctx, sc.cmd...)
		cmds = append(cmds, cmd)
		_ = pipe.Process(ctx, cmd)
	}
	// Each command carries its own error; Exec's is the first of them.
	_, _ = pipe.Exec(ctx)
	return cmds
}

// finish tells sc its outcome. It returns the backend failure (not a
// reply error of the script) when sc's caller has already given up, so
// its own call will not report it.
func (b *batcher) finish(ctx context.Context, sc *script, cmd *goredis.IntSliceCmd) error {
	err := cmd.Err()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ErrTimeout, b.s.timeout)
	}
	var lost error
	if err != nil && sc.ctx.Err() != nil && !isReplyError(err) {
		lost = err
	}
	sc.finish(cmd, err)
	sc.done <- struct{}{}
	return lost
}

// isReplyError reports whether err is an error reply from Redis (the
// server answered), as opposed to a timeout or a broken connection.
func isReplyError(err error) bool {
	var re goredis.Error
	return errors.As(err, &re) && !errors.Is(err, ErrTimeout)
}
