package bench

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
// call needs and no more: no name resolution, balancing, retries, service
// config, compression or interceptors. It speaks the protocol fully enough
// for any server: the peer's SETTINGS (concurrent streams, frame size),
// connection flow control both ways, PING, RST_STREAM, GOAWAY, trailers-only
// answers, deadlines sent as grpc-timeout and enforced here with a
// RST_STREAM(CANCEL).

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

// h2Client is a rlsv3.RateLimitServiceClient on the lean transport. It
// dials on first use and again after its connection fails, at most once
// per h2RedialEvery; calls in between fail with UNAVAILABLE.
type h2Client struct {
	addr    string
	timeout time.Duration // dial timeout

	mu       sync.Mutex
	cur      *h2Conn
	retired  []*h2Conn // replaced while calls may be in flight; closed by Close
	lastDial time.Time
	lastErr  error
	closed   bool
}

var _ rlsv3.RateLimitServiceClient = (*h2Client)(nil)

func newH2Client(addr string, dialTimeout time.Duration) *h2Client {
	return &h2Client{addr: addr, timeout: dialTimeout}
}

// conn returns a usable connection, dialling one when there is none.
func (c *h2Client) conn(ctx context.Context) (*h2Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errH2Closed
	}
	if c.cur != nil && c.cur.usable() {
		return c.cur, nil
	}
	if !c.lastDial.IsZero() && time.Since(c.lastDial) < h2RedialEvery {
		// The last dial failed, or its connection did not last: do not
		// hammer the server with connections.
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
func (c *h2Client) Close() {
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
func (c *h2Client) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest, _ ...grpc.CallOption) (*rlsv3.RateLimitResponse, error) {
	bp := h2Bufs.Get().(*[]byte)
	msg, err := proto.MarshalOptions{}.MarshalAppend(append((*bp)[:0], 0, 0, 0, 0, 0), in)
	if err != nil {
		h2Bufs.Put(bp)
		return nil, status.Errorf(codes.Internal, "marshal request: %v", err)
	}
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-5))
	cn, err := c.conn(ctx)
	if err != nil {
		*bp = msg
		h2Bufs.Put(bp)
		return nil, err
	}
	body, err := cn.call(ctx, msg)
	*bp = msg
	h2Bufs.Put(bp)
	if err != nil {
		return nil, err
	}
	resp := &rlsv3.RateLimitResponse{}
	if err := proto.Unmarshal(body, resp); err != nil {
		return nil, status.Errorf(codes.Internal, "unmarshal response: %v", err)
	}
	return resp, nil
}

// h2Conn is one HTTP/2 connection. Callers write their frames under wmu;
// the one that leaves no other writer waiting flushes, so concurrent calls
// share a write. One reader goroutine, which ends with the connection,
// reads every frame and hands each stream its answer.
type h2Conn struct {
	nc       net.Conn
	rf       *http2.Framer // the reader's
	authorty string

	wmu      sync.Mutex
	bw       *bufio.Writer
	wf       *http2.Framer
	henc     *hpack.Encoder
	hbuf     bytes.Buffer
	nextID   uint32
	started  int64         // streams opened
	consumed int64         // bytes of DATA sent on the connection
	waitCh   chan struct{} // closed and replaced when a waiting caller may go on
	waiting  atomic.Int32  // callers waiting for a stream slot or window
	writers  atomic.Int32  // callers queued for wmu or inside it

	// Written by the reader, read by writers under wmu.
	ended      atomic.Int64  // streams closed
	sendWindow atomic.Int64  // connection send window granted in all (initial + updates)
	maxStreams atomic.Uint32 // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	maxFrame   atomic.Uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	peerWindow atomic.Int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE

	smu      sync.Mutex
	streams  map[uint32]*h2Stream
	err      error // why the connection takes no more calls
	ncClosed bool

	recvUnacked int64 // reader only
	done        chan struct{}
}

