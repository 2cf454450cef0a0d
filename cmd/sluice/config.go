package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/limiter/postgres"
	"github.com/sluice-rl/sluice/limiter/redis"
	"github.com/sluice-rl/sluice/limiter/yamlconf"
	"github.com/sluice-rl/sluice/server"
)

// Config is config.yaml: each part's own Config, composed. Start from
// defaultConfig, decode strictly, apply the environment, then validate.
type Config struct {
	server.Config `yaml:",inline"` // grpc, http, response_headers, health, shutdown

	Redis    RedisConfig    `yaml:"redis"`
	Memory   memory.Config  `yaml:"memory"` // the embedded store, and the failure mode's local one
	Postgres PostgresConfig `yaml:"postgres"`
	Limits   LimitsConfig   `yaml:"limits"`
	Request  RequestConfig  `yaml:"request"`
	Log      LogConfig      `yaml:"log"`
	Runtime  RuntimeConfig  `yaml:"runtime"`

	// AdminToken comes from SLUICE_ADMIN_TOKEN only, never from a file, and
	// is never printed. Set, it has at least server.MinAdminTokenLen
	// characters.
	AdminToken string `yaml:"-"`

	file  string            // config file path; "" for built-in defaults
	lines map[string]int    // field path -> line in file
	envs  map[string]string // field path -> environment variable that set it
}

// RedisConfig selects the store: with an empty URL the embedded memory
// store decides, otherwise Redis, guarded by a breaker and backed by a
// failure mode.
type RedisConfig struct {
	redis.Config `yaml:",inline"`
	// KeyPrefix starts every bucket key.
	KeyPrefix string `yaml:"key_prefix"`
	// FailureMode is how decisions are made while Redis fails or its
	// breaker is open: local, allow or error (see limiter.FailureMode).
	FailureMode string `yaml:"failure_mode"`
	// LocalFraction scales every limit in local mode (0 < f <= 1).
	LocalFraction float64 `yaml:"local_fraction"`
	// DenyCacheSize bounds the buckets the local deny cache remembers as
	// short (limiter.DenyCache); 0 turns the cache off.
	DenyCacheSize int `yaml:"deny_cache_size"`
	// Breaker guards the calls to Redis.
	Breaker breaker.Config `yaml:"breaker"`
}

