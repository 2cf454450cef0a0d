package redis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/lua"
)

// ErrBadReply is wrapped by Apply when the script's reply has the wrong
// shape, e.g. a different script was loaded under its name.
var ErrBadReply = errors.New("unexpected reply from token bucket script")

// ErrTimeout is wrapped by Apply when Redis did not answer within the
// call timeout (the read timeout), all waits included.
var ErrTimeout = errors.New("no reply from redis within the timeout")

// ErrClosed is wrapped by Apply after Close.
var ErrClosed = errors.New("redis store is closed")

// Guard admits or refuses calls to Redis and is told how each ended: a
// *breaker.Breaker. Do returns an error without calling fn to refuse the
// call (an open breaker); fn's error is Do's. Apply passes the caller's
// context, so a caller that gives up is not counted against Redis, while a
// call that runs out of the store's own timeout is.
type Guard interface {
	Do(ctx context.Context, fn func(ctx context.Context) error) error
}

// failureReporter is what a guard offers (a *breaker.Breaker does) to be
// told of a failure outside Do. A pipeline that fails after its callers
// gave up is reported this way: their calls end with their own context
// errors, which the guard rightly does not count, so without it a hung
// Redis behind callers with short deadlines (Envoy's default is 20 ms,
// below the read timeout) would never open the breaker, and every call
// would wait out its caller's deadline.
type failureReporter interface {
	Allow() (done func(error), err error)
}

// Option changes how New builds a Store.
type Option func(*Store)

// WithGuard sends every Apply through g (a circuit breaker). Ping does not
// go through it, so health checks see Redis itself.
func WithGuard(g Guard) Option { return func(s *Store) { s.guard = g } }

// WithBatchObserver has fn told the number of script calls in every
// pipeline the store sends (batching on), for a batch-size histogram. fn
// runs on the store's own goroutines: keep it quick.
func WithBatchObserver(fn func(calls int)) Option { return func(s *Store) { s.observe = fn } }

// Store is a limiter.Store on Redis: one node, a Sentinel-managed master or
// a Cluster. It is safe for concurrent use.
type Store struct {
	client  goredis.UniversalClient
	mode    string
	url     string // redacted
	addr    string // host:port of each node or Sentinel, for health
	guard   Guard
	observe func(int)
	tracer  trace.Tracer // nil: no spans (trace.go)
	timeout time.Duration

	// The script and its SHA-1, boxed once so a call does not allocate
	// to pass them.
	evalsha, eval any
	sha, src      any

	b *batcher // nil when batching is off

	refunds      *refunder // in a cluster: records, refunds and their retries
	beforeRefund func()    // tests: runs before a call's refunds are sent

	// With batching off, a caller that gives up on a call in flight
	// starts a probe (one at a time) that tells the guard whether Redis
	// answers; see probeAbandoned.
	probeMu      sync.Mutex // held to start a probe and to stop probing
	probing      bool
	probeWG      sync.WaitGroup
	probeCtx     context.Context // done once Close stops probing
	probeStopped context.CancelFunc
}

var _ limiter.Store = (*Store)(nil)

// New returns a Store for cfg. It does no network I/O: connections are made
// on first use, so Sluice can start while Redis is down. It fails when cfg
// is invalid or its TLS files cannot be read. With batching on it starts
// the pipeline writers, which Close stops.
func New(cfg Config, opts ...Option) (*Store, error) {
	return newStore(cfg, lua.TokenBucket, opts...)
}

