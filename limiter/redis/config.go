package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Config is how Sluice reaches Redis.
type Config struct {
	// URL selects the deployment:
	//
	//	redis://[user:password@]host:port[/db]    one node (rediss:// for TLS)
	//	unix:///path/to/socket                     one node on a socket
	//	redis+sentinel://[user:password@]s1:26379[,s2:26379...]/master[/db]
	//	redis+cluster://[user:password@]n1:7000[,n2:7001...]
	//
	// redis-sentinel:// and redis-cluster:// are accepted as spellings of
	// the last two, and rediss+sentinel:// and rediss+cluster:// use TLS.
	// The user and password are those of the data nodes; a Sentinel's own
	// are the query parameters sentinel_username and sentinel_password.
	URL string `yaml:"url"`
	// Username and Password, when set, replace those in URL (ACL auth).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// PoolSize is the most connections kept open (per node in a cluster);
	// 0 means 10 per CPU.
	PoolSize int `yaml:"pool_size"`
	// Timeouts for dialing, and for reading and writing one command. The
	// read timeout also bounds a whole Apply, every wait included. A
	// request's own context deadline applies too when it is shorter.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// TLS applies to rediss URLs.
	TLS TLSConfig `yaml:"tls"`
	// Batching is "on" (the default when empty) to write concurrent calls
	// to Redis as pipelines, or "off" for one round trip per call.
	Batching string `yaml:"batching"`
	// MaxBatch bounds the calls in one pipeline; 0 means 128.
	MaxBatch int `yaml:"max_batch"`
	// Pipelines is the most pipelines in flight at once (each holds one
	// connection while it waits); 0 means 2.
	Pipelines int `yaml:"pipelines"`
}

// Defaults of the batching settings.
const (
	DefaultMaxBatch  = 128
	DefaultPipelines = 2
)

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
		Batching:     "on",
		MaxBatch:     DefaultMaxBatch,
		Pipelines:    DefaultPipelines,
	}
}

// ConfigError is an invalid Config field.
type ConfigError struct {
	Field string // as spelled in config.yaml, e.g. "tls.cert_file"
	Err   error
}

func (e *ConfigError) Error() string { return "redis." + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// FieldProblem is the field, relative to the redis section, and the
// problem, for placing the error in config.yaml's one error format.
func (e *ConfigError) FieldProblem() (field, problem string) { return e.Field, e.Err.Error() }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Deployment modes, as Mode reports them.
const (
	ModeSingle   = "single"
	ModeSentinel = "sentinel"
	ModeCluster  = "cluster"
)

// target is a parsed URL.
type target struct {
	mode   string
	tls    bool
	single *goredis.Options // ModeSingle

	addrs                    []string // seed nodes or sentinels
	master                   string   // ModeSentinel
	db                       int
	user, password           string
	sentinelUser, sentinelPw string
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
	if c.TLS.set() && !strings.HasPrefix(strings.ToLower(c.URL), "rediss") {
		return fieldErr("tls", "set, but url %s does not use TLS; use rediss://", RedactURL(c.URL))
	}
	if _, err := c.batching(); err != nil {
		return err
	}
	if c.MaxBatch < 0 {
		return fieldErr("max_batch", "must not be negative, got %d", c.MaxBatch)
	}
	if c.Pipelines < 0 {
		return fieldErr("pipelines", "must not be negative, got %d", c.Pipelines)
	}
	return nil
}

func (c Config) batching() (bool, error) {
	switch strings.ToLower(c.Batching) {
	case "", "on", "true":
		return true, nil
	case "off", "false":
		return false, nil
	}
	return false, fieldErr("batching", "%q is not on or off", c.Batching)
}

const urlForms = "redis://host:port, rediss://host:port, unix:///path, redis+sentinel://host:port[,host:port]/master or redis+cluster://host:port[,host:port]"

// parseURL checks the URL and says which deployment it names.
func (c Config) parseURL() (*target, error) {
	if c.URL == "" {
		return nil, fieldErr("url", "required (%s)", urlForms)
	}
	scheme, after, ok := strings.Cut(c.URL, "://")
	if !ok || scheme == "" {
		return nil, fieldErr("url", "%s has no scheme; want %s", RedactURL(c.URL), urlForms)
	}
	s := strings.ToLower(scheme)
	switch s {
	case "redis", "rediss", "unix":
		return c.parseSingle()
	case "redis+sentinel", "redis-sentinel", "rediss+sentinel", "rediss-sentinel":
		return c.parseMulti(ModeSentinel, strings.HasPrefix(s, "rediss"), after)
	case "redis+cluster", "redis-cluster", "rediss+cluster", "rediss-cluster":
		return c.parseMulti(ModeCluster, strings.HasPrefix(s, "rediss"), after)
	}
	return nil, fieldErr("url", "unknown scheme %q; want %s", scheme, urlForms)
}

func (c Config) parseSingle() (*target, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error quotes the URL; say only what is wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fieldErr("url", "cannot parse %s: %v", RedactURL(c.URL), err)
	}
	if u.Scheme != "unix" && u.Host == "" {
		return nil, fieldErr("url", "%s has no host", RedactURL(c.URL))
	}
	opt, err := goredis.ParseURL(c.URL)
	if err != nil {
		return nil, fieldErr("url", "%s: %v", RedactURL(c.URL), strings.TrimPrefix(err.Error(), "redis: "))
	}
	return &target{mode: ModeSingle, single: opt, tls: opt.TLSConfig != nil}, nil
}