// PostgresConfig is the overrides database; an empty DSN turns it off.
type PostgresConfig struct {
	postgres.Config `yaml:",inline"`
	// Breaker guards the calls to Postgres.
	Breaker breaker.Config `yaml:"breaker"`
	// SyncInterval is how often every replica reads the overrides again
	// even without a change notification, healing a missed one.
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// LimitsConfig says where limits come from: inline Domains, the file or
// directory at Path, or both; SLUICE_LIMITS replaces both.
type LimitsConfig struct {
	Path          string        `yaml:"path"`
	ShadowMode    bool          `yaml:"shadow_mode"`
	Watch         bool          `yaml:"watch"`
	WatchInterval time.Duration `yaml:"watch_interval"`
	Domains       yaml.Node     `yaml:"domains"`

	// envPath is SLUICE_LIMITS.
	envPath string
}

// RequestConfig bounds a request; see limiter.Bounds.
type RequestConfig struct {
	MaxDescriptors int    `yaml:"max_descriptors"`
	MaxEntries     int    `yaml:"max_entries"`
	MaxKeyBytes    int    `yaml:"max_key_bytes"`
	MaxValueBytes  int    `yaml:"max_value_bytes"`
	MaxHitsAddend  uint64 `yaml:"max_hits_addend"`
}

// LogConfig configures the logger.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// RuntimeConfig tunes the Go runtime of the serving process.
type RuntimeConfig struct {
	// GCPercent is the garbage collector's target (GOGC): the heap may grow
	// by this percentage of the live heap before a collection. Sluice's live
	// heap is small and every decision leaves short-lived garbage, so a
	// higher target than Go's 100 saves CPU for a few more MiB. The GOGC
	// environment variable, when set, wins; GOMEMLIMIT caps the heap.
	GCPercent int `yaml:"gc_percent"`
	// MinHeapMB lets the heap grow to this many MiB between collections
	// whatever gc_percent says: while the live heap is small the GC percent
	// is raised as far as that needs, and no further (0: off). Unless GOGC
	// is set.
	MinHeapMB int `yaml:"min_heap_mb"`
}

// DefaultGCPercent is runtime.gc_percent unless configured.
const DefaultGCPercent = 400

// DefaultMinHeapMB is runtime.min_heap_mb unless configured.
const DefaultMinHeapMB = 64

func defaultConfig() Config {
	rc := redis.DefaultConfig()
	rc.URL = "" // no Redis unless asked for: the embedded store
	b := limiter.DefaultBounds
	return Config{
		Config: server.DefaultConfig(),
		Redis: RedisConfig{Config: rc, KeyPrefix: "sl:", FailureMode: "local", LocalFraction: 1,
			DenyCacheSize: limiter.DefaultDenyCacheSize,
			Breaker:       breaker.DefaultConfig()},
		Memory: memory.DefaultConfig(),
		Postgres: PostgresConfig{Config: postgres.DefaultConfig(), Breaker: breaker.DefaultConfig(),
			SyncInterval: postgres.DefaultSyncInterval},
		Limits: LimitsConfig{Watch: true, WatchInterval: time.Second},
		Request: RequestConfig{
			MaxDescriptors: b.MaxDescriptors,
			MaxEntries:     b.MaxEntries,
			MaxKeyBytes:    b.MaxKeyLen,
			MaxValueBytes:  b.MaxValueLen,
			MaxHitsAddend:  b.MaxCost,
		},
		Log:     LogConfig{Level: "info", Format: "text"},
		Runtime: RuntimeConfig{GCPercent: DefaultGCPercent, MinHeapMB: DefaultMinHeapMB},
	}
}

// Bounds is the request bounds for the limiter.
func (c *Config) Bounds() limiter.Bounds {
	r := c.Request
	return limiter.Bounds{MaxDescriptors: r.MaxDescriptors, MaxEntries: r.MaxEntries,
		MaxKeyLen: r.MaxKeyBytes, MaxValueLen: r.MaxValueBytes, MaxCost: r.MaxHitsAddend}
}

// ConfigError is one problem with the configuration, with where it is;
// it prints as "file:line: path.to.field: problem", or with the
// environment variable that set the value in place of file and line.
type ConfigError = yamlconf.Error

// ConfigErrors is every problem found; each prints on its own line.
type ConfigErrors = yamlconf.Errors

// loadConfig builds the configuration: defaults, then the file at path
// (skipped when path is ""), then the environment, then validation. The
// error, if any, is a ConfigErrors.
func loadConfig(path string, getenv func(string) string) (*Config, error) {
	if path == "" {
		return parseConfig("", nil, getenv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ConfigErrors{{File: path, Msg: err.Error()}}
	}
	return parseConfig(path, data, getenv)
}

// parseConfig is loadConfig with the file's contents given: data read
// from path, or no file when path is "".
func parseConfig(path string, data []byte, getenv func(string) string) (*Config, error) {
	c := defaultConfig()
	c.lines = map[string]int{}
	c.envs = map[string]string{}
	var errs ConfigErrors
	if path != "" {
		c.file = path
		errs = c.decode(path, data)
		c.resolvePaths()
	}
	c.applyEnv(getenv)
	// Validate even after decode errors, so one run reports everything;
	// a field that failed to decode kept its valid default.
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// decode decodes data over c strictly (see yamlconf.Walker.Decode): an
// unknown or repeated key, or a value of the wrong type, is an error
// naming its line and field.
func (c *Config) decode(file string, data []byte) ConfigErrors {
	w := yamlconf.NewWalker(file)
	if root, _ := w.Parse(data); root != nil {
		w.Decode(root, c, c.lines)
	}
	return w.Errors()
}

// The environment variables read, in the order applied.
const (
	envGRPCAddr    = "SLUICE_GRPC_ADDR"
	envHTTPAddr    = "SLUICE_HTTP_ADDR"
	envRedisURL    = "SLUICE_REDIS_URL"
	envPostgresDSN = "SLUICE_POSTGRES_DSN"
	envAdminToken  = "SLUICE_ADMIN_TOKEN"
	envAdminAddr   = "SLUICE_ADMIN_ADDR"
	envLimits      = "SLUICE_LIMITS"
	envLogLevel    = "SLUICE_LOG_LEVEL"
)

// applyEnv applies the SLUICE_* overrides. Setting SLUICE_REDIS_URL
// switches the store to Redis; SLUICE_LIMITS replaces the limits the file
// names (path and inline domains).
func (c *Config) applyEnv(getenv func(string) string) {
	set := func(env, field string, dst *string) {
		if v := getenv(env); v != "" {
			*dst = v
			c.envs[field] = env
		}
	}
	set(envGRPCAddr, "grpc.addr", &c.GRPC.Addr)
	set(envHTTPAddr, "http.addr", &c.HTTP.Addr)
	set(envRedisURL, "redis.url", &c.Redis.URL)
	set(envPostgresDSN, "postgres.dsn", &c.Postgres.DSN)
	set(envAdminToken, "admin_token", &c.AdminToken)
	set(envAdminAddr, "http.admin_addr", &c.HTTP.AdminAddr)
	set(envLimits, "limits.path", &c.Limits.envPath)
	set(envLogLevel, "log.level", &c.Log.Level)
}

// resolvePaths makes the file paths set in the config file relative to
// its directory, as limits.path is, so serving from another working
// directory reads the same files.
func (c *Config) resolvePaths() {
	dir, err := filepath.Abs(filepath.Dir(c.file))
	if err != nil {
		dir = filepath.Dir(c.file)
	}
	for _, p := range []*string{
		&c.GRPC.TLS.CertFile, &c.GRPC.TLS.KeyFile, &c.GRPC.TLS.ClientCAFile,
		&c.HTTP.TLS.CertFile, &c.HTTP.TLS.KeyFile, &c.HTTP.TLS.ClientCAFile,
		&c.HTTP.AdminTLS.CertFile, &c.HTTP.AdminTLS.KeyFile, &c.HTTP.AdminTLS.ClientCAFile,
		&c.Redis.TLS.CertFile, &c.Redis.TLS.KeyFile, &c.Redis.TLS.CAFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// validate checks every setting, naming the field and where it was set.
// It refuses everything serve would refuse before binding: it reads the
// TLS files and parses the Redis URL and Postgres DSN as serve does.
func (c *Config) validate() ConfigErrors {
	var errs ConfigErrors
	add := func(field, msg string) {
		e := ConfigError{Field: field, Msg: msg}
		if env, ok := c.envs[field]; ok {
			e.Env = env
		} else if c.file != "" {
			e.File = c.file
			e.Line = c.lineOf(field)
		}
		errs = append(errs, e)
	}
	serverErrs := unjoin(c.Config.Validate())
	if len(serverErrs) == 0 {
		for _, t := range []struct {
			field string
			cfg   server.TLSConfig
		}{{"grpc.tls", c.GRPC.TLS}, {"http.tls", c.HTTP.TLS}, {"http.admin_tls", c.HTTP.AdminTLS}} {
			if t.cfg.Enabled() {
				if _, err := t.cfg.Load(t.field); err != nil {
					serverErrs = append(serverErrs, err)
				}
			}
		}
	}
	for _, err := range serverErrs {
		var fe *server.FieldError
		if errors.As(err, &fe) {
			add(fe.Field, fe.Msg)
		} else {
			add("", err.Error())
		}
	}
	if n := len(c.AdminToken); n > 0 && n < server.MinAdminTokenLen {
		// The length only: the token is never printed.
		add("admin_token", fmt.Sprintf("too short: %d characters, want at least %d (e.g. openssl rand -hex 32)",
			n, server.MinAdminTokenLen))
	}
	if c.Redis.URL != "" {
		if err := c.Redis.Config.CheckFiles(); err != nil {
			var re *redis.ConfigError
			if errors.As(err, &re) {
				add("redis."+re.Field, re.Err.Error())
			} else {
				add("redis", err.Error())
			}
		}
	}
	if g := c.Runtime.GCPercent; g < 25 || g > 10000 {
		add("runtime.gc_percent", fmt.Sprintf("%d: must be between 25 and 10000", g))
	}
	if m := c.Runtime.MinHeapMB; m < 0 || m > 1<<16 {
		add("runtime.min_heap_mb", fmt.Sprintf("%d: must be between 0 (off) and 65536", m))
	}
	if c.Redis.KeyPrefix == "" {
		add("redis.key_prefix", "must not be empty")
	} else if strings.ContainsAny(c.Redis.KeyPrefix, "{}") {
		add("redis.key_prefix", "must not contain { or }: keys carry their own Redis Cluster hash tag")
	}
	if _, err := limiter.ParseFailureMode(c.Redis.FailureMode); err != nil {
		add("redis.failure_mode", err.Error())
	}
	if n := c.Memory.MaxBuckets; n < memory.MinBuckets {
		add("memory.max_buckets", fmt.Sprintf("must be at least %d (one per shard), got %d", memory.MinBuckets, n))
	}
	if c.Redis.DenyCacheSize < 0 {
		add("redis.deny_cache_size", fmt.Sprintf("must not be negative, got %d", c.Redis.DenyCacheSize))
	}
	if f := c.Redis.LocalFraction; !(f > 0 && f <= 1) {
		add("redis.local_fraction", fmt.Sprintf("must be above 0 and at most 1, got %v", f))
	}
	for _, b := range []struct {
		field string
		cfg   breaker.Config
	}{{"redis.breaker", c.Redis.Breaker}, {"postgres.breaker", c.Postgres.Breaker}} {
		if err := b.cfg.Validate(); err != nil {
			var be *breaker.ConfigError
			if errors.As(err, &be) {
				add(b.field+"."+be.Field, be.Err.Error())
			} else {
				add(b.field, err.Error())
			}
		}
	}
	if c.Postgres.SyncInterval <= 0 {
		add("postgres.sync_interval", "must be positive")
	}
	if c.Postgres.Enabled() {
		if err := c.Postgres.Config.Validate(); err != nil {
			var pe *postgres.ConfigError
			if errors.As(err, &pe) {
				add("postgres."+pe.Field, pe.Err.Error())
			} else {
				add("postgres", err.Error())
			}
		}
	}
	if c.Limits.Watch && c.Limits.WatchInterval <= 0 {
		add("limits.watch_interval", "must be positive when limits.watch is on")
	}
	for _, b := range []struct {
		field string
		v     int
	}{
		{"request.max_descriptors", c.Request.MaxDescriptors},
		{"request.max_entries", c.Request.MaxEntries},
		{"request.max_key_bytes", c.Request.MaxKeyBytes},
		{"request.max_value_bytes", c.Request.MaxValueBytes},
	} {
		if b.v <= 0 {
			add(b.field, fmt.Sprintf("must be at least 1, got %d", b.v))
		}
	}
	if c.Request.MaxHitsAddend == 0 {
		add("request.max_hits_addend", "must be at least 1")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", fmt.Sprintf("%q is not one of text, json", c.Log.Format))
	}
	return errs
}

// lineOf is the line that set field, or of its nearest parent.
func (c *Config) lineOf(field string) int {
	for f := field; f != ""; {
		if l, ok := c.lines[f]; ok {
			return l
		}
		i := strings.LastIndexByte(f, '.')
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// limitsSource is where the limits come from, for loading and watching.
type limitsSource struct {
	configFile string     // config.yaml, when it holds inline domains
	inline     *yaml.Node // config.yaml's domains, or nil
	path       string     // a limit file or directory, or ""
	shadow     bool
}

func (c *Config) limitsSource() limitsSource {
	s := limitsSource{shadow: c.Limits.ShadowMode}
	if c.Limits.envPath != "" {
		s.path = c.Limits.envPath
		return s
	}
	if c.Limits.Domains.Kind != 0 {
		s.configFile, s.inline = c.file, &c.Limits.Domains
	}
	if p := c.Limits.Path; p != "" {
		if !filepath.IsAbs(p) && c.file != "" {
			p = filepath.Join(filepath.Dir(c.file), p)
		}
		s.path = p
	}
	return s
}

// load reads and compiles the limits. The error lists every problem, one
// per line, each with file and line.
func (s limitsSource) load() (*limiter.Limits, error) {
	domains, err := s.loadDomains()
	if err != nil {
		return nil, err
	}
	lims, err := limiter.Compile(domains, limiter.CompileOptions{ShadowMode: s.shadow})
	if err != nil {
		return nil, err
	}
	return lims, nil
}

// loadDomains reads the limits without compiling them. The error lists
// every problem, one per line, each with file and line.
func (s limitsSource) loadDomains() ([]limiter.DomainConfig, error) {
	var (
		domains []limiter.DomainConfig
		errs    []error
	)
	if s.inline != nil {
		ds, err := limiter.DecodeDomains(s.configFile, s.inline)
		if err != nil {
			errs = append(errs, err)
		}
		domains = append(domains, ds...)
	}
	if s.path != "" {
		ds, err := limiter.LoadLimits(s.path)
		if err != nil {
			errs = append(errs, err)
		}
		domains = append(domains, ds...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return domains, nil
}

// watched lists the files and directories whose change means a reload:
// the config file (it may hold domains or name the limits) and the limits
// path.
func (c *Config) watched() []string {
	var out []string
	if c.file != "" {
		out = append(out, c.file)
	}
	if p := c.limitsSource().path; p != "" {
		out = append(out, p)
	}
	return out
}
