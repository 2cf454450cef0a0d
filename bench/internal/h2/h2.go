// Package h2 is the load harness's lean client: ShouldRateLimit over
// cleartext HTTP/2, written straight on the wire. It is hand-made protocol
// code kept because it costs the load generator about half the CPU per
// call of gRPC-Go's client (docs/performance.md has the alternated runs);
// `sluice bench -client grpc` switches back to gRPC-Go, and its tests run
// it against a gRPC-Go server.
package h2

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The lean client: one method, cleartext HTTP/2, written straight on the
// wire. A gRPC-Go client spends about as much CPU per call as the server it
// measures; on a machine shared by the load generator, the server and its
// backend that cost lands in the figures. This client does what a unary
// call needs and no more: no name resolution, balancing, service config,
// compression or interceptors. It speaks the protocol fully enough for any
// server: the peer's SETTINGS (concurrent streams, frame size, window,
// header table), flow control per connection and per stream both ways,
// PING, RST_STREAM, GOAWAY, trailers-only answers, gRPC's mapping of HTTP
// statuses, deadlines sent as grpc-timeout and enforced here with a
// RST_STREAM(CANCEL). A call the server did not take (refused, above a
// GOAWAY's last stream, or never sent) is tried once more, as gRPC's
// transparent retry does.

const (
	rlsPath = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

	// h2MaxResponse bounds an answer's size; a larger one fails its call.
	h2MaxResponse = 4 << 20
	// h2StreamWindow is the receive window advertised per stream: more
	// than any answer may be, so streams never need window updates.
	h2StreamWindow = 2 * h2MaxResponse
	// h2ConnWindow is the connection's receive window; the credit is
	// given back once half of it is used.
	h2ConnWindow = 16 << 20
	// h2RedialEvery spaces the dials of a client whose server is down.
	h2RedialEvery = 100 * time.Millisecond
)

var errH2Closed = status.Error(codes.Canceled, "client closed")

// Client is a rlsv3.RateLimitServiceClient on the lean transport. It
// dials on first use and again after its connection fails, at most once
// per h2RedialEvery; calls in between fail with UNAVAILABLE.
type Client struct {
	addr    string
	timeout time.Duration // dial timeout

	mu       sync.Mutex
	cur      *h2Conn
	retired  []*h2Conn // replaced while calls may be in flight; closed by Close
	lastDial time.Time
	lastErr  error
	closed   bool
}

var _ rlsv3.RateLimitServiceClient = (*Client)(nil)

// NewClient returns a client of the server at addr (host:port); it dials
// on first use, each dial bounded by dialTimeout.
func NewClient(addr string, dialTimeout time.Duration) *Client {
	return &Client{addr: addr, timeout: dialTimeout}
}

// Connect dials the connection now, unless one is usable, so that setup
// does not land in the first call; a failure is the first call's too.
func (c *Client) Connect(ctx context.Context) error {
	_, err := c.conn(ctx)
	return err
}

// conn returns a usable connection, dialling one when there is none.
func (c *Client) conn(ctx context.Context) (*h2Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errH2Closed
	}
	if c.cur != nil && c.cur.usable() {
		return c.cur, nil
	}
	if !c.lastDial.IsZero() && time.Since(c.lastDial) < h2RedialEvery && (c.lastErr != nil || c.cur != nil && c.cur.failed()) {
		// The last dial failed, or its connection died at once: do not
		// hammer the server with connections. (One that was retired, by
		// a GOAWAY or its last stream id, is replaced at once.)
		if c.lastErr != nil {
			return nil, status.Errorf(codes.Unavailable, "connect %s: %v", c.addr, c.lastErr)
		}
		return nil, status.Errorf(codes.Unavailable, "connection to %s lost within %v of dialling", c.addr, h2RedialEvery)
	}
	c.lastDial = time.Now()
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cn, err := dialH2(dctx, c.addr)
	c.lastErr = err
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect %s: %v", c.addr, err)
	}
	if c.cur != nil {
		// Keep the replaced connection until it ends by itself (its
		// calls in flight may finish), or until Close.
		c.retired = slices.DeleteFunc(c.retired, (*h2Conn).gone)
		c.retired = append(c.retired, c.cur)
	}
	c.cur = cn
	return cn, nil
}