// newStore lets tests run a different script under the Store.
func newStore(cfg Config, script string, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	batching, _ := cfg.batching()
	if t, err := cfg.parseURL(); err == nil && t.mode == ModeCluster {
		// Shorts report their unsettled tokens (refunds across slots);
		// one node runs the script unchanged.
		script = lua.ForCluster(script)
	}
	sum := sha1.Sum([]byte(script))
	s := &Store{
		timeout: cfg.callTimeout(),
		evalsha: "evalsha",
		eval:    "eval",
		sha:     hex.EncodeToString(sum[:]),
		src:     script,
	}
	s.probeCtx, s.probeStopped = context.WithCancel(context.Background())
	// Every new connection loads the script, so EVALSHA finds it on a
	// node that was just restarted, promoted or added. A failure here
	// does not fail the connection: NOSCRIPT is handled on use.
	preload := func(ctx context.Context, cn *goredis.Conn) error {
		_ = cn.ScriptLoad(ctx, script).Err()
		return nil
	}
	client, t, err := cfg.client(preload)
	if err != nil {
		return nil, err
	}
	s.client, s.mode = client, t.mode
	s.url, s.addr = t.display(), t.addresses()
	for _, o := range opts {
		o(s)
	}
	if batching {
		s.b = newBatcher(s, cmp(cfg.MaxBatch, DefaultMaxBatch), cmp(cfg.Pipelines, DefaultPipelines))
	}
	if s.mode == ModeCluster {
		s.refunds = newRefunder(s)
	}
	return s, nil
}

// cmp is v, or def when v is 0.
func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Timeout is the longest an Apply waits for Redis: the read timeout.
func (s *Store) Timeout() time.Duration { return s.timeout }

// Mode is the deployment form of Redis: "single", "sentinel" or "cluster".
func (s *Store) Mode() string { return s.mode }

// Batching reports whether concurrent calls are written as pipelines.
func (s *Store) Batching() bool { return s.b != nil }

// URL is the Redis URL without its password, built from its parsed form.
func (s *Store) URL() string { return s.url }

// Addr is the host:port of every node or Sentinel the URL names, comma
// separated (a socket's path for unix://): no user name, no password.
func (s *Store) Addr() string { return s.addr }

// Ping checks that Redis answers, within ctx. In a cluster it asks every
// master.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if cc, ok := s.client.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			return c.Ping(ctx).Err()
		})
	} else {
		err = s.client.Ping(ctx).Err()
	}
	if err != nil {
		return fmt.Errorf("redis ping %s: %w", s.addr, err)
	}
	return nil
}

// Close stops the pipeline writers, failing calls still queued with
// ErrClosed, and closes the connections. Apply fails after Close.
func (s *Store) Close() error {
	if s.b != nil {
		s.b.close()
	}
	if s.refunds != nil {
		s.refunds.close()
	}
	s.probeMu.Lock()
	s.probeStopped()
	s.probeMu.Unlock()
	s.probeWG.Wait()
	return s.client.Close()
}

// probeAbandoned runs after a caller gave up on a call in flight (batching
// off). Its own context error is rightly not counted by the guard, so
// without a probe a Redis that hangs behind callers with deadlines shorter
// than the store's timeout (Envoy's default 20 ms) would never open the
// breaker. The probe PINGs Redis within the store's timeout and reports a
// failure to the guard; it reports nothing when Redis answers. One probe
// runs at a time; Close stops it.
func (s *Store) probeAbandoned() {
	r, ok := s.guard.(failureReporter)
	if !ok {
		return
	}
	s.probeMu.Lock()
	if s.probeCtx.Err() != nil || s.probing {
		s.probeMu.Unlock()
		return
	}
	s.probing = true
	s.probeWG.Add(1)
	s.probeMu.Unlock()
	go func() {
		defer s.probeWG.Done()
		defer func() {
			s.probeMu.Lock()
			s.probing = false
			s.probeMu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(s.probeCtx, s.timeout)
		defer cancel()
		err := s.client.Ping(ctx).Err()
		if err == nil || s.probeCtx.Err() != nil {
			return
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v; PING after a caller gave up)", ErrTimeout, s.timeout)
		}
		if done, aerr := r.Allow(); aerr == nil {
			done(err)
		}
	}()
}

// script is one script call: its command line, pooled, and its outcome.
// Keys are copied (string headers only) and numbers are passed as
// pointers into nums, which go-redis writes without boxing each value.
type script struct {
	cmd   []any
	keys  []string
	nums  []uint64
	nkeys int64
	idx   []int  // the caller's index of each key (cluster groups)
	rec   string // the record key of a group that may need a refund

	res     []limiter.BucketResult
	allowed bool
	err     error

	// A refunded group: the buckets after the refund, or pending when
	// the refund failed and is retried in the background.
	after             []limiter.BucketResult
	refunded, pending bool

	// Batching: the caller's context (a call whose caller has gone is
	// not sent), when it was queued, and the signal that it is done.
	ctx  context.Context
	enq  time.Time
	done chan struct{}
	// batch is the number of calls in the pipeline that carried it (1
	// unbatched), for the call's span; 0 until sent.
	batch int
}

