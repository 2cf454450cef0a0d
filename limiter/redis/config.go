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
	"regexp"
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
	scheme string // lower case, as written
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
	t, err := c.parseURL()
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
		return fieldErr("tls", "set, but url %s does not use TLS; use rediss://", t.display())
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

// CheckFiles is Validate, then reads the TLS files as New would: it fails
// for everything New fails for, without building a client. It is for
// checking a configuration before serving with it.
func (c Config) CheckFiles() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if !c.TLS.set() {
		return nil
	}
	return c.TLS.apply(&tls.Config{})
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

// parseURL checks the URL and says which deployment it names. Its errors
// show the URL as redactUnparsed does: no user information, no query.
func (c Config) parseURL() (*target, error) {
	if c.URL == "" {
		return nil, fieldErr("url", "required (%s)", urlForms)
	}
	scheme, after, ok := strings.Cut(c.URL, "://")
	if !ok || scheme == "" {
		return nil, fieldErr("url", "%s has no scheme; want %s", redactUnparsed(c.URL), urlForms)
	}
	// A '/', '?' or '#' in the user information ends it early for every
	// parser, and the rest of the password lands in the host, path or
	// query, where it would be shown. An '@' past the host is that case
	// (or a raw '@' in a query value): refuse it, asking for escapes.
	if i := strings.IndexAny(after, "/?#"); i >= 0 && strings.Contains(after[i:], "@") {
		return nil, fieldErr("url", "%s: '@' after the host: percent-encode '/', '?', '#' and '@' in a user name, password or parameter (%%2F, %%3F, %%23, %%40)", redactUnparsed(c.URL))
	}
	s := strings.ToLower(scheme)
	var (
		t   *target
		err error
	)
	switch s {
	case "redis", "rediss", "unix":
		t, err = c.parseSingle()
	case "redis+sentinel", "redis-sentinel", "rediss+sentinel", "rediss-sentinel":
		t, err = c.parseMulti(ModeSentinel, strings.HasPrefix(s, "rediss"), after)
	case "redis+cluster", "redis-cluster", "rediss+cluster", "rediss-cluster":
		t, err = c.parseMulti(ModeCluster, strings.HasPrefix(s, "rediss"), after)
	default:
		if !validScheme(scheme) {
			return nil, fieldErr("url", "%s has no scheme; want %s", redactUnparsed(c.URL), urlForms)
		}
		return nil, fieldErr("url", "unknown scheme %q; want %s", scheme, urlForms)
	}
	if err != nil {
		return nil, err
	}
	t.scheme = s
	return t, nil
}

func (c Config) parseSingle() (*target, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error quotes the URL, and its reason may quote a piece of
		// the user information (invalid port ":pa" after host): say only
		// what kind of problem it is.
		return nil, fieldErr("url", "cannot parse %s: %s", redactUnparsed(c.URL), unquote(err))
	}
	if u.Scheme != "unix" && u.Host == "" {
		return nil, fieldErr("url", "%s has no host", redactUnparsed(c.URL))
	}
	if p := u.Port(); u.Scheme != "unix" && p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return nil, fieldErr("url", "%s: port %s is out of range 1-65535", redactUnparsed(c.URL), p)
		}
	}
	opt, err := goredis.ParseURL(c.URL)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "redis: ")
		return nil, fieldErr("url", "%s: %s", redactUnparsed(c.URL), scrub(msg, u))
	}
	return &target{mode: ModeSingle, single: opt, tls: opt.TLSConfig != nil}, nil
}

// unquote is err's reason without the quoted parts, which may be pieces of
// a password: a *url.Error's reason, else the message.
func unquote(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return quoted.ReplaceAllString(err.Error(), "(hidden)")
}

var quoted = regexp.MustCompile(`"[^"]*"`)

