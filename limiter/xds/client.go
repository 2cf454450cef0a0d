package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-rl/sluice/limiter"
)

// Update is one accepted response: every domain of the snapshot.
type Update struct {
	// Version is the response's version_info.
	Version string
	// Domains is one per resource, in the response's order.
	Domains []limiter.DomainConfig
}

// Options are what a Client is given rather than configured with.
type Options struct {
	// Apply takes a converted response; its error NACKs it (with the
	// error's text as the detail) and the running limits stay. It is
	// called from the Client's one goroutine.
	Apply func(Update) error
	// Logger is scoped with component=xds; nil discards.
	Logger *slog.Logger
	// Rand draws the backoff jitter, in [0, 1); nil is math/rand/v2.
	Rand func() float64
}

// Status is the stream's state, for health.
type Status struct {
	// Connected is true while a stream to the control plane is open.
	Connected bool
	// Since is when Connected last changed (the Client's start at first).
	Since time.Time
	// LastErr is why the last stream ended or could not start.
	LastErr error
	// Version is the version_info of the last accepted response; ""
	// before one.
	Version string
	// Rejected is the error the last response was NACKed with; nil once
	// a later one is accepted.
	Rejected error
	// Attempts counts the streams started, failed or not.
	Attempts int
}

// Client keeps an ADS stream to the control plane, between Open and
// Close, on one goroutine.
type Client struct {
	cfg   Config
	creds credentials.TransportCredentials
	apply func(Update) error
	log   *slog.Logger
	rand  func() float64

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	st Status
}

// New checks cfg and builds a Client; it connects nothing until Open.
func New(cfg Config, o Options) (*Client, error) {
	if !cfg.Enabled() {
		return nil, errors.New("xds: no server")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Apply == nil {
		return nil, errors.New("xds: no Apply function")
	}
	creds := insecure.NewCredentials()
	if cfg.TLS.Enabled {
		tc, err := cfg.TLS.load()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := o.Rand
	if r == nil {
		r = rand.Float64
	}
	return &Client{cfg: cfg, creds: creds, apply: o.Apply, log: log.With("component", "xds"), rand: r,
		st: Status{Since: time.Now()}}, nil
}

// Status returns the stream's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Check is a health check: nil while connected, else an error saying
// since when the control plane is unreachable. The last limits keep
// serving meanwhile, so callers show it as a warning.
func (c *Client) Check(context.Context) error {
	st := c.Status()
	switch {
	case st.Connected:
		return nil
	case st.LastErr == nil:
		return fmt.Errorf("control plane %s: not connected yet", c.cfg.Server)
	default:
		return fmt.Errorf("control plane %s unreachable since %s: %w", c.cfg.Server,
			st.Since.UTC().Format(time.RFC3339), st.LastErr)
	}
}

// Open starts the goroutine that keeps the stream until Close (or until
// ctx ends). Open is called once.
func (c *Client) Open(ctx context.Context) error {
	if c.cancel != nil {
		return errors.New("xds: already open")
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(ctx)
	}()
	return nil
}

// Close ends the stream and waits for the goroutine, bounded by ctx. It
// does nothing before Open.
func (c *Client) Close(ctx context.Context) error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("xds: close: %w", ctx.Err())
	}
}

// run keeps a stream open, reconnecting after the backoff when it ends.
func (c *Client) run(ctx context.Context) {
	b := backoff{cfg: c.cfg.Backoff, rand: c.rand}
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		got, err := c.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if got {
			b.reset()
		}
		wait := b.next()
		c.down(err)
		c.log.Warn("control plane unreachable; the running limits stay", "server", c.cfg.Server,
			"err", err.Error(), "retry_in", wait.Round(time.Millisecond).String())
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}

// down records that no stream is open, since now unless already down.
func (c *Client) down(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Connected || c.st.LastErr == nil {
		c.st.Since = time.Now()
	}
	c.st.Connected, c.st.LastErr = false, err
}

