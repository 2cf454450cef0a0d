package redis

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/lua"
)

// Config is how Sluice reaches Redis.
type Config struct {
	// URL is redis://[user:password@]host:port[/db], rediss://... for TLS,
	// or unix:///path/to/socket. Sentinel and Cluster forms are not
	// supported yet.
	URL string `yaml:"url"`
	// Username and Password, when set, replace those in URL (ACL auth).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// PoolSize is the most connections kept open; 0 means 10 per CPU.
	PoolSize int `yaml:"pool_size"`
	// Timeouts for dialing, and for reading and writing one command. The
	// read timeout also bounds a whole Apply, every wait included. A
	// request's own context deadline applies too when it is shorter.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// TLS applies to rediss:// URLs.
	TLS TLSConfig `yaml:"tls"`
}

// TLSConfig configures TLS and mutual TLS to Redis.
type TLSConfig struct {
	// CertFile and KeyFile are the client certificate and key (PEM), for
	// mutual TLS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile is the PEM bundle that verifies the server; empty means the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name checked in the server certificate
	// (default: the URL's host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off server certificate checks. For tests.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (c TLSConfig) set() bool {
	return c.CertFile != "" || c.KeyFile != "" || c.CAFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// DefaultConfig is a local Redis with timeouts short enough for a rate
// limiter, whose caller (Envoy) waits for it on every request.
func DefaultConfig() Config {
	return Config{
		URL:          "redis://127.0.0.1:6379/0",
		DialTimeout:  time.Second,
		ReadTimeout:  250 * time.Millisecond,
		WriteTimeout: 250 * time.Millisecond,
	}
}

// ConfigError is an invalid Config field.
type ConfigError struct {
	Field string // as spelled in config.yaml, e.g. "tls.cert_file"
	Err   error
}

func (e *ConfigError) Error() string { return "redis " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks c without touching the network or the file system, and
// names the first bad field. Error messages never contain the password.
func (c Config) Validate() error {
	_, err := c.parseURL()
	if err != nil {
		return err
	}
	if c.PoolSize < 0 {
		return fieldErr("pool_size", "must not be negative, got %d", c.PoolSize)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"dial_timeout", c.DialTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}} {
		if d.v < 0 {
			return fieldErr(d.field, "must not be negative, got %v", d.v)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		if c.TLS.CertFile == "" {
			return fieldErr("tls.cert_file", "required when tls.key_file is set")
		}
		return fieldErr("tls.key_file", "required when tls.cert_file is set")
	}
	if c.TLS.set() && !strings.HasPrefix(c.URL, "rediss://") {
		return fieldErr("tls", "set, but url %s does not use TLS; use rediss://", RedactURL(c.URL))
	}
	return nil
}

// parseURL checks the URL and turns it into go-redis options.
func (c Config) parseURL() (*goredis.Options, error) {
	if c.URL == "" {
		return nil, fieldErr("url", "required (redis://host:port, rediss://host:port or unix:///path)")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error quotes the URL; say only what is wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fieldErr("url", "cannot parse %s: %v", RedactURL(c.URL), err)
	}
	switch s := strings.ToLower(u.Scheme); {
	case s == "redis" || s == "rediss" || s == "unix":
	case strings.Contains(s, "sentinel") || strings.Contains(s, "cluster"):
		return nil, fieldErr("url", "scheme %q: Redis Sentinel and Cluster are not supported yet; use redis:// or rediss:// for a single node", u.Scheme)
	case s == "":
		return nil, fieldErr("url", "%s has no scheme; want redis://host:port, rediss://host:port or unix:///path", RedactURL(c.URL))
	default:
		return nil, fieldErr("url", "unknown scheme %q; want redis://, rediss:// or unix://", u.Scheme)
	}
	if u.Scheme != "unix" && u.Host == "" {
		return nil, fieldErr("url", "%s has no host", RedactURL(c.URL))
	}
	opt, err := goredis.ParseURL(c.URL)
	if err != nil {
		return nil, fieldErr("url", "%s: %v", RedactURL(c.URL), strings.TrimPrefix(err.Error(), "redis: "))
	}
	return opt, nil
}

// options builds the client options, reading the TLS files.
func (c Config) options() (*goredis.Options, error) {
	opt, err := c.parseURL()
	if err != nil {
		return nil, err
	}
	if c.Username != "" {
		opt.Username = c.Username
	}
	if c.Password != "" {
		opt.Password = c.Password
	}
	if c.PoolSize > 0 {
		opt.PoolSize = c.PoolSize
	}
	if c.DialTimeout > 0 {
		opt.DialTimeout = c.DialTimeout
	}
	if c.ReadTimeout > 0 {
		opt.ReadTimeout = c.ReadTimeout
	}
	if c.WriteTimeout > 0 {
		opt.WriteTimeout = c.WriteTimeout
	}
	// A take whose reply was lost may have been paid: never send it twice.
	// The caller's breaker and failure mode deal with errors.
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	// A call waits for a free connection no longer than for a reply, so a
	// hung server cannot queue calls behind the pool (go-redis would wait
	// ReadTimeout + 1s).
	opt.PoolTimeout = c.callTimeout()
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opt.TLSConfig != nil {
		if err := c.TLS.apply(opt.TLSConfig); err != nil {
			return nil, err
		}
	}
	return opt, nil
}

// defaultReadTimeout is go-redis's read timeout when none is configured.
const defaultReadTimeout = 3 * time.Second

// callTimeout bounds one Apply, all waits included: the read timeout.
func (c Config) callTimeout() time.Duration {
	if c.ReadTimeout > 0 {
		return c.ReadTimeout
	}
	return defaultReadTimeout
}

func (c TLSConfig) apply(tc *tls.Config) error {
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	if c.ServerName != "" {
		tc.ServerName = c.ServerName
	}
	tc.InsecureSkipVerify = c.InsecureSkipVerify
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fieldErr("tls.ca_file", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fieldErr("tls.ca_file", "%s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return fieldErr("tls.cert_file", "load key pair: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// RedactURL returns u with its password (and any password query parameter)
// replaced by xxxxx, for logs and health output. A URL that cannot be
// parsed has everything before its last '@' hidden.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		if i := strings.LastIndexByte(u, '@'); i >= 0 {
			scheme := ""
			if j := strings.Index(u, "://"); j >= 0 && j < i {
				scheme = u[:j+3]
			}
			return scheme + "xxxxx" + u[i:]
		}
		return u
	}
	if p.User != nil {
		if _, has := p.User.Password(); has {
			p.User = url.UserPassword(p.User.Username(), "xxxxx")
		}
	}
	if q := p.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		p.RawQuery = q.Encode()
	}
	return p.String()
}

// ErrBadReply is wrapped by Apply when the script's reply has the wrong
// shape, e.g. a different script was loaded under its name.
var ErrBadReply = errors.New("unexpected reply from token bucket script")

// ErrTimeout is wrapped by Apply when Redis did not answer within the
// call timeout (the read timeout), all waits included.
var ErrTimeout = errors.New("no reply from redis within the timeout")

// Guard admits or refuses calls to Redis and is told how each ended: a
// *breaker.Breaker. Do returns an error without calling fn to refuse the
// call (an open breaker); fn's error is Do's. Apply passes the caller's
// context, so a caller that gives up is not counted against Redis, while a
// call that runs out of the store's own timeout is.
type Guard interface {
	Do(ctx context.Context, fn func(ctx context.Context) error) error
}

// Option changes how New builds a Store.
type Option func(*Store)

// WithGuard sends every Apply through g (a circuit breaker). Ping does not
// go through it, so health checks see Redis itself.
func WithGuard(g Guard) Option { return func(s *Store) { s.guard = g } }

// Store is a limiter.Store on one Redis node. It is safe for concurrent use.
type Store struct {
	client  *goredis.Client
	url     string // redacted
	guard   Guard
	timeout time.Duration

	// The script and its SHA-1, boxed once so a call does not allocate
	// to pass them.
	evalsha, eval any
	sha, src      any
}

var _ limiter.Store = (*Store)(nil)

// New returns a Store for cfg. It does no network I/O: connections are made
// on first use, so Sluice can start while Redis is down. It fails when cfg
// is invalid or its TLS files cannot be read.
func New(cfg Config, opts ...Option) (*Store, error) {
	return newStore(cfg, lua.TokenBucket, opts...)
}

// newStore lets tests run a different script under the Store.
func newStore(cfg Config, script string, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opt, err := cfg.options()
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum([]byte(script))
	s := &Store{
		client:  goredis.NewClient(opt),
		url:     RedactURL(cfg.URL),
		timeout: cfg.callTimeout(),
		evalsha: "evalsha",
		eval:    "eval",
		sha:     hex.EncodeToString(sum[:]),
		src:     script,
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Timeout is the longest an Apply waits for Redis: the read timeout.
func (s *Store) Timeout() time.Duration { return s.timeout }

// Mode is the deployment form of Redis: "single".
func (s *Store) Mode() string { return "single" }

// URL is the Redis URL without its password.
func (s *Store) URL() string { return s.url }

// Ping checks that Redis answers, within ctx.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping %s: %w", s.url, err)
	}
	return nil
}

// Close closes the connections. Apply fails after Close.
func (s *Store) Close() error { return s.client.Close() }

// callArgs is one call's command line, pooled. Keys and numbers are passed
// as pointers (*string into the caller's requests, *uint64 into nums), which
// go-redis writes without boxing each value. fn is a.run, bound once, so
// passing it to the guard does not allocate.
type callArgs struct {
	cmd   []any
	nums  []uint64
	nkeys int64

	fn      func(ctx context.Context) error
	store   *Store
	res     []limiter.BucketResult
	allowed bool
}

var argsPool = sync.Pool{New: func() any {
	a := new(callArgs)
	a.fn = a.run
	return a
}}

// maxPooledKeys keeps an unusually large call's buffers out of the pool.
const maxPooledKeys = 64

// argvPerKey is the number of ARGV entries per key: op, num, den, cap, cost.
const argvPerKey = 5

// Apply implements limiter.Store with one EVALSHA round trip. When Redis no
// longer has the script it sends EVAL instead (one more round trip), which
// reloads it. An error means Redis failed, did not answer within the call
// timeout (ErrTimeout) or ctx, replied with the wrong shape, or the guard
// refused the call; nothing is then known to have been paid. The call
// timeout bounds every wait (a free connection, dialing, the reply), so a
// hung Redis holds a call no longer than the read timeout. A call without
// requests is allowed and does no I/O.
func (s *Store) Apply(ctx context.Context, reqs []limiter.BucketRequest, res []limiter.BucketResult) (bool, error) {
	n := len(reqs)
	if n == 0 {
		return true, nil
	}
	if len(res) < n {
		return false, fmt.Errorf("redis apply: %d results for %d requests", len(res), n)
	}
	a := argsPool.Get().(*callArgs)
	defer func() {
		a.store, a.res = nil, nil
		if n <= maxPooledKeys {
			clear(a.cmd) // drop references to the caller's keys
			argsPool.Put(a)
		}
	}()
	if cap(a.nums) < argvPerKey*n {
		a.nums = make([]uint64, argvPerKey*n)
	}
	a.nums = a.nums[:argvPerKey*n]
	a.nkeys = int64(n)
	a.cmd = append(a.cmd[:0], s.evalsha, s.sha, &a.nkeys)
	for i := range reqs {
		a.cmd = append(a.cmd, &reqs[i].Key)
	}
	for i := range reqs {
		r := &reqs[i]
		v := a.nums[argvPerKey*i : argvPerKey*i+argvPerKey]
		v[0], v[1], v[2], v[3], v[4] = uint64(r.Op), r.Rate.Num, r.Rate.Den, r.Rate.Cap, r.Cost
		for j := range v {
			a.cmd = append(a.cmd, &v[j])
		}
	}

	a.store, a.res, a.allowed = s, res[:n], false
	var err error
	if s.guard == nil {
		err = a.run(ctx)
	} else {
		err = s.guard.Do(ctx, a.fn)
	}
	if err != nil {
		return false, fmt.Errorf("redis token bucket script (%d keys): %w", n, err)
	}
	return a.allowed, nil
}

// run sends the command line in a.cmd, within the store's call timeout, and
// parses the reply into a.res and a.allowed.
func (a *callArgs) run(ctx context.Context) error {
	s := a.store
	cctx := ctx
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > s.timeout {
		// Only when the caller's own deadline is later: Envoy's is usually
		// shorter, and then the call allocates nothing for this.
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	cmd := goredis.NewIntSliceCmd(cctx, a.cmd...)
	err := s.client.Process(cctx, cmd)
	if err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
		a.cmd[0], a.cmd[1] = s.eval, s.src
		cmd = goredis.NewIntSliceCmd(cctx, a.cmd...)
		err = s.client.Process(cctx, cmd)
	}
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			// Our timeout, not the caller's: a backend failure, and not
			// a context error the edges would report as the caller's.
			return fmt.Errorf("%w (%v)", ErrTimeout, s.timeout)
		}
		return err
	}
	a.allowed, err = parseReply(cmd.Val(), a.res)
	return err
}

// parseReply checks and unpacks {allowed, ok_1, remaining_1, reset_us_1, ...}.
func parseReply(v []int64, res []limiter.BucketResult) (bool, error) {
	if len(v) != 1+3*len(res) {
		return false, fmt.Errorf("redis token bucket script: %w: %d integers for %d keys, want %d",
			ErrBadReply, len(v), len(res), 1+3*len(res))
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
	}
	return v[0] == 1, nil
}