// argvPerKey is the number of ARGV entries per key: op, num, den, cap,
// cost, maxdebt.
const argvPerKey = 6

// fill builds the command line for reqs[i] for every i in idx (all of reqs
// when idx is nil), writing the record rec when it is not empty.
func (sc *script) fill(s *Store, reqs []limiter.BucketRequest, idx []int, rec string) {
	n := len(reqs)
	if idx != nil {
		n = len(idx)
	}
	sc.keys = sc.keys[:0]
	sc.idx = sc.idx[:0]
	if cap(sc.nums) < argvPerKey*n {
		sc.nums = make([]uint64, argvPerKey*n)
	}
	sc.nums = sc.nums[:argvPerKey*n]
	if cap(sc.res) < n {
		sc.res = make([]limiter.BucketResult, n)
	}
	sc.res = sc.res[:n]
	for j := 0; j < n; j++ {
		i := j
		if idx != nil {
			i = idx[j]
		}
		sc.keys = append(sc.keys, reqs[i].Key)
		sc.idx = append(sc.idx, i)
	}
	sc.nkeys = int64(n)
	sc.rec = rec
	if rec != "" {
		sc.nkeys++
	}
	sc.cmd = append(sc.cmd[:0], s.evalsha, s.sha, &sc.nkeys)
	for j := range sc.keys {
		sc.cmd = append(sc.cmd, &sc.keys[j])
	}
	if rec != "" {
		sc.cmd = append(sc.cmd, &sc.rec)
	}
	for j, i := range sc.idx {
		r := &reqs[i]
		v := sc.nums[argvPerKey*j : argvPerKey*j+argvPerKey]
		v[0], v[1], v[2], v[3], v[4], v[5] = uint64(r.Op), r.Rate.Num, r.Rate.Den, r.Rate.Cap, r.Cost, r.Rate.MaxDebt
		for k := range v {
			sc.cmd = append(sc.cmd, &v[k])
		}
	}
	if rec != "" {
		sc.cmd = append(sc.cmd, modeTake, &s.refunds.ttlMS)
	}
	sc.err, sc.allowed, sc.refunded, sc.pending, sc.batch = nil, false, false, false, 0
}

// quotaAllShort reports whether the quota takes of a call across slots
// were all short: the groups, which write records, leave that rule to the
// caller, since a quota take of one group may fit while another group's
// are all short. Then the call is denied and the groups that paid are
// refunded.
func quotaAllShort(scripts []*script) bool {
	has := false
	for _, sc := range scripts {
		if sc.err != nil {
			continue
		}
		for j := range sc.idx {
			if limiter.Op(sc.nums[argvPerKey*j]) != limiter.OpQuotaTake {
				continue
			}
			if sc.res[j].OK {
				return false
			}
			has = true
		}
	}
	return has
}

// useEval switches the command line to EVAL with the script's source.
func (sc *script) useEval(s *Store) { sc.cmd[0], sc.cmd[1] = s.eval, s.src }

// finish records the reply of cmd (or err).
func (sc *script) finish(cmd *goredis.IntSliceCmd, err error) {
	if err == nil {
		err = cmd.Err()
	}
	if err != nil {
		sc.err = err
		return
	}
	sc.allowed, sc.err = parseReply(cmd.Val(), sc.res)
}

// call is one Apply, pooled. fn is c.run, bound once, so passing it to the
// guard does not allocate.
type call struct {
	fn      func(ctx context.Context) error
	store   *Store
	reqs    []limiter.BucketRequest
	res     []limiter.BucketResult
	allowed bool

	scripts []*script
	groups  int // scripts planned for this call
	slots   []uint16
	group   []int
	recs    bool // the scripts write records: refund them on a denial
	cmds    [][]any
	which   []*script
	// abandoned is set when the caller gave up while a script was queued
	// or in flight: the call is then not pooled again.
	abandoned bool
}

var callPool = sync.Pool{New: func() any {
	c := new(call)
	c.fn = c.run
	return c
}}