// Close ends the connection; calls in flight fail.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cur != nil {
		c.cur.close()
	}
	for _, cn := range c.retired {
		cn.close()
	}
	c.retired = nil
}

var h2Bufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// ShouldRateLimit sends in and waits for the answer, or for ctx.
func (c *Client) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest, _ ...grpc.CallOption) (*rlsv3.RateLimitResponse, error) {
	resp := &rlsv3.RateLimitResponse{}
	err := c.RoundTrip(ctx, in, func(body []byte) error {
		if err := proto.Unmarshal(body, resp); err != nil {
			return status.Errorf(codes.Internal, "unmarshal response: %v", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// RoundTrip sends in and hands the answer's message to read.
func (c *Client) RoundTrip(ctx context.Context, in *rlsv3.RateLimitRequest, read func([]byte) error) error {
	bp := h2Bufs.Get().(*[]byte)
	defer h2Bufs.Put(bp)
	msg, err := proto.MarshalOptions{}.MarshalAppend(append((*bp)[:0], 0, 0, 0, 0, 0), in)
	*bp = msg[:0]
	if err != nil {
		return status.Errorf(codes.Internal, "marshal request: %v", err)
	}
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-5))
	for attempt := 0; ; attempt++ {
		cn, err := c.conn(ctx)
		if err != nil {
			return err
		}
		body, untaken, err := cn.call(ctx, msg)
		if err != nil {
			if untaken && attempt == 0 && ctx.Err() == nil {
				continue // the server never saw it: safe to send again
			}
			return err
		}
		return read(body)
	}
}

// h2Conn is one HTTP/2 connection. Callers write their frames under wmu;
// the last writer out flushes, so concurrent calls share a write. One
// reader goroutine, which ends with the connection, reads every frame and
// hands each stream its outcome.
type h2Conn struct {
	nc        net.Conn
	rf        *http2.Framer // the reader's
	authority string

	wmu      sync.Mutex
	bw       *bufio.Writer
	wf       *http2.Framer
	henc     *hpack.Encoder
	hbuf     bytes.Buffer
	nextID   uint32
	started  int64         // streams opened
	consumed int64         // bytes of DATA sent on the connection
	waitCh   chan struct{} // closed and replaced when a waiting caller may go on
	waiting  atomic.Int32  // callers waiting for a stream slot or send window
	writers  atomic.Int32  // callers queued for wmu or holding it

	// Written by the reader, read by the writers.
	ended      atomic.Int64  // streams closed
	sendWindow atomic.Int64  // connection send credit granted in all (initial + updates)
	maxStreams atomic.Uint32 // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	maxFrame   atomic.Uint32 // the peer's SETTINGS_MAX_FRAME_SIZE

	smu        sync.Mutex
	streams    map[uint32]*h2Stream
	peerWindow int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE; under smu
	err        error // why the connection takes no more calls
	ncClosed   bool

	recvUnacked int64 // reader only
	done        chan struct{}
}

// h2Stream is one call. Whoever removes it from the connection's map (the
// reader when the answer is complete, the connection's failure, or the
// caller giving up) owns its outcome: only that one sends on done.
type h2Stream struct {
	sendWindow atomic.Int64 // send credit granted to the stream (initial, updates, settings changes)
	deadline   time.Time    // the caller's, if any

	// Written by the reader; read by the caller only after the reader sent
	// a nil outcome.
	body       []byte
	gotHeaders bool
	code       codes.Code
	msg        string
	haveStatus bool
	bad        error // the reader's verdict against the answer
	untaken    bool  // the server did not take the call

	done chan h2Outcome
}

type h2Outcome struct {
	err     error
	untaken bool // the server did not take the call: it may be sent again
}

func dialH2(ctx context.Context, addr string) (*h2Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &h2Conn{
		nc: nc, authority: addr,
		bw:         bufio.NewWriterSize(nc, 32<<10),
		streams:    map[uint32]*h2Stream{},
		peerWindow: 65535,
		nextID:     1,
		waitCh:     make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.wf = http2.NewFramer(c.bw, nil)
	c.rf = http2.NewFramer(nil, bufio.NewReaderSize(nc, 32<<10))
	c.rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rf.MaxHeaderListSize = 64 << 10
	c.rf.SetMaxReadFrameSize(1 << 20)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.sendWindow.Store(65535)
	c.maxStreams.Store(math.MaxUint32)
	c.maxFrame.Store(16384)

	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	_, err = io.WriteString(c.bw, http2.ClientPreface)
	if err == nil {
		err = c.wf.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
		)
	}
	if err == nil {
		err = c.wf.WriteWindowUpdate(0, h2ConnWindow-65535)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	// The server's SETTINGS come first; read them before any call so its
	// limits are known.
	var f http2.Frame
	if err == nil {
		f, err = c.rf.ReadFrame()
	}
	if err == nil {
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			err = fmt.Errorf("server did not start with SETTINGS (got %v)", f.Header().Type)
		} else {
			err = c.settings(sf)
		}
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	go c.read()
	return c, nil
}

// gone reports whether the connection's reader has stopped.
func (c *h2Conn) gone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// failed reports whether the connection has failed (its socket is
// closed), as opposed to retired: from the moment of the failure, not
// once its reader has stopped.
func (c *h2Conn) failed() bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.ncClosed
}

func (c *h2Conn) usable() bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.err == nil
}

func (c *h2Conn) close() {
	c.fail(errors.New("connection closed"))
	<-c.done
}

// fail ends the connection: every open stream and every later call fails.
// It must not be called with wmu held.
func (c *h2Conn) fail(err error) {
	c.smu.Lock()
	if c.err == nil {
		c.err = err
	}
	if !c.ncClosed {
		c.ncClosed = true
		c.nc.Close()
	}
	streams := c.streams
	c.streams = map[uint32]*h2Stream{}
	c.smu.Unlock()
	for _, st := range streams {
		c.ended.Add(1)
		st.done <- h2Outcome{err: status.Errorf(codes.Unavailable, "connection lost: %v", err)}
	}
	c.wake()
}

// retire stops new calls on the connection; those in flight go on.
func (c *h2Conn) retire(err error) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// wake lets callers waiting for a stream slot or window look again. It
// must not be called with wmu held.
func (c *h2Conn) wake() {
	if c.waiting.Load() == 0 {
		return
	}
	c.wmu.Lock()
	close(c.waitCh)
	c.waitCh = make(chan struct{})
	c.wmu.Unlock()
}

// await waits, with wmu held on entry and on return, until ready holds,
// the connection ends, something changed (a wake) or ctx ends; it returns
// ctx's error in the last case. ready is checked under wmu after the
// caller counts itself as waiting, so no wake is lost.
func (c *h2Conn) await(ctx context.Context, ready func() bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	if ready() {
		return nil
	}
	ch := c.waitCh
	if err := c.leave(); err != nil {
		c.fail(err)
	}
	select {
	case <-ch:
	case <-c.done:
	case <-ctx.Done():
	}
	c.writers.Add(1)
	c.wmu.Lock()
	return ctx.Err()
}

// leave ends a writer's turn: wmu is held on entry and released. The last
// writer out flushes what the others left in the buffer, after yielding
// once so that callers woken by the same read of answers can add theirs
// and one write carries all.
func (c *h2Conn) leave() error {
	if c.writers.Add(-1) != 0 || c.bw.Buffered() == 0 {
		c.wmu.Unlock()
		return nil
	}
	c.wmu.Unlock()
	runtime.Gosched()
	c.writers.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writers.Add(-1) == 0 && c.bw.Buffered() > 0 {
		return c.bw.Flush()
	}
	return nil
}

// call sends one request message (with its 5-byte gRPC prefix) and returns
// the answer's message, without its prefix. untaken says the server did
// not take the call, so it may be sent again.
func (c *h2Conn) call(ctx context.Context, msg []byte) (body []byte, untaken bool, err error) {
	st := &h2Stream{done: make(chan h2Outcome, 1)}
	st.deadline, _ = ctx.Deadline()
	c.writers.Add(1)
	c.wmu.Lock()
	// A stream slot.
	free := func() bool { return c.started-c.ended.Load() < int64(c.maxStreams.Load()) }
	for !free() {
		if err := c.await(ctx, func() bool { return free() || !c.usable() }); err != nil {
			c.leaveOrFail()
			return nil, false, ctxStatus(ctx)
		}
		if !c.usable() {
			break // refused below
		}
	}
	id, err := c.open(st)
	if err != nil {
		c.leaveOrFail()
		return nil, true, status.Errorf(codes.Unavailable, "connection lost: %v", err)
	}
	c.started++
	if err := c.writeHeaders(ctx, id); err != nil {
		c.leaveOrFail()
		c.fail(err)
		return c.outcome(<-st.done, st)
	}
	// DATA, as far as the connection's and the stream's windows allow.
	var sent int64
	for off := 0; off < len(msg); {
		if len(st.done) > 0 {
			break // answered (or failed) before the whole request went out
		}
		n := min(int64(len(msg)-off), int64(c.maxFrame.Load()), c.sendWindow.Load()-c.consumed, st.sendWindow.Load()-sent)
		if n <= 0 {
			err := c.await(ctx, func() bool {
				return len(st.done) > 0 || c.sendWindow.Load() > c.consumed && st.sendWindow.Load() > sent
			})
			if err != nil {
				c.leaveOrFail()
				c.abandon(id)
				return nil, false, ctxStatus(ctx)
			}
			continue
		}
		end := off+int(n) == len(msg)
		if err := c.wf.WriteData(id, end, msg[off:off+int(n)]); err != nil {
			c.leaveOrFail()
			c.fail(err)
			return c.outcome(<-st.done, st)
		}
		off += int(n)
		sent += n
		c.consumed += n
	}
	c.leaveOrFail()

	select {
	case o := <-st.done:
		return c.outcome(o, st)
	case <-ctx.Done():
		if c.abandon(id) {
			return nil, false, ctxStatus(ctx)
		}
		return c.outcome(<-st.done, st) // the reader finished it meanwhile
	}
}

// abandon ends stream id for a caller that gave up, telling the server;
// false when the stream already has its outcome. wmu must not be held.
func (c *h2Conn) abandon(id uint32) bool {
	if !c.forget(id) {
		return false
	}
	c.cancelStream(id)
	c.ended.Add(1)
	c.wake()
	return true
}

// leaveOrFail is leave, failing the connection when the flush fails.
func (c *h2Conn) leaveOrFail() {
	if err := c.leave(); err != nil {
		c.fail(err)
	}
}

// open registers st under a new stream id; wmu is held. The last id a
// connection may use retires it, in the same step, so no caller can take
// an id past it.
func (c *h2Conn) open(st *h2Stream) (uint32, error) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	id := c.nextID
	c.nextID += 2
	if c.nextID > math.MaxInt32 {
		c.err = errors.New("stream ids exhausted")
	}
	st.sendWindow.Store(c.peerWindow)
	c.streams[id] = st
	return id, nil
}

// outcome turns a stream's outcome into the call's result.
func (c *h2Conn) outcome(o h2Outcome, st *h2Stream) ([]byte, bool, error) {
	if o.err != nil {
		return nil, o.untaken, o.err
	}
	if !st.haveStatus {
		return nil, false, status.Error(codes.Internal, "response without grpc-status")
	}
	if st.code != codes.OK {
		return nil, false, status.Error(st.code, st.msg)
	}
	body, err := grpcMessage(st.body)
	return body, false, err
}

func (c *h2Conn) writeHeaders(ctx context.Context, id uint32) error {
	c.hbuf.Reset()
	enc := c.henc
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: rlsPath})
	_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: c.authority})
	_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	_ = enc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
	_ = enc.WriteField(hpack.HeaderField{Name: "user-agent", Value: "sluice-bench"})
	if dl, ok := ctx.Deadline(); ok {
		// Never indexed: each call's value differs and would push the
		// constant fields out of the dynamic table.
		_ = enc.WriteField(hpack.HeaderField{Name: "grpc-timeout", Value: grpcTimeout(time.Until(dl)), Sensitive: true})
	}
	return c.wf.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true,
	})
}