// parseMulti parses the part after "://" of a Sentinel or Cluster URL:
// [user[:password]@]host:port[,host:port...][/master][/db][?query]. It is
// parsed by hand because net/url takes one host only.
func (c Config) parseMulti(mode string, useTLS bool, rest string) (*target, error) {
	t := &target{mode: mode, tls: useTLS}
	bad := func(format string, args ...any) error {
		return fieldErr("url", "%s: %s", RedactURL(c.URL), fmt.Sprintf(format, args...))
	}
	rest, query, _ := strings.Cut(rest, "?")
	hosts, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(hosts, '@'); i >= 0 {
		ui := hosts[:i]
		hosts = hosts[i+1:]
		user, pw, _ := strings.Cut(ui, ":")
		var err error
		if t.user, err = url.PathUnescape(user); err != nil {
			return nil, bad("bad user name")
		}
		if t.password, err = url.PathUnescape(pw); err != nil {
			return nil, bad("bad password")
		}
	}
	if hosts == "" {
		return nil, fieldErr("url", "%s has no host", RedactURL(c.URL))
	}
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, bad("%q is not host:port", h)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, bad("bad port in %q", h)
		}
		t.addrs = append(t.addrs, h)
	}
	segs := []string{}
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			segs = append(segs, p)
		}
	}
	switch mode {
	case ModeSentinel:
		if len(segs) == 0 {
			return nil, bad("no master name; want redis+sentinel://host:port/master")
		}
		name, err := url.PathUnescape(segs[0])
		if err != nil {
			return nil, bad("bad master name")
		}
		t.master = name
		segs = segs[1:]
		if len(segs) > 1 {
			return nil, bad("want /master[/db] after the hosts")
		}
		if len(segs) == 1 {
			db, err := strconv.Atoi(segs[0])
			if err != nil || db < 0 {
				return nil, bad("invalid database number %q", segs[0])
			}
			t.db = db
		}
	case ModeCluster:
		if len(segs) > 0 {
			return nil, bad("a cluster URL has no path (Redis Cluster has one database)")
		}
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, bad("bad query")
	}
	for k := range q {
		switch k {
		case "sentinel_username", "sentinel_password":
			if mode != ModeSentinel {
				return nil, bad("%s applies to sentinel URLs only", k)
			}
		default:
			return nil, bad("unknown parameter %q", k)
		}
	}
	t.sentinelUser, t.sentinelPw = q.Get("sentinel_username"), q.Get("sentinel_password")
	return t, nil
}