// maxPooledKeys keeps an unusually large call's buffers out of the pool.
const maxPooledKeys = 64

// Apply implements limiter.Store: one EVALSHA of the token bucket script
// for the request's buckets. With batching on, concurrent calls share
// pipelines (see batcher); off, each call is its own round trip. When Redis
// no longer has the script the call is sent again as EVAL, which reloads
// it. In a cluster the buckets are grouped by hash slot, one script call
// per group, and all or nothing holds across groups by refunds (see
// refund.go): when a group denies or fails, the groups that took are
// refunded before Apply returns.
//
// An error means Redis failed, did not answer within the call timeout
// (ErrTimeout) or ctx, replied with the wrong shape, or the guard refused
// the call; nothing is then known to have been paid (in a cluster, groups
// that took are refunded, within the call timeout or in the background).
// The call timeout bounds every wait (the queue, a free connection,
// dialing, the reply), so a hung Redis holds a call no longer than the
// read timeout (a refund after a denial across slots waits as long again). A call without requests is
// allowed and does no I/O.
func (s *Store) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	if s.tracer != nil && len(reqs) > 0 && trace.SpanFromContext(ctx).IsRecording() {
		return s.applyTraced(ctx, reqs, res)
	}
	return s.apply(ctx, reqs, res, nil)
}

// apply is Apply; st, when not nil, gets the call's figures for its span.
func (s *Store) apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult, st *callStats) (bool, error) {
	n := len(reqs)
	if n == 0 {
		return true, nil
	}
	if len(res) < n {
		return false, fmt.Errorf("redis apply: %d results for %d requests", len(res), n)
	}
	c := callPool.Get().(*call)
	c.store, c.reqs, c.res, c.allowed = s, reqs, res[:n], false
	var err error
	if s.guard == nil {
		err = c.run(ctx)
	} else {
		err = s.guard.Do(ctx, c.fn)
	}
	allowed := c.allowed
	if st != nil {
		st.groups = c.groups
		if !c.abandoned { // else a writer may still own the scripts
			for _, sc := range c.scripts[:c.groups] {
				st.batch = max(st.batch, sc.batch)
			}
		}
	}
	c.store, c.reqs, c.res, c.groups = nil, nil, nil, 0
	if !c.abandoned && n <= maxPooledKeys {
		for _, sc := range c.scripts {
			clear(sc.keys) // drop references to the caller's keys
			sc.ctx, sc.rec = nil, ""
		}
		callPool.Put(c)
	}
	if err != nil {
		return false, fmt.Errorf("redis token bucket script (%d keys): %w", n, err)
	}
	return allowed, nil
}

// script returns the call's i-th pooled script.
func (c *call) script(i int) *script {
	for len(c.scripts) <= i {
		c.scripts = append(c.scripts, &script{done: make(chan struct{}, 1)})
	}
	return c.scripts[i]
}

// run decides c.reqs into c.res and c.allowed.
func (c *call) run(ctx context.Context) error {
	scripts := c.plan()
	c.groups = scripts
	var err error
	if c.store.b != nil {
		err = c.runBatched(ctx, scripts)
	} else {
		err = c.runDirect(ctx, scripts)
	}
	if c.recs && !c.abandoned {
		return c.settle(ctx, scripts, err)
	}
	if err != nil {
		return err
	}
	return c.merge(scripts)
}

// runDirect sends the scripts one after the other, each its own round
// trip, and stops at the first failure (that script's err is set).
func (c *call) runDirect(ctx context.Context, scripts int) error {
	s := c.store
	cctx := ctx
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > s.timeout {
		// Only when the caller's own deadline is later: Envoy's is usually
		// shorter, and then the call allocates nothing for this.
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	for _, sc := range c.scripts[:scripts] {
		sc.batch = 1
		cmd := goredis.NewIntSliceCmd(cctx, sc.cmd...)
		err := s.client.Process(cctx, cmd)
		if err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			sc.useEval(s)
			cmd = goredis.NewIntSliceCmd(cctx, sc.cmd...)
			err = s.client.Process(cctx, cmd)
		}
		if err != nil {
			if ctx.Err() == nil && cctx.Err() != nil {
				// Our timeout, not the caller's: a backend failure, and
				// not a context error the edges would report as the
				// caller's.
				err = fmt.Errorf("%w (%v)", ErrTimeout, s.timeout)
			} else if ctx.Err() != nil && !isReplyError(err) {
				s.probeAbandoned()
			}
			sc.err = err
			return err
		}
		sc.finish(cmd, nil)
	}
	return nil
}