type h2Stream struct {
	deadline   time.Time // the caller's, if any
	body       []byte
	gotHeaders bool
	code       codes.Code
	msg        string
	haveStatus bool
	err        error
	done       chan struct{}
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
		nc: nc, authorty: addr,
		bw:      bufio.NewWriterSize(nc, 32<<10),
		streams: map[uint32]*h2Stream{},
		nextID:  1,
		waitCh:  make(chan struct{}),
		done:    make(chan struct{}),
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
	c.peerWindow.Store(65535)

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
		st.err = status.Errorf(codes.Unavailable, "connection lost: %v", err)
		st.done <- struct{}{}
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

// wake lets callers waiting for a stream slot or window look again.
func (c *h2Conn) wake() {
	if c.waiting.Load() == 0 {
		return
	}
	c.wmu.Lock()
	close(c.waitCh)
	c.waitCh = make(chan struct{})
	c.wmu.Unlock()
}

// call sends one request message (with its 5-byte gRPC prefix) and returns
// the answer's message, without its prefix.
func (c *h2Conn) call(ctx context.Context, msg []byte) ([]byte, error) {
	if int64(len(msg)) > c.peerWindow.Load() {
		return nil, status.Errorf(codes.ResourceExhausted, "request of %d bytes exceeds the server's stream window", len(msg))
	}
	st := &h2Stream{done: make(chan struct{}, 1)}
	st.deadline, _ = ctx.Deadline()
	c.writers.Add(1)
	c.wmu.Lock()
	// Wait for a stream slot and connection window for the message.
	for c.started-c.ended.Load() >= int64(c.maxStreams.Load()) || c.consumed+int64(len(msg)) > c.sendWindow.Load() {
		c.waiting.Add(1)
		if c.started-c.ended.Load() < int64(c.maxStreams.Load()) && c.consumed+int64(len(msg)) <= c.sendWindow.Load() {
			c.waiting.Add(-1)
			break
		}
		ch := c.waitCh
		c.flushLocked()
		c.writers.Add(-1)
		c.wmu.Unlock()
		select {
		case <-ch:
		case <-c.done:
		case <-ctx.Done():
			c.waiting.Add(-1)
			return nil, ctxStatus(ctx)
		}
		c.waiting.Add(-1)
		c.writers.Add(1)
		c.wmu.Lock()
		if !c.usable() {
			break // fails below
		}
	}
	id := c.nextID
	c.smu.Lock()
	err := c.err
	if err == nil {
		c.streams[id] = st
	}
	c.smu.Unlock()
	if err != nil {
		c.writers.Add(-1)
		c.wmu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "connection lost: %v", err)
	}
	c.nextID += 2
	c.started++
	c.consumed += int64(len(msg))
	err = c.writeRequest(ctx, id, msg)
	last := c.writers.Add(-1) == 0
	exhausted := c.nextID > math.MaxInt32-2
	c.wmu.Unlock()
	if err == nil && last {
		// The callers one read of answers woke are likely runnable now:
		// let them queue their frames first, so one write carries all.
		runtime.Gosched()
		c.writers.Add(1)
		c.wmu.Lock()
		if c.writers.Add(-1) == 0 && c.bw.Buffered() > 0 {
			err = c.bw.Flush()
		}
		c.wmu.Unlock()
	}
	if err != nil {
		c.fail(err)
	}
	if exhausted {
		// Stream ids ran out: the calls in flight finish, no more start.
		c.retire(errors.New("stream ids exhausted"))
	}

	select {
	case <-st.done:
	case <-ctx.Done():
		if c.forget(id) {
			c.cancelStream(id)
			c.ended.Add(1)
			c.wake()
			return nil, ctxStatus(ctx)
		}
		<-st.done // the reader has finished it meanwhile
	}
	if st.err != nil {
		return nil, st.err
	}
	if !st.haveStatus {
		return nil, status.Error(codes.Internal, "response without grpc-status")
	}
	if st.code != codes.OK {
		return nil, status.Error(st.code, st.msg)
	}
	return grpcMessage(st.body)
}

