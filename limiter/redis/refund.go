package redis

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// All or nothing across Redis Cluster slots. A request whose buckets span
// several hash slots is one script call per slot group, and no script can
// see another group's keys. So every group takes, and when any group
// denied (or failed), the groups that took are refunded: the request pays
// nothing in the end, and nothing is ever admitted beyond a limit, since a
// take happens before the answer and a refund after it. Between the two, a
// concurrent request sees the taken tokens and may be denied for them (the
// window, measured in docs/redis.md); a crash between the two loses the
// tokens until the bucket refills: under-admission only.
//
// Each group that may pay writes a record (what each bucket paid, its debt
// after the call, the time) under a key of its own slot named by a call id;
// its refund names the same record, gives back what it says and deletes
// it. A refund without a record does nothing, so a refund can be retried,
// and sent for a group that may never have run. Only calls with several
// groups write records: the common single-group call pays nothing for it.
//
// The same take adds what each bucket paid to the bucket's unsettled
// marker, which the refund takes off again, and the Cluster store's script
// reports it on every bucket short after a call (BucketResult.Unsettled),
// so that a deny cache on any replica learns only the debt that holds
// after every refund (lua/tokenbucket.lua, docs/redis.md).

// Record modes, the ARGV after the buckets' six (see lua/tokenbucket.lua).
var (
	modeTake   any = "t"
	modeRefund any = "r"
)

// recordTTL is how long a take's record lives: the time a refund can still
// find it, background retries included. After it a refund does nothing,
// and the tokens come back by refill (under-admission only). Records of
// calls that were allowed are never refunded and cost memory until then:
// 225 to 245 bytes per group of each allowed multi-group call
// (TestMemoryPerRecord).
func recordTTL(timeout time.Duration) time.Duration {
	return min(max(10*timeout, time.Second), time.Minute)
}

// maxPendingRefunds bounds the refunds waiting for a background retry. A
// refund dropped because the queue is full loses its tokens until the
// bucket refills: under-admission, counted in RefundStats.Dropped.
const maxPendingRefunds = 1024

// RefundStats counts the refunds of calls across Cluster slots.
type RefundStats struct {
	Calls   uint64 // calls whose taken groups were refunded
	Retried uint64 // refunds handed to the background retries
	Failed  uint64 // refunds that never succeeded (tokens back by refill)
	Dropped uint64 // refunds dropped because the retry queue was full
}

// RefundStats returns the counts so far.
func (s *Store) RefundStats() RefundStats {
	r := s.refunds
	if r == nil {
		return RefundStats{}
	}
	return RefundStats{Calls: r.calls.Load(), Retried: r.retried.Load(), Failed: r.failed.Load(), Dropped: r.dropped.Load()}
}

// refunder retries refunds that failed on the request path, and settles
// calls whose caller gave up while their groups were in flight. One
// goroutine owns the queue; Close stops it.
type refunder struct {
	s      *Store
	id     string // random per Store: call ids never repeat across replicas
	seq    atomic.Uint64
	ttl    time.Duration
	ttlMS  uint64
	q      chan refundJob
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	calls, retried, failed, dropped atomic.Uint64
}

// refundJob is either refund command lines to send again (cmds), or the
// scripts of an abandoned call to wait for and settle (scripts).
type refundJob struct {
	cmds     [][]any
	scripts  []*script
	deadline time.Time
}

func newRefunder(s *Store) *refunder {
	var b [9]byte
	_, _ = rand.Read(b[:])
	r := &refunder{s: s, id: base64.RawURLEncoding.EncodeToString(b[:]), ttl: recordTTL(s.timeout),
		q: make(chan refundJob, maxPendingRefunds)}
	r.ttlMS = uint64(r.ttl / time.Millisecond)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.loop()
	}()
	return r
}

// close stops the goroutine; refunds still queued are given up (their
// tokens come back by refill).
func (r *refunder) close() {
	r.cancel()
	r.wg.Wait()
	for {
		select {
		case j := <-r.q:
			r.failed.Add(uint64(max(len(j.cmds), len(j.scripts))))
		default:
			return
		}
	}
}

// recordKey names a new record in the slot of key: its hash tag, then '~'
// (after the tag a bucket key holds nothing, a digit, '!' or '#', so no
// bucket is named so) and a call id. ok is false for a key without a hash
// tag, which limiter.AppendKey never makes.
func (r *refunder) recordKey(key string) (string, bool) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return "", false
	}
	var b strings.Builder
	b.Grow(i + j + 2 + 1 + len(r.id) + 12)
	b.WriteString(key[:i+j+2])
	b.WriteByte('~')
	b.WriteString(r.id)
	var n [20]byte
	b.Write(strconv.AppendUint(n[:0], r.seq.Add(1), 36))
	return b.String(), true
}