// runBatched queues the scripts for the pipeline writers and waits for
// them, or for ctx.
func (c *call) runBatched(ctx context.Context, scripts int) error {
	now := time.Now()
	queued := 0
	var err error
	for _, sc := range c.scripts[:scripts] {
		sc.ctx, sc.enq = ctx, now
		if err = c.store.b.enqueue(sc); err != nil {
			sc.err = err
			break
		}
		queued++
	}
	for _, sc := range c.scripts[:queued] {
		select {
		case <-sc.done:
		case <-ctx.Done():
			// The writer still owns the scripts: never reuse them.
			c.abandoned = true
			if c.recs {
				// Groups may take after the caller has gone: the
				// refunder waits for them and refunds them if any
				// other denied.
				c.store.refunds.enqueue(refundJob{scripts: append([]*script(nil), c.scripts[:queued]...),
					deadline: time.Now().Add(c.store.refunds.ttl)})
			}
			return ctx.Err()
		}
	}
	return err
}

// settle ends a call whose groups write records. When every group was
// allowed it is merged as any call. Otherwise the groups that may have
// paid are refunded, in one pipeline, and the call waits for the reply,
// bounded by the call timeout; a refund that fails (or that a caller who
// has gone cannot wait for) is retried in the background. Then a denial
// is merged, its refunded buckets reporting their state after the refund,
// and a failure is returned as the take's error.
func (c *call) settle(ctx context.Context, scripts int, err error) error {
	denied := err != nil || quotaAllShort(c.scripts[:scripts])
	for _, sc := range c.scripts[:scripts] {
		denied = denied || sc.err != nil || !sc.allowed
	}
	if !denied {
		return c.merge(scripts)
	}
	r := c.store.refunds
	c.cmds, c.which = c.cmds[:0], c.which[:0]
	for _, sc := range c.scripts[:scripts] {
		if sc.needsRefund() {
			c.cmds = append(c.cmds, sc.refundCmd(false))
			c.which = append(c.which, sc)
		}
	}
	if len(c.cmds) > 0 {
		r.calls.Add(1)
		if ctx.Err() != nil {
			// The caller has gone: do not hold it.
			retry := make([][]any, 0, len(c.which))
			for _, sc := range c.which {
				sc.pending = true
				retry = append(retry, sc.refundCmd(true))
			}
			r.enqueue(refundJob{cmds: retry, deadline: time.Now().Add(r.ttl)})
		} else {
			if c.store.beforeRefund != nil {
				c.store.beforeRefund()
			}
			rctx, cancel := context.WithTimeout(context.Background(), c.store.timeout)
			out := r.run(rctx, c.cmds)
			cancel()
			var retry [][]any
			for i, cmd := range out {
				sc := c.which[i]
				if cmd.Err() == nil {
					sc.after = resize(sc.after, len(sc.idx))
					if _, perr := parseReply(cmd.Val(), sc.after); perr == nil {
						sc.refunded = true
						continue
					}
				}
				sc.pending = true
				retry = append(retry, sc.refundCmd(true))
			}
			if retry != nil {
				r.enqueue(refundJob{cmds: retry, deadline: time.Now().Add(r.ttl)})
			}
		}
		clear(c.cmds)
		clear(c.which)
	}
	if err != nil {
		return err
	}
	if err := c.merge(scripts); err != nil {
		return err
	}
	c.allowed = false
	return nil
}

// resize returns res with n entries.
func resize(res []limiter.BucketResult, n int) []limiter.BucketResult {
	if cap(res) < n {
		return make([]limiter.BucketResult, n)
	}
	return res[:n]
}