// client builds the go-redis client for cfg, reading the TLS files. Retries
// are off (a take whose reply was lost may have been paid: never send it
// twice); each call waits for a free connection no longer than for a reply.
// onConnect runs on every new connection (it preloads the script).
func (c Config) client(onConnect func(ctx context.Context, cn *goredis.Conn) error) (goredis.UniversalClient, *target, error) {
	t, err := c.parseURL()
	if err != nil {
		return nil, nil, err
	}
	var tc *tls.Config
	if t.tls {
		if t.single != nil && t.single.TLSConfig != nil {
			tc = t.single.TLSConfig
		} else {
			tc = &tls.Config{}
			if t.mode == ModeCluster || t.mode == ModeSentinel {
				if h, _, err := net.SplitHostPort(t.addrs[0]); err == nil {
					tc.ServerName = h
				}
			}
		}
		if err := c.TLS.apply(tc); err != nil {
			return nil, nil, err
		}
	}
	user, pw := t.user, t.password
	if c.Username != "" {
		user = c.Username
	}
	if c.Password != "" {
		pw = c.Password
	}
	maint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch t.mode {
	case ModeSentinel:
		o := &goredis.FailoverOptions{
			MasterName: t.master, SentinelAddrs: t.addrs,
			SentinelUsername: t.sentinelUser, SentinelPassword: t.sentinelPw,
			Username: user, Password: pw, DB: t.db,
			PoolSize: c.PoolSize, DialTimeout: c.DialTimeout, ReadTimeout: c.ReadTimeout, WriteTimeout: c.WriteTimeout,
			MaxRetries: -1, DialerRetries: 1, PoolTimeout: c.callTimeout(), ContextTimeoutEnabled: true,
			DisableIdentity: true, TLSConfig: tc, OnConnect: onConnect, Protocol: protocol,
		}
		return goredis.NewFailoverClient(o), t, nil
	case ModeCluster:
		o := &goredis.ClusterOptions{
			Addrs: t.addrs, Username: user, Password: pw,
			PoolSize: c.PoolSize, DialTimeout: c.DialTimeout, ReadTimeout: c.ReadTimeout, WriteTimeout: c.WriteTimeout,
			// A MOVED or ASK reply means the script did not run: following
			// it is safe. Nothing else is retried.
			MaxRedirects: 3, MaxRetries: -1, DialerRetries: 1, PoolTimeout: c.callTimeout(), ContextTimeoutEnabled: true,
			DisableIdentity: true, TLSConfig: tc, OnConnect: onConnect, MaintNotificationsConfig: maint,
			Protocol: protocol,
		}
		return goredis.NewClusterClient(o), t, nil
	}
	opt := t.single
	opt.TLSConfig = tc
	if user != "" {
		opt.Username = user
	}
	if pw != "" {
		opt.Password = pw
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
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	// go-redis would wait ReadTimeout + 1s for a free connection: a hung
	// server would queue calls behind the pool.
	opt.PoolTimeout = c.callTimeout()
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = maint
	opt.OnConnect = onConnect
	opt.Protocol = protocol
	return goredis.NewClient(opt), t, nil
}

// protocol is RESP2: Sluice needs no push notifications, and go-redis
// looks for them before every RESP3 reply.
const protocol = 2

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

// RedactURL returns u with its passwords (in the user part, and in
// password or sentinel_password query parameters) replaced by xxxxx, for
// logs and health output. A URL that cannot be parsed has everything
// before its last '@' hidden.
func RedactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if ok && strings.ContainsAny(scheme, "+-") {
		// Sentinel and cluster URLs hold several hosts, which net/url
		// cannot parse: redact by hand.
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		auth, tail := rest[:end], rest[end:]
		if i := strings.LastIndexByte(auth, '@'); i >= 0 {
			if user, _, has := strings.Cut(auth[:i], ":"); has {
				auth = user + ":xxxxx" + auth[i:]
			}
		}
		out := scheme + "://" + auth + tail
		if p, q, has := strings.Cut(out, "?"); has {
			vals, err := url.ParseQuery(q)
			if err != nil {
				return p + "?xxxxx"
			}
			for _, k := range []string{"password", "sentinel_password"} {
				if vals.Has(k) {
					vals.Set(k, "xxxxx")
				}
			}
			out = p + "?" + vals.Encode()
		}
		return out
	}
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