// scrub hides in msg every value of u that may be a secret: the password,
// as written and decoded, and the values of password query parameters.
func scrub(msg string, u *url.URL) string {
	var secrets []string
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw, url.PathEscape(pw), url.QueryEscape(pw))
		}
	}
	for k, vs := range u.Query() {
		if isSecretParam(k) {
			secrets = append(secrets, vs...)
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return msg
}

func isSecretParam(k string) bool {
	return strings.Contains(strings.ToLower(k), "password")
}

// parseMulti parses the part after "://" of a Sentinel or Cluster URL:
// [user[:password]@]host:port[,host:port...][/master][/db][?query]. It is
// parsed by hand because net/url takes one host only.
func (c Config) parseMulti(mode string, useTLS bool, rest string) (*target, error) {
	t := &target{mode: mode, tls: useTLS}
	bad := func(format string, args ...any) error {
		return fieldErr("url", "%s: %s", redactUnparsed(c.URL), fmt.Sprintf(format, args...))
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
		return nil, fieldErr("url", "%s has no host", redactUnparsed(c.URL))
	}
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, bad("%q is not host:port", h)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, bad("bad port in %q: want 1-65535", h)
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

// RedactURL is u for logs, errors and health output, built from the
// parsed URL: scheme, user name, hosts, database or master, with any
// password shown as xxxxx and no query but the Sentinel's user name. A URL
// that does not parse shows only its scheme and hosts, when they can be
// found, and never its user information or query.
func RedactURL(u string) string {
	if u == "" {
		return ""
	}
	t, err := Config{URL: u}.parseURL()
	if err != nil {
		return redactUnparsed(u)
	}
	return t.display()
}

// display is the URL t was parsed from, passwords hidden.
func (t *target) display() string {
	var b strings.Builder
	b.WriteString(t.scheme + "://")
	userinfo := func(user, pw string) {
		if user == "" && pw == "" {
			return
		}
		b.WriteString(url.PathEscape(user))
		if pw != "" {
			b.WriteString(":xxxxx")
		}
		b.WriteByte('@')
	}
	if o := t.single; o != nil {
		if o.Network == "unix" {
			b.WriteString(o.Addr)
			if o.DB != 0 {
				fmt.Fprintf(&b, "?db=%d", o.DB)
			}
			return b.String()
		}
		userinfo(o.Username, o.Password)
		fmt.Fprintf(&b, "%s/%d", o.Addr, o.DB)
		return b.String()
	}
	userinfo(t.user, t.password)
	b.WriteString(strings.Join(t.addrs, ","))
	if t.mode == ModeSentinel {
		b.WriteString("/" + url.PathEscape(t.master))
		if t.db != 0 {
			fmt.Fprintf(&b, "/%d", t.db)
		}
		q := url.Values{}
		if t.sentinelUser != "" {
			q.Set("sentinel_username", t.sentinelUser)
		}
		if t.sentinelPw != "" {
			q.Set("sentinel_password", "xxxxx")
		}
		if len(q) > 0 {
			b.WriteString("?" + q.Encode())
		}
	}
	return b.String()
}

// addresses is the host:port (or socket path) of every node or Sentinel
// t names, comma-separated: what health output shows.
func (t *target) addresses() string {
	if t.single != nil {
		return t.single.Addr
	}
	return strings.Join(t.addrs, ",")
}

// redactUnparsed shows a URL that did not parse: its scheme and hosts when
// they can be told apart from its user information, never the user
// information, path or query.
func redactUnparsed(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || !validScheme(scheme) {
		return "(a URL that does not parse)"
	}
	scheme = strings.ToLower(scheme)
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		if strings.ContainsAny(rest[:i], "?#") {
			// The '@' may be a query value's: what follows it may be a
			// piece of a secret.
			return scheme + "://"
		}
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	hosts := strings.Split(rest, ",")
	for i, h := range hosts {
		hosts[i] = plainHostPort(h)
	}
	return scheme + "://" + strings.Join(hosts, ",")
}

func validScheme(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// plainHostPort is h when it is a host name or address with an optional
// numeric port; else as much of that as can be shown.
func plainHostPort(h string) string {
	host, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		host, port = h[:i], h[i+1:]
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_[]:%", r)) {
			return "?"
		}
	}
	if port == "" {
		return host
	}
	if allDigits(port) {
		return host + ":" + port
	}
	return host + ":?"
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