// plan fills the call's scripts: one for all of reqs, or in a cluster one
// per hash slot when the keys span several. It returns how many.
func (c *call) plan() int {
	s := c.store
	c.recs = false
	if s.mode != ModeCluster || len(c.reqs) == 1 {
		c.script(0).fill(s, c.reqs, nil, "")
		return 1
	}
	c.slots = c.slots[:0]
	same := true
	for i := range c.reqs {
		c.slots = append(c.slots, keySlot(c.reqs[i].Key))
		same = same && c.slots[i] == c.slots[0]
	}
	if same {
		c.script(0).fill(s, c.reqs, nil, "")
		return 1
	}
	// Group by slot, in the order slots first appear.
	done := make([]bool, len(c.reqs))
	groups := 0
	for i := range c.reqs {
		if done[i] {
			continue
		}
		c.group = c.group[:0]
		for j := i; j < len(c.reqs); j++ {
			if !done[j] && c.slots[j] == c.slots[i] {
				done[j] = true
				c.group = append(c.group, j)
			}
		}
		// A group that may pay writes a record, so that it can be
		// refunded when another group denies.
		rec := ""
		for _, j := range c.group {
			if pays(c.reqs[j].Op) {
				if k, ok := s.refunds.recordKey(c.reqs[j].Key); ok && keySlot(k) == c.slots[j] {
					rec = k
				}
				break
			}
		}
		c.recs = c.recs || rec != ""
		c.script(groups).fill(s, c.reqs, c.group, rec)
		groups++
	}
	return groups
}

// pays reports whether op can pay tokens that a refund must give back:
// takes and shadow takes, and any op added after the usage ones, but never
// a usage charge (always charged), a peek, a check or a refund.
func pays(op limiter.Op) bool {
	return op == limiter.OpTake || op == limiter.OpShadowTake || op > limiter.OpShadowCheck
}

// merge copies the scripts' results into c.res, in the caller's order.
func (c *call) merge(scripts int) error {
	c.allowed = true
	for _, sc := range c.scripts[:scripts] {
		if sc.err != nil {
			return sc.err
		}
		c.allowed = c.allowed && sc.allowed
		for j, i := range sc.idx {
			c.res[i] = sc.res[j]
			if !sc.res[j].OK || !pays(c.reqs[i].Op) {
				continue
			}
			if sc.refunded {
				c.res[i].Remaining, c.res[i].ResetMicros = sc.after[j].Remaining, sc.after[j].ResetMicros
				c.res[i].Refunded = true
			} else if sc.pending {
				c.res[i].Pending = true
			}
		}
	}
	return nil
}

// parseReply checks and unpacks {allowed, ok_1, remaining_1, reset_us_1,
// ...}, followed by cut_1 ... cut_n when the debt floor cut a usage charge
// or some bucket is unsettled, then unsettled_1 ... unsettled_n when some
// bucket is (a Cluster store's script only).
func parseReply(v []int64, res []limiter.BucketResult) (bool, error) {
	n := len(res)
	if len(v) != 1+3*n && len(v) != 1+4*n && len(v) != 1+5*n {
		return false, fmt.Errorf("redis token bucket script: %w: %d integers for %d keys, want %d",
			ErrBadReply, len(v), n, 1+3*n)
	}
	if v[0] != 0 && v[0] != 1 {
		return false, fmt.Errorf("redis token bucket script: %w: allowed = %d", ErrBadReply, v[0])
	}
	for i := range res {
		ok, rem, reset := v[1+3*i], v[2+3*i], v[3+3*i]
		if (ok != 0 && ok != 1) || rem < 0 || reset < 0 {
			return false, fmt.Errorf("redis token bucket script: %w: key %d: ok=%d remaining=%d reset=%d",
				ErrBadReply, i, ok, rem, reset)
		}
		res[i] = limiter.BucketResult{OK: ok == 1, Remaining: uint64(rem), ResetMicros: reset}
		if len(v) >= 1+4*n {
			c := v[1+3*n+i]
			if c < 0 {
				return false, fmt.Errorf("redis token bucket script: %w: key %d: cut=%d", ErrBadReply, i, c)
			}
			res[i].Cut = uint64(c)
		}
		if len(v) == 1+5*n {
			u := v[1+4*n+i]
			if u < 0 {
				return false, fmt.Errorf("redis token bucket script: %w: key %d: unsettled=%d", ErrBadReply, i, u)
			}
			res[i].Unsettled = uint64(u)
		}
	}
	return v[0] == 1, nil
}