// grpcTimeout encodes d as a grpc-timeout value: at most 8 digits and a
// unit, rounded up.
func grpcTimeout(d time.Duration) string {
	if d <= 0 {
		d = 1
	}
	var buf [24]byte
	for _, u := range []struct {
		d    time.Duration
		unit byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}} {
		v := d / u.d
		if d%u.d != 0 {
			v++
		}
		if v < 1e8 {
			return string(append(strconv.AppendInt(buf[:0], int64(v), 10), u.unit))
		}
	}
	return "99999999S"
}

func ctxStatus(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, ctx.Err().Error())
	}
	return status.Error(codes.Canceled, ctx.Err().Error())
}

// grpcMessage checks a unary answer's framing and returns its message.
func grpcMessage(body []byte) ([]byte, error) {
	if len(body) < 5 {
		return nil, status.Errorf(codes.Internal, "response of %d bytes has no message", len(body))
	}
	if body[0] != 0 {
		return nil, status.Error(codes.Internal, "compressed response: compression was not asked for")
	}
	if n := binary.BigEndian.Uint32(body[1:5]); int(n) != len(body)-5 {
		return nil, status.Errorf(codes.Internal, "response message of %d bytes framed as %d", len(body)-5, n)
	}
	return body[5:], nil
}

// forget removes stream id; false when someone else already ended it.
func (c *h2Conn) forget(id uint32) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	if _, ok := c.streams[id]; !ok {
		return false
	}
	delete(c.streams, id)
	return true
}

