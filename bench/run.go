package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/sluice-rl/sluice/bench/internal/h2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Run drives the servers in o.Addrs as o describes and returns the report.
// It returns an error only when o is invalid (the error names the flag) or
// a connection cannot be set up; servers that fail or time out show in the
// report's error counts. Run always stops: after o.Requests measured
// requests or o.Duration of measured time (plus o.Warmup), whichever comes
// first (a zero one does not count), or when ctx is
// done, in which case the report covers what ran and says it was
// interrupted. Requests in flight at the end are waited for, each at most
// o.Timeout.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	r, err := newRunner(&o)
	if err != nil {
		return nil, err
	}
	defer r.close()
	return r.run(ctx), nil
}

// seriesInterval is the width of one point of the over-time series.
func seriesInterval(o *Options) time.Duration {
	if o.Requests == 0 && o.Duration+o.Warmup >= 2*time.Minute {
		return time.Second
	}
	return 250 * time.Millisecond
}

type runner struct {
	o       *Options
	w       *workload
	seed    uint64
	prefix  string
	conns   []*grpc.ClientConn
	lean    []*h2.Client
	clients []decider // address varies fastest
	rr      atomic.Uint64
	tracker *tracker      // nil without a limit, and in the usage workload
	usage   *usageTracker // the usage workload's figures; nil in the admission one

	epoch        time.Time
	measureStart time.Duration // = Warmup
	measureEnd   time.Duration // Warmup+Duration; never when Duration is 0
	claimed      atomic.Int64  // measured requests started (Requests mode)

	shards []*shard

	// For the progress line: every answered request, warmup included.
	done     atomic.Int64
	errs     atomic.Int64
	inflight atomic.Int64

	lagMax atomic.Int64 // open loop: the scheduler's timer's largest lateness
}

// shard gathers the figures of some of the workers; its mutex is held only
// to record one request or to collect.
type shard struct {
	mu       sync.Mutex
	latency  Histogram // measured requests with a decision
	service  Histogram // the same, from the actual send (open loop)
	interval Histogram // latency since the last series point
	codes    map[string]int64
	errors   map[string]int64
	iv       counts // since the last series point
	lastRecv time.Duration
}

type counts struct{ ok, over, errs int64 }

func newRunner(o *Options) (*runner, error) {
	r := &runner{o: o, seed: o.Seed, prefix: o.ValuePrefix}
	if r.seed == 0 {
		r.seed = rand.Uint64() | 1
	}
	if r.prefix == "" {
		r.prefix = fmt.Sprintf("b%06x-", rand.Uint32()&0xffffff)
	}
	r.w = newWorkload(o, r.prefix)
	switch {
	case o.Workload == WorkloadUsage:
		r.usage = newUsageTracker(o.Values)
	case o.Limit != nil:
		r.tracker = newTracker(o.Descriptors, o.Values)
	}
	for range o.Conns {
		for _, addr := range o.Addrs {
			if o.Client == ClientLean {
				lc := h2.NewClient(addr, o.Timeout)
				r.lean = append(r.lean, lc)
				r.clients = append(r.clients, leanDecider{lc})
				continue
			}
			cc, err := grpc.NewClient("passthrough:///"+addr,
				grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				r.close()
				return nil, fmt.Errorf("connect %s: %w", addr, err)
			}
			r.conns = append(r.conns, cc)
			r.clients = append(r.clients, grpcDecider{rlsv3.NewRateLimitServiceClient(cc)})
		}
	}
	workers := o.Concurrency
	if o.Mode() == ModeOpen {
		workers = o.Workers
	}
	n := min(workers, 4*runtime.GOMAXPROCS(0))
	for range n {
		r.shards = append(r.shards, &shard{codes: map[string]int64{}, errors: map[string]int64{}})
	}
	return r, nil
}

func (r *runner) close() {
	for _, cc := range r.conns {
		cc.Close()
	}
	for _, lc := range r.lean {
		lc.Close()
	}
}