// enqueue hands j to the background, or drops it when the queue is full.
func (r *refunder) enqueue(j refundJob) {
	n := uint64(max(len(j.cmds), len(j.scripts)))
	select {
	case r.q <- j:
		r.retried.Add(n)
	default:
		r.dropped.Add(n)
	}
}

func (r *refunder) loop() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case j := <-r.q:
			if j.scripts != nil {
				j.cmds = r.settleAbandoned(j.scripts)
			}
			r.retry(j)
		}
	}
}

// settleAbandoned waits for the groups of a call whose caller gave up
// (the pipeline writers answer every script within the call timeout, or
// fail it on Close) and returns the refunds it needs: none when every
// group was allowed, as a single-group call keeps what it paid.
func (r *refunder) settleAbandoned(scripts []*script) [][]any {
	denied := false
	for _, sc := range scripts {
		select {
		case <-sc.done:
		case <-r.ctx.Done():
			return nil
		}
		denied = denied || sc.err != nil || !sc.allowed
	}
	denied = denied || quotaAllShort(scripts)
	if !denied {
		return nil
	}
	var cmds [][]any
	for _, sc := range scripts {
		if sc.needsRefund() {
			cmds = append(cmds, sc.refundCmd(true))
		}
	}
	if len(cmds) > 0 {
		r.calls.Add(1)
	}
	return cmds
}

// retry sends j's refunds until they succeed, its deadline passes (the
// records have expired) or the refunder stops.
func (r *refunder) retry(j refundJob) {
	wait := r.s.timeout
	for len(j.cmds) > 0 {
		j.cmds = r.send(r.ctx, j.cmds)
		if len(j.cmds) == 0 || r.ctx.Err() != nil || time.Now().Add(wait).After(j.deadline) {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
		}
		wait = min(2*wait, time.Second)
	}
	r.failed.Add(uint64(len(j.cmds)))
}

// send runs refund command lines in one pipeline (a cluster client sends
// each node's at once), within the call timeout, and returns those that
// failed.
func (r *refunder) send(ctx context.Context, cmds [][]any) [][]any {
	ctx, cancel := context.WithTimeout(ctx, r.s.timeout)
	defer cancel()
	out := r.run(ctx, cmds)
	failed := cmds[:0]
	for i, c := range out {
		if c.Err() != nil {
			failed = append(failed, cmds[i])
		}
	}
	return failed
}

// run sends cmds in one pipeline and returns their commands, NOSCRIPT
// replies sent again as EVAL.
func (r *refunder) run(ctx context.Context, cmds [][]any) []*goredis.IntSliceCmd {
	s := r.s
	out := make([]*goredis.IntSliceCmd, len(cmds))
	pipe := s.client.Pipeline()
	for i, c := range cmds {
		out[i] = goredis.NewIntSliceCmd(ctx, c...)
		_ = pipe.Process(ctx, out[i])
	}
	_, _ = pipe.Exec(ctx)
	again := false
	for i, c := range out {
		if goredis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			cmds[i][0], cmds[i][1] = s.eval, s.src
			out[i] = goredis.NewIntSliceCmd(ctx, cmds[i]...)
			_ = pipe.Process(ctx, out[i])
			again = true
		}
	}
	if again {
		_, _ = pipe.Exec(ctx)
	}
	return out
}

// needsRefund reports whether sc is a group with a record that may have
// paid: it answered allowed, or failed (it may have run). A group that
// answered denied paid nothing and wrote no record.
func (sc *script) needsRefund() bool {
	return sc.rec != "" && (sc.err != nil || sc.allowed)
}

// refundCmd is the command line of sc's refund: sc's own with the refund
// mode, copied (keys cloned) when it must outlive the call.
func (sc *script) refundCmd(detach bool) []any {
	cmd := make([]any, len(sc.cmd))
	copy(cmd, sc.cmd)
	cmd[len(cmd)-2] = modeRefund
	if !detach {
		return cmd
	}
	// Numbers and keys are passed as pointers into the pooled script:
	// copy their values.
	for i, v := range cmd {
		switch p := v.(type) {
		case *string:
			cmd[i] = strings.Clone(*p)
		case *uint64:
			cmd[i] = *p
		case *int64:
			cmd[i] = *p
		}
	}
	return cmd
}