func (c *h2Conn) stream(id uint32) *h2Stream {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.streams[id]
}

// end hands st the reader's verdict (nil: the answer is complete).
func (c *h2Conn) end(id uint32, st *h2Stream) {
	if !c.forget(id) {
		return
	}
	c.ended.Add(1)
	st.done <- h2Outcome{err: st.bad, untaken: st.untaken}
	c.wake()
}

func (c *h2Conn) settings(sf *http2.SettingsFrame) error {
	var table uint32
	haveTable := false
	err := sf.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams.Store(s.Val)
		case http2.SettingMaxFrameSize:
			c.maxFrame.Store(s.Val)
		case http2.SettingInitialWindowSize:
			// A change applies to the open streams too.
			c.smu.Lock()
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow.Add(delta)
			}
			c.smu.Unlock()
		case http2.SettingHeaderTableSize:
			table, haveTable = s.Val, true
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if haveTable {
		c.henc.SetMaxDynamicTableSizeLimit(table)
	}
	if err := c.wf.WriteSettingsAck(); err != nil {
		return err
	}
	return c.bw.Flush()
}

// read is the connection's reader; it ends when the connection does.
func (c *h2Conn) read() {
	defer close(c.done)
	for {
		f, err := c.rf.ReadFrame()
		if err != nil {
			c.fail(err)
			return
		}
		if err := c.frame(f); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *h2Conn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		st := c.stream(f.StreamID)
		if st == nil {
			return nil // ended already, or given up by its caller
		}
		c.headers(f, st)
	case *http2.DataFrame:
		c.recvUnacked += int64(f.Length)
		if c.recvUnacked >= h2ConnWindow/2 {
			n := c.recvUnacked
			c.recvUnacked = 0
			c.wmu.Lock()
			err := c.wf.WriteWindowUpdate(0, uint32(n))
			if err == nil {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
			if err != nil {
				return err
			}
		}
		st := c.stream(f.StreamID)
		if st == nil {
			return nil
		}
		switch {
		case !st.gotHeaders:
			st.bad = status.Error(codes.Internal, "response DATA before its HEADERS")
			c.reset(f.StreamID, st)
		case len(st.body)+len(f.Data()) > h2MaxResponse:
			st.bad = status.Errorf(codes.ResourceExhausted, "response larger than %d bytes", h2MaxResponse)
			c.reset(f.StreamID, st)
		default:
			st.body = append(st.body, f.Data()...)
			if f.StreamEnded() {
				st.bad = status.Error(codes.Internal, "response ended without trailers")
				c.end(f.StreamID, st)
			}
		}
	case *http2.RSTStreamFrame:
		if st := c.stream(f.StreamID); st != nil {
			code := rstCode(f.ErrCode)
			if code == codes.Canceled && !st.deadline.IsZero() && !time.Now().Before(st.deadline) {
				// The server gave up at the deadline it was sent.
				code = codes.DeadlineExceeded
			}
			st.bad = status.Errorf(code, "stream reset by the server: %v", f.ErrCode)
			st.untaken = f.ErrCode == http2.ErrCodeRefusedStream
			c.end(f.StreamID, st)
		}
	case *http2.SettingsFrame:
		if !f.IsAck() {
			if err := c.settings(f); err != nil {
				return err
			}
			c.wake()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			c.wmu.Lock()
			err := c.wf.WritePing(true, f.Data)
			if err == nil {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
			return err
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWindow.Add(int64(f.Increment))
		} else if st := c.stream(f.StreamID); st != nil {
			st.sendWindow.Add(int64(f.Increment))
		}
		c.wake()
	case *http2.GoAwayFrame:
		// Streams the server did not take fail now (and may be sent again
		// elsewhere); no new ones start. The others finish, then the
		// server closes the connection.
		c.retire(fmt.Errorf("server sent GOAWAY (%v)", f.ErrCode))
		c.smu.Lock()
		var gone []uint32
		for id := range c.streams {
			if id > f.LastStreamID {
				gone = append(gone, id)
			}
		}
		c.smu.Unlock()
		for _, id := range gone {
			if st := c.stream(id); st != nil {
				st.bad = status.Error(codes.Unavailable, "server sent GOAWAY before taking the call")
				st.untaken = true
				c.end(id, st)
			}
		}
		c.wake()
	}
	return nil
}

// headers takes a HEADERS block of st's answer: the response headers
// (informational ones skipped), or the trailers.
func (c *h2Conn) headers(f *http2.MetaHeadersFrame, st *h2Stream) {
	id := f.StreamID
	if !st.gotHeaders {
		s := f.PseudoValue("status")
		if len(s) == 3 && s[0] == '1' && !f.StreamEnded() {
			return // 1xx: the real answer follows
		}
		st.gotHeaders = true
		if s != "200" {
			st.bad = status.Errorf(httpStatusCode(s), "HTTP status %q", s)
			c.resetUnlessEnded(f, st)
			return
		}
		ct := ""
		for _, hf := range f.RegularFields() {
			if hf.Name == "content-type" {
				ct = hf.Value
			}
		}
		if ct != "application/grpc" && !strings.HasPrefix(ct, "application/grpc+") && !strings.HasPrefix(ct, "application/grpc;") {
			st.bad = status.Errorf(codes.Unknown, "response content-type %q is not gRPC", ct)
			c.resetUnlessEnded(f, st)
			return
		}
	}
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "grpc-status":
			n, err := strconv.ParseUint(hf.Value, 10, 32)
			if err != nil {
				st.bad = status.Errorf(codes.Internal, "grpc-status %q", hf.Value)
			}
			st.code, st.haveStatus = codes.Code(n), true
		case "grpc-message":
			st.msg = percentDecode(hf.Value)
		}
	}
	if f.StreamEnded() {
		c.end(id, st)
	}
}