// connect starts every connection and waits, at most o.Timeout in all, for
// them to be ready, so that connection setup does not land in the figures.
// A server that is down is not an error here: its requests fail and count.
func (r *runner) connect(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, lc := range r.lean {
		wg.Go(func() { _ = lc.Connect(ctx) })
	}
	for _, cc := range r.conns {
		wg.Go(func() {
			cc.Connect()
			for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
				if s == connectivity.TransientFailure || !cc.WaitForStateChange(ctx, s) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func (r *runner) run(ctx context.Context) *Report {
	o := r.o
	r.connect(ctx)
	r.measureStart = o.Warmup
	r.measureEnd = o.Warmup + o.Duration
	if o.Duration <= 0 {
		r.measureEnd = math.MaxInt64
	}
	started := time.Now()
	r.epoch = started

	var series []Point
	seriesDone := make(chan struct{})
	stopTicks := make(chan struct{})
	go func() {
		defer close(seriesDone)
		series = r.tick(stopTicks)
	}()

	if o.Mode() == ModeOpen {
		r.openLoop(ctx)
	} else {
		r.closedLoop(ctx)
	}
	close(stopTicks)
	<-seriesDone
	return r.report(ctx, started, series)
}

// closedLoop runs Concurrency workers that each send a request as soon as
// their previous one is answered.
func (r *runner) closedLoop(ctx context.Context) {
	var wg sync.WaitGroup
	for id := range r.o.Concurrency {
		wg.Go(func() {
			wk := r.newWorker(id)
			for ctx.Err() == nil {
				now := time.Since(r.epoch)
				measured := now >= r.measureStart
				if measured {
					if now >= r.measureEnd {
						return
					}
					if r.o.Requests > 0 && r.claimed.Add(1) > r.o.Requests {
						return
					}
				}
				if wk.usage != nil {
					r.usageStep(ctx, wk, measured)
					continue
				}
				r.do(ctx, wk, r.w.next(wk.rnd, wk.idx, wk.req), time.Time{}, measured)
			}
		})
	}
	wg.Wait()
}

type arrival struct {
	at       time.Duration // intended send time, from the epoch
	start    time.Duration // when latency starts counting: at, or later if the scheduler's timer overslept
	measured bool
}

// openLoop schedules requests at Rate per second and hands them to Workers
// workers. A request's latency counts from its intended send time, so time
// spent waiting for a free worker, or for the scheduler that fell behind,
// is part of it: a server that stalls cannot hide its queue.
func (r *runner) openLoop(ctx context.Context) {
	o := r.o
	queue := make(chan arrival, o.Workers)
	var wg sync.WaitGroup
	for id := range o.Workers {
		wg.Go(func() {
			wk := r.newWorker(id)
			for a := range queue {
				r.do(ctx, wk, r.w.next(wk.rnd, wk.idx, wk.req), r.epoch.Add(a.start), a.measured)
			}
		})
	}
	r.schedule(ctx, queue)
	close(queue)
	wg.Wait()
}

// schedule emits intended send times until the measured phase is over. When
// it falls behind it emits the late arrivals at once, each with its own
// intended time.
//
// One lateness is not charged to the server: the scheduler's own timer
// waking late (Go's timers can be a millisecond late on an idle process).
// Arrivals that fell due while the timer overslept start when it woke.
// Once the queue is found full (every worker busy and the queue's slack
// used up), the lateness that follows is the server's doing and arrivals
// keep their intended times until the next timer wake.
func (r *runner) schedule(ctx context.Context, queue chan<- arrival) {
	o := r.o
	rnd := rand.New(rand.NewPCG(r.seed, 1<<40))
	var measured int64
	at := time.Duration(0)
	woke := time.Duration(-1) // when the timer last woke; -1 after a full queue
	for i := int64(0); ; i++ {
		if o.Arrival == ArrivalUniform {
			at = time.Duration(float64(i) / o.Rate * float64(time.Second))
		} else if i > 0 {
			at += time.Duration(rnd.ExpFloat64() / o.Rate * float64(time.Second))
		}
		a := arrival{at: at, measured: at >= r.measureStart}
		if a.measured {
			if at >= r.measureEnd || o.Requests > 0 && measured == o.Requests {
				return
			}
			measured++
		}
		if wait := at - time.Since(r.epoch); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			woke = time.Since(r.epoch)
			storeMax(&r.lagMax, int64(woke-at))
		}
		a.start = max(at, woke)
		select {
		case queue <- a:
			continue
		default:
		}
		woke = -1
		select {
		case queue <- a:
		case <-ctx.Done():
			return
		}
	}
}

type worker struct {
	rnd   *rand.Rand
	idx   []int
	req   *request
	usage *usageRequests // the usage workload's requests; nil in the admission one
	shard *shard
	v     verdict
}

func (r *runner) newWorker(id int) *worker {
	wk := &worker{
		rnd:   rand.New(rand.NewPCG(r.seed, uint64(id))),
		idx:   make([]int, r.o.Descriptors),
		req:   r.w.newRequest(),
		shard: r.shards[id%len(r.shards)],
	}
	if r.usage != nil {
		wk.usage = r.w.newUsageRequests()
	}
	return wk
}

// callResult is what do reports of one call, besides the verdict it
// leaves in the worker: its send and answer times from the epoch, its
// error, and whether it failed because the run was stopped.
type callResult struct {
	sent, recv time.Duration
	err        error
	stopped    bool
}

// do sends req and records it; the verdict is left in wk.v. intended is
// the open loop's intended send time, zero in the closed loop.
func (r *runner) do(ctx context.Context, wk *worker, req *rlsv3.RateLimitRequest, intended time.Time, measured bool) callResult {
	client := r.clients[r.rr.Add(1)%uint64(len(r.clients))]
	sent := time.Now()
	start, deadline := sent, sent.Add(r.o.Timeout)
	if !intended.IsZero() {
		start, deadline = intended, intended.Add(r.o.Timeout)
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	r.inflight.Add(1)
	v := &wk.v
	err := client.decide(cctx, req, v)
	r.inflight.Add(-1)
	recv := time.Now()
	cancel()
	res := callResult{sent: sent.Sub(r.epoch), recv: recv.Sub(r.epoch), err: err}
	if err != nil && stopped(ctx) {
		res.stopped = true
		return res // the run was stopped; this request is not the server's failure
	}
	r.done.Add(1)
	if err != nil {
		r.errs.Add(1)
	}

	code := ""
	if err == nil {
		code = codeName(v.code)
		if v.code == rlsv3.RateLimitResponse_UNKNOWN {
			r.errs.Add(1)
		}
	}
	if r.tracker != nil && err == nil && v.code != rlsv3.RateLimitResponse_UNKNOWN {
		ok := v.code == rlsv3.RateLimitResponse_OK
		st := v.statuses
		hasStatuses := len(st) == len(wk.idx)
		for pos, val := range wk.idx {
			under := !hasStatuses || st[pos] == rlsv3.RateLimitResponse_OVER_LIMIT
			r.tracker.record(pos, val, res.sent, res.recv, int64(r.o.Hits), ok, under)
		}
	}
	if !measured {
		return res
	}

	sh := wk.shard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.lastRecv = max(sh.lastRecv, recv.Sub(r.epoch))
	if err != nil {
		sh.errors[status.Code(err).String()]++
		sh.iv.errs++
		return res
	}
	sh.codes[code]++
	switch v.code {
	case rlsv3.RateLimitResponse_OK:
		sh.iv.ok++
	case rlsv3.RateLimitResponse_OVER_LIMIT:
		sh.iv.over++
	default:
		sh.iv.errs++
		return res // not a decision: no latency
	}
	lat := recv.Sub(start)
	sh.latency.Record(lat)
	sh.interval.Record(lat)
	sh.service.Record(recv.Sub(sent))
	return res
}

// tick writes the progress line once a second and collects a series point
// every seriesInterval of the measured phase (the points are aligned on its
// start), until stop is closed; then it collects the last, partial
// interval, folded into the one before when it is under half an interval.
func (r *runner) tick(stop <-chan struct{}) []Point {
	iv := seriesInterval(r.o)
	next := r.measureStart + iv
	points := time.NewTimer(next - time.Since(r.epoch))
	defer points.Stop()
	var progress <-chan time.Time
	if r.o.Progress != nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		progress = t.C
	}
	var series []Point
	var cur, last Histogram // this interval's latencies, and the last point's
	var lastFrom time.Duration
	prev := r.measureStart
	collect := func(final bool) {
		now := time.Since(r.epoch)
		cur.Reset()
		var c counts
		for _, sh := range r.shards {
			sh.mu.Lock()
			cur.Merge(&sh.interval)
			sh.interval.Reset()
			c.ok, c.over, c.errs = c.ok+sh.iv.ok, c.over+sh.iv.over, c.errs+sh.iv.errs
			sh.iv = counts{}
			sh.mu.Unlock()
		}
		if now <= r.measureStart {
			return
		}
		from := prev
		if final && len(series) > 0 && now-prev < iv/2 {
			// Too short to stand alone: widen the last point.
			p := &series[len(series)-1]
			c.ok, c.over, c.errs = c.ok+p.OK, c.over+p.OverLimit, c.errs+p.Errors
			cur.Merge(&last)
			series = series[:len(series)-1]
			from = lastFrom
		}
		p := Point{
			T: (now - r.measureStart).Seconds(), OK: c.ok, OverLimit: c.over, Errors: c.errs,
			P50MS: ms(cur.Percentile(50)), P99MS: ms(cur.Percentile(99)), MaxMS: ms(cur.Max()),
		}
		if width := (now - from).Seconds(); width > 0 {
			p.RPS = float64(c.ok+c.over) / width
		}
		series = append(series, p)
		cur, last = last, cur
		lastFrom, prev = from, now
	}
	var lastDone int64
	lastAt := time.Now()
	for {
		select {
		case <-points.C:
			collect(false)
			next += iv
			points.Reset(next - time.Since(r.epoch))
		case now := <-progress:
			done := r.done.Load()
			phase := "measure"
			if time.Since(r.epoch) < r.measureStart {
				phase = "warmup"
			}
			fmt.Fprintf(r.o.Progress, "bench: %5.1fs %-7s %9d answered %9.0f req/s %6d errors %5d in flight\n",
				time.Since(r.epoch).Seconds(), phase, done,
				float64(done-lastDone)/now.Sub(lastAt).Seconds(), r.errs.Load(), r.inflight.Load())
			lastDone, lastAt = done, now
		case <-stop:
			collect(true)
			return series
		}
	}
}

// stopped reports whether ctx is done or its deadline has passed: gRPC may
// fail a call at the deadline a moment before ctx itself says so.
func stopped(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// codeName is code.String() without the descriptor lookup for the codes a
// run sees.
func codeName(code rlsv3.RateLimitResponse_Code) string {
	switch code {
	case rlsv3.RateLimitResponse_OK:
		return "OK"
	case rlsv3.RateLimitResponse_OVER_LIMIT:
		return "OVER_LIMIT"
	}
	return code.String()
}