// stream runs one ADS stream until it fails or ctx ends; got reports
// whether it delivered a response.
func (c *Client) stream(ctx context.Context) (got bool, err error) {
	c.mu.Lock()
	c.st.Attempts++
	c.mu.Unlock()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(c.creds)}
	if c.cfg.MaxRecvMsgBytes > 0 {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxRecvMsgBytes)))
	}
	conn, err := grpc.NewClient(c.cfg.Server, opts...)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", c.cfg.Server, err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	vc := &versionConn{ClientConnInterface: conn}
	ads := sotw.NewADSClient(sctx, c.cfg.node(), TypeURL)
	if err := ads.InitConnect(vc); err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	c.mu.Lock()
	c.st.Connected, c.st.Since, c.st.LastErr = true, time.Now(), nil
	c.mu.Unlock()
	c.log.Info("control plane connected", "server", c.cfg.Server, "node_id", c.cfg.NodeID)
	var (
		rejected string        // the version last NACKed
		repeat   time.Duration // the wait before NACKing it again
	)
	for {
		resp, err := ads.Fetch()
		if err != nil {
			return got, fmt.Errorf("receive: %w", err)
		}
		got = true
		version := vc.version()
		if err := c.handle(version, resp); err != nil {
			c.mu.Lock()
			c.st.Rejected = err
			c.mu.Unlock()
			// A snapshot cache answers a NACK with the same snapshot at
			// once (the NACK names the last good version, not this one),
			// so NACKing it again at once would spin. The next request
			// opens the next watch, so a repeat waits, doubling from
			// 100ms up to the backoff's initial interval.
			if version == rejected {
				if !c.sleep(ctx, repeat) {
					return got, ctx.Err()
				}
				repeat = min(2*repeat, max(c.cfg.Backoff.Initial, minRepeat))
			} else {
				rejected, repeat = version, minRepeat
				c.log.Error("config rejected (NACK); the running limits stay", "version", version, "err", err.Error())
			}
			if err := ads.Nack(err.Error()); err != nil {
				return got, fmt.Errorf("send NACK: %w", err)
			}
			continue
		}
		rejected = ""
		c.mu.Lock()
		c.st.Version, c.st.Rejected = version, nil
		c.mu.Unlock()
		c.log.Info("config accepted (ACK)", "version", version, "resources", len(resp.Resources))
		if err := ads.Ack(); err != nil {
			return got, fmt.Errorf("send ACK: %w", err)
		}
	}
}

// minRepeat is the first wait before NACKing a version again.
const minRepeat = 100 * time.Millisecond

// sleep waits d, or until ctx ends (false).
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handle converts every resource of a response and applies them as one.
func (c *Client) handle(version string, resp *sotw.Response) error {
	u := Update{Version: version, Domains: make([]limiter.DomainConfig, 0, len(resp.Resources))}
	var errs []error
	for i, res := range resp.Resources {
		var rc rlsconfv3.RateLimitConfig
		if err := res.UnmarshalTo(&rc); err != nil {
			errs = append(errs, fmt.Errorf("resource %d (%s): %w", i, res.GetTypeUrl(), err))
			continue
		}
		d, err := Convert(&rc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		u.Domains = append(u.Domains, d)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return c.apply(u)
}

// versionConn notes the version_info of each DiscoveryResponse its streams
// receive: the sotw client gives the resources only.
type versionConn struct {
	grpc.ClientConnInterface
	mu   sync.Mutex
	last string
}

func (v *versionConn) version() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last
}

func (v *versionConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := v.ClientConnInterface.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &versionStream{ClientStream: s, conn: v}, nil
}

type versionStream struct {
	grpc.ClientStream
	conn *versionConn
}

func (s *versionStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*discoveryv3.DiscoveryResponse); ok && err == nil {
		s.conn.mu.Lock()
		s.conn.last = r.GetVersionInfo()
		s.conn.mu.Unlock()
	}
	return err
}

// backoff is the wait before each reconnect (see BackoffConfig).
type backoff struct {
	cfg     BackoffConfig
	rand    func() float64
	attempt int
}

func (b *backoff) reset() { b.attempt = 0 }

func (b *backoff) next() time.Duration {
	d := b.cfg.Initial
	for i := 0; i < b.attempt && d < b.cfg.Max; i++ {
		d *= 2
	}
	d = min(d, b.cfg.Max)
	b.attempt++
	if b.cfg.Jitter && b.cfg.RandomFactor > 0 {
		// Spread over [d(1-f), d(1+f)), so replicas that lost the
		// control plane together do not come back together.
		f := b.cfg.RandomFactor
		d = time.Duration(float64(d) * (1 - f + 2*f*b.rand()))
	}
	return min(max(d, time.Millisecond), b.cfg.Max)
}