// resetUnlessEnded ends st, resetting the stream if the server has not
// ended it, so the server stops counting it as open.
func (c *h2Conn) resetUnlessEnded(f *http2.MetaHeadersFrame, st *h2Stream) {
	if f.StreamEnded() {
		c.end(f.StreamID, st)
	} else {
		c.reset(f.StreamID, st)
	}
}

// httpStatusCode maps an HTTP status other than 200 to a gRPC code, as
// gRPC's HTTP-to-gRPC status mapping does.
func httpStatusCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

// percentDecode undoes grpc-message's percent-encoding; malformed escapes
// stay as they are.
func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// reset ends st with its verdict and tells the server to stop sending.
func (c *h2Conn) reset(id uint32, st *h2Stream) {
	c.cancelStream(id)
	c.end(id, st)
}

// cancelStream tells the server to stop work on stream id. A write error
// surfaces on the connection's next write or read.
func (c *h2Conn) cancelStream(id uint32) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wf.WriteRSTStream(id, http2.ErrCodeCancel) == nil {
		_ = c.bw.Flush()
	}
}

// rstCode maps an HTTP/2 error code to a gRPC code, as gRPC's HTTP/2
// mapping does.
func rstCode(e http2.ErrCode) codes.Code {
	switch e {
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	default:
		return codes.Internal
	}
}