// flushLocked flushes when no other writer is waiting; wmu is held.
func (c *h2Conn) flushLocked() {
	if c.writers.Load() == 1 && c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			go c.fail(err)
		}
	}
}

func (c *h2Conn) writeRequest(ctx context.Context, id uint32, msg []byte) error {
	c.hbuf.Reset()
	enc := c.henc
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: rlsPath})
	_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: c.authorty})
	_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	_ = enc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
	_ = enc.WriteField(hpack.HeaderField{Name: "user-agent", Value: "sluice-bench"})
	if dl, ok := ctx.Deadline(); ok {
		_ = enc.WriteField(hpack.HeaderField{Name: "grpc-timeout", Value: grpcTimeout(time.Until(dl))})
	}
	if err := c.wf.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true,
	}); err != nil {
		return err
	}
	max := int(c.maxFrame.Load())
	for len(msg) > max {
		if err := c.wf.WriteData(id, false, msg[:max]); err != nil {
			return err
		}
		msg = msg[max:]
	}
	return c.wf.WriteData(id, true, msg)
}

// grpcTimeout encodes d as a grpc-timeout value: at most 8 digits and a
// unit.
func grpcTimeout(d time.Duration) string {
	if d <= 0 {
		d = 1
	}
	var buf [24]byte
	for _, u := range []struct {
		d    time.Duration
		unit byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}} {
		if v := (d + u.d - 1) / u.d; v < 1e8 {
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

// forget removes stream id; false when the reader has already ended it.
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

// end hands st its outcome.
func (c *h2Conn) end(id uint32, st *h2Stream) {
	if !c.forget(id) {
		return
	}
	c.ended.Add(1)
	st.done <- struct{}{}
	c.wake()
}

func (c *h2Conn) settings(sf *http2.SettingsFrame) error {
	err := sf.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams.Store(s.Val)
		case http2.SettingMaxFrameSize:
			c.maxFrame.Store(s.Val)
		case http2.SettingInitialWindowSize:
			c.peerWindow.Store(int64(s.Val))
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
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
			return nil // cancelled by its caller
		}
		if !st.gotHeaders {
			st.gotHeaders = true
			if s := f.PseudoValue("status"); s != "200" {
				st.err = status.Errorf(codes.Unavailable, "HTTP status %q", s)
				c.end(f.StreamID, st)
				return nil
			}
		}
		for _, hf := range f.RegularFields() {
			switch hf.Name {
			case "grpc-status":
				n, err := strconv.Atoi(hf.Value)
				if err != nil {
					st.err = status.Errorf(codes.Internal, "grpc-status %q", hf.Value)
				}
				st.code, st.haveStatus = codes.Code(n), true
			case "grpc-message":
				st.msg = hf.Value
			}
		}
		if f.StreamEnded() {
			c.end(f.StreamID, st)
		}
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
		if len(st.body)+len(f.Data()) > h2MaxResponse {
			st.err = status.Errorf(codes.ResourceExhausted, "response larger than %d bytes", h2MaxResponse)
			c.reset(f.StreamID, st)
			return nil
		}
		st.body = append(st.body, f.Data()...)
		if f.StreamEnded() {
			st.err = status.Error(codes.Internal, "response ended without trailers")
			c.end(f.StreamID, st)
		}
	case *http2.RSTStreamFrame:
		if st := c.stream(f.StreamID); st != nil {
			code := rstCode(f.ErrCode)
			if code == codes.Canceled && !st.deadline.IsZero() && !time.Now().Before(st.deadline) {
				// The server gave up at the deadline it was sent.
				code = codes.DeadlineExceeded
			}
			st.err = status.Errorf(code, "stream reset by the server: %v", f.ErrCode)
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
			c.wake()
		}
	case *http2.GoAwayFrame:
		// Streams the server did not take fail now; no new ones start.
		// The others finish, then the server closes the connection.
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
				st.err = status.Error(codes.Unavailable, "server sent GOAWAY before taking the call")
				c.end(id, st)
			}
		}
		c.wake()
	}
	return nil
}

// reset ends st with its error and tells the server to stop sending.
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
