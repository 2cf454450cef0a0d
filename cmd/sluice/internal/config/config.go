// Package config is config.yaml: each part's own Config, composed, with
// the SLUICE_* environment on top. Start from Default, decode strictly,
// apply the environment, then validate; Load does all four and reports
// every problem in the one format, "file:line: path.to.field: problem".
//
// It also says where the limits come from (Source) and which files a
// change of means a reload (Watched). It builds nothing: serve does.
package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/tracing"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/limiter/postgres"
	"github.com/sluice-rl/sluice/limiter/redis"
	"github.com/sluice-rl/sluice/limiter/xds"
	"github.com/sluice-rl/sluice/limiter/yamlconf"
	"github.com/sluice-rl/sluice/server"
)

// Config is config.yaml: each part's own Config, composed. Start from
// Default, decode strictly, apply the environment, then validate.
type Config struct {
	server.Config `yaml:",inline"` // grpc, http, response_headers, health, shutdown

	Redis    RedisConfig    `yaml:"redis"`
	Memory   memory.Config  `yaml:"memory"` // the embedded store, and the failure mode's local one
	Postgres PostgresConfig `yaml:"postgres"`
	Limits   LimitsConfig   `yaml:"limits"`
	Request  RequestConfig  `yaml:"request"`
	Log      LogConfig      `yaml:"log"`
	Runtime  RuntimeConfig  `yaml:"runtime"`
	Tracing  tracing.Config `yaml:"tracing"`

	// AdminToken comes from SLUICE_ADMIN_TOKEN only, never from a file, and
	// is never printed. Set, it has at least server.MinAdminTokenLen
	// characters.
	AdminToken string `yaml:"-"`

	file  string            // config file path; "" for built-in defaults
	lines map[string]int    // field path -> line in file
	envs  map[string]string // field path -> environment variable that set it

	warnings Errors // one per deprecated setting the file gives
}

// File is the config file read; "" for built-in defaults.
func (c *Config) File() string { return c.file }

// Warnings are the deprecated settings the file gives, one per setting,
// each naming it and what to do; the caller logs or prints them.
func (c *Config) Warnings() Errors { return c.warnings }

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
	Path       string `yaml:"path"`
	ShadowMode bool   `yaml:"shadow_mode"`
	// QuotaMode puts every admission limit in quota mode, as
	// envoyproxy/ratelimit's QUOTA_MODE does; usage limits stay usage.
	QuotaMode     bool          `yaml:"quota_mode"`
	Watch         bool          `yaml:"watch"`
	WatchInterval time.Duration `yaml:"watch_interval"`
	Domains       yaml.Node     `yaml:"domains"`
	// DefaultCharge is the charging mode (admission or usage) of the
	// limits that do not state one, such as limits delivered over xDS.
	// Empty: admission, or usage in envoyproxy/ratelimit compat mode.
	// SLUICE_DEFAULT_CHARGE, when set, wins.
	DefaultCharge string `yaml:"default_charge"`
	// DomainDefaults are the defaults of the named domains, in place of
	// the global ones.
	DomainDefaults map[string]DomainDefaults `yaml:"domain_defaults"`
	// XDS takes limits from an xDS control plane as well (limits.xds.server
	// set); a domain comes from files or from xDS, never both.
	XDS xds.Config `yaml:"xds"`

	// envPath is SLUICE_LIMITS.
	envPath string
}

// DomainDefaults are one domain's defaults for the limits that do not
// state their own.
type DomainDefaults struct {
	// Charge is the charging mode: admission or usage; empty takes
	// limits.default_charge.
	Charge string `yaml:"charge"`
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
}

// DefaultGCPercent is runtime.gc_percent unless configured.
const DefaultGCPercent = 400

// Default is the configuration before any file or environment: the
// shipped config.yaml states the same values.
func Default() Config {
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
		Limits: LimitsConfig{Watch: true, WatchInterval: time.Second, XDS: xds.DefaultConfig()},
		Request: RequestConfig{
			MaxDescriptors: b.MaxDescriptors,
			MaxEntries:     b.MaxEntries,
			MaxKeyBytes:    b.MaxKeyLen,
			MaxValueBytes:  b.MaxValueLen,
			MaxHitsAddend:  b.MaxCost,
		},
		Log:     LogConfig{Level: "info", Format: "text"},
		Runtime: RuntimeConfig{GCPercent: DefaultGCPercent},
		Tracing: tracing.DefaultConfig(),
	}
}

// Bounds is the request bounds for the limiter.
func (c *Config) Bounds() limiter.Bounds {
	r := c.Request
	return limiter.Bounds{MaxDescriptors: r.MaxDescriptors, MaxEntries: r.MaxEntries,
		MaxKeyLen: r.MaxKeyBytes, MaxValueLen: r.MaxValueBytes, MaxCost: r.MaxHitsAddend}
}

// Error is one problem with the configuration, with where it is; it
// prints as "file:line: path.to.field: problem", or with the environment
// variable that set the value in place of file and line.
type Error = yamlconf.Error

// Errors is every problem found; each prints on its own line.
type Errors = yamlconf.Errors

// Load builds the configuration: defaults, then the file at path
// (skipped when path is ""), then the environment, then validation. The
// error, if any, is an Errors.
func Load(path string, getenv func(string) string) (*Config, error) {
	if path == "" {
		return Parse("", nil, getenv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: err.Error()}}
	}
	return Parse(path, data, getenv)
}

// Overlay applies another set of settings (another product's environment)
// after the file, in place of the SLUICE_* settings it has counterparts
// for; it records the variable behind each field it sets with SetBy, so
// validation errors name it. Its errors name the variable.
type Overlay func(c *Config) Errors

// LoadWith is Load with overlay in place of the SLUICE_* settings that
// have a counterpart elsewhere: of the environment, only those without
// one (SLUICE_POSTGRES_DSN, SLUICE_ADMIN_TOKEN, SLUICE_ADMIN_ADDR) apply,
// then overlay, then validation.
func LoadWith(path string, getenv func(string) string, overlay Overlay) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, Errors{{File: path, Msg: err.Error()}}
		}
	}
	return parse(path, data, getenv, deprecated, overlay)
}

// Parse is Load with the file's contents given: data read from path, or
// no file when path is "".
func Parse(path string, data []byte, getenv func(string) string) (*Config, error) {
	return parse(path, data, getenv, deprecated, nil)
}

// SetBy records that the environment variable env set field, for errors.
func (c *Config) SetBy(field, env string) { c.envs[field] = env }

// SetLimitsPath makes path (a limit file or directory) the only source of
// limits, as SLUICE_LIMITS does.
func (c *Config) SetLimitsPath(path string) { c.Limits.envPath = path }

// parse is Parse with the table of deprecated settings given, and an
// overlay (nil: the SLUICE_* environment).
func parse(path string, data []byte, getenv func(string) string, table []Deprecated, overlay Overlay) (*Config, error) {
	c := Default()
	c.lines = map[string]int{}
	c.envs = map[string]string{}
	var errs Errors
	if path != "" {
		c.file = path
		errs = c.decode(path, data, table)
		c.resolvePaths()
	}
	if overlay == nil {
		c.applyEnv(getenv)
	} else {
		c.applyEnvOf(getenv, EnvPostgresDSN, EnvAdminToken, EnvAdminAddr)
		errs = append(errs, overlay(&c)...)
		// Sluice's own setting for the charging default wins over the
		// overlay's (envoyproxy/ratelimit's counting of denied hits).
		c.applyEnvOf(getenv, EnvDefaultCharge)
	}
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
// naming its line and field. The deprecated settings in table are taken
// out first, each with a warning.
func (c *Config) decode(file string, data []byte, table []Deprecated) Errors {
	w := yamlconf.NewWalker(file)
	if root, _ := w.Parse(data); root != nil {
		c.warnings = dropDeprecated(file, root, table)
		w.Decode(root, c, c.lines)
	}
	return w.Errors()
}

// LimitsOnly decodes what it can of a config with errors, so check can
// report the limit files too; nil when even that fails.
func LimitsOnly(path string, getenv func(string) string) *Config {
	c := Default()
	c.lines, c.envs = map[string]int{}, map[string]string{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		c.file = path
		for _, e := range c.decode(path, data, deprecated) {
			if strings.HasPrefix(e.Field, "limits") || e.Field == "" {
				return nil
			}
		}
	}
	c.applyEnv(getenv)
	return &c
}

// The environment variables read, in the order applied.
const (
	EnvGRPCAddr    = "SLUICE_GRPC_ADDR"
	EnvHTTPAddr    = "SLUICE_HTTP_ADDR"
	EnvRedisURL    = "SLUICE_REDIS_URL"
	EnvPostgresDSN = "SLUICE_POSTGRES_DSN"
	EnvAdminToken  = "SLUICE_ADMIN_TOKEN"
	EnvAdminAddr   = "SLUICE_ADMIN_ADDR"
	EnvLimits      = "SLUICE_LIMITS"
	EnvLogLevel    = "SLUICE_LOG_LEVEL"
	// EnvDefaultCharge sets limits.default_charge, in compat mode too,
	// where it wins over STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT.
	EnvDefaultCharge = "SLUICE_DEFAULT_CHARGE"
)

// EnvReplaced are the SLUICE_* settings an Overlay replaces: LoadWith
// ignores them.
var EnvReplaced = []string{EnvGRPCAddr, EnvHTTPAddr, EnvRedisURL, EnvLimits, EnvLogLevel}

// applyEnv applies the SLUICE_* overrides. Setting SLUICE_REDIS_URL
// switches the store to Redis; SLUICE_LIMITS replaces the limits the file
// names (path and inline domains).
func (c *Config) applyEnv(getenv func(string) string) {
	c.applyEnvOf(getenv, EnvGRPCAddr, EnvHTTPAddr, EnvRedisURL, EnvPostgresDSN, EnvAdminToken, EnvAdminAddr,
		EnvLimits, EnvLogLevel, EnvDefaultCharge)
}

// applyEnvOf applies the SLUICE_* overrides named in only.
func (c *Config) applyEnvOf(getenv func(string) string, only ...string) {
	set := func(env, field string, dst *string) {
		if !slices.Contains(only, env) {
			return
		}
		if v := getenv(env); v != "" {
			*dst = v
			c.envs[field] = env
		}
	}
	set(EnvGRPCAddr, "grpc.addr", &c.GRPC.Addr)
	set(EnvHTTPAddr, "http.addr", &c.HTTP.Addr)
	set(EnvRedisURL, "redis.url", &c.Redis.URL)
	set(EnvPostgresDSN, "postgres.dsn", &c.Postgres.DSN)
	set(EnvAdminToken, "admin_token", &c.AdminToken)
	set(EnvAdminAddr, "http.admin_addr", &c.HTTP.AdminAddr)
	set(EnvLimits, "limits.path", &c.Limits.envPath)
	set(EnvLogLevel, "log.level", &c.Log.Level)
	set(EnvDefaultCharge, "limits.default_charge", &c.Limits.DefaultCharge)
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
		&c.Limits.XDS.TLS.CertFile, &c.Limits.XDS.TLS.KeyFile, &c.Limits.XDS.TLS.CAFile,
		&c.Tracing.TLS.CAFile, &c.Tracing.TLS.CertFile, &c.Tracing.TLS.KeyFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// validate checks every setting, naming the field and where it was set.
// It refuses everything serve would refuse before binding: it reads the
// TLS files and parses the Redis URL and Postgres DSN as serve does.
func (c *Config) validate() Errors {
	var errs Errors
	add := func(field, msg string) {
		errs = append(errs, c.at(Error{Field: field, Msg: msg}))
	}
	// under adds a part's own config error, its fields placed under
	// section (see yamlconf.Under).
	under := func(section string, err error) {
		if es := (Errors)(nil); errors.As(yamlconf.Under(section, err), &es) {
			for _, e := range es {
				errs = append(errs, c.at(e))
			}
		}
	}
	if err := c.Config.Validate(); err != nil {
		under("", err)
	} else {
		for _, t := range []struct {
			field string
			cfg   server.TLSConfig
		}{{"grpc.tls", c.GRPC.TLS}, {"http.tls", c.HTTP.TLS}, {"http.admin_tls", c.HTTP.AdminTLS}} {
			if t.cfg.Enabled() {
				_, err := t.cfg.Load(t.field)
				under("", err)
			}
		}
	}
	if n := len(c.AdminToken); n > 0 && n < server.MinAdminTokenLen {
		// The length only: the token is never printed.
		add("admin_token", fmt.Sprintf("too short: %d characters, want at least %d (e.g. openssl rand -hex 32)",
			n, server.MinAdminTokenLen))
	}
	if c.Redis.URL != "" {
		under("redis", c.Redis.Config.CheckFiles())
	}
	if g := c.Runtime.GCPercent; g < 25 || g > 10000 {
		add("runtime.gc_percent", fmt.Sprintf("%d: must be between 25 and 10000", g))
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
		under(b.field, b.cfg.Validate())
	}
	if c.Postgres.SyncInterval <= 0 {
		add("postgres.sync_interval", "must be positive")
	}
	if c.Postgres.Enabled() {
		under("postgres", c.Postgres.Config.Validate())
	}
	if v := c.Limits.DefaultCharge; v != "" {
		if _, ok := limiter.ParseCharge(v); !ok {
			add("limits.default_charge", fmt.Sprintf("%q is not one of admission, usage", v))
		}
	}
	for _, d := range slices.Sorted(maps.Keys(c.Limits.DomainDefaults)) {
		if v := c.Limits.DomainDefaults[d].Charge; v != "" {
			if _, ok := limiter.ParseCharge(v); !ok {
				add("limits.domain_defaults."+d+".charge", fmt.Sprintf("%q is not one of admission, usage", v))
			}
		}
	}
	under("limits.xds", c.Limits.XDS.Validate())
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
	under("tracing", c.Tracing.Validate())
	return errs
}

// at places e where its field was set: the environment variable, or the
// file and line.
func (c *Config) at(e Error) Error {
	if env, ok := c.envs[e.Field]; ok {
		e.Env = env
	} else if c.file != "" {
		e.File = c.file
		e.Line = c.lineOf(e.Field)
	}
	return e
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

// Source is where the limits come from, for loading and watching.
type Source struct {
	ConfigFile string     // config.yaml, when it holds inline domains
	Inline     *yaml.Node // config.yaml's domains, or nil
	Path       string     // a limit file or directory, or ""
	Shadow     bool       // limits.shadow_mode
	Quota      bool       // limits.quota_mode
	// Charge and DomainCharge are the charging defaults
	// (limits.default_charge, limits.domain_defaults).
	Charge       limiter.Charge
	DomainCharge map[string]limiter.Charge
}

// CompileOptions are the options the limits of s compile with.
func (s Source) CompileOptions() limiter.CompileOptions {
	return limiter.CompileOptions{ShadowMode: s.Shadow, QuotaMode: s.Quota, DefaultCharge: s.Charge, DomainCharge: s.DomainCharge}
}

// LimitsSource is where c's limits come from: SLUICE_LIMITS, else the
// inline domains and limits.path (relative to the config file).
func (c *Config) LimitsSource() Source {
	s := Source{Shadow: c.Limits.ShadowMode, Quota: c.Limits.QuotaMode}
	s.Charge, _ = limiter.ParseCharge(c.Limits.DefaultCharge) // checked by validate; "" is admission
	for d, dd := range c.Limits.DomainDefaults {
		if ch, ok := limiter.ParseCharge(dd.Charge); ok {
			if s.DomainCharge == nil {
				s.DomainCharge = map[string]limiter.Charge{}
			}
			s.DomainCharge[d] = ch
		}
	}
	if c.Limits.envPath != "" {
		s.Path = c.Limits.envPath
		return s
	}
	if c.Limits.Domains.Kind != 0 {
		s.ConfigFile, s.Inline = c.file, &c.Limits.Domains
	}
	if p := c.Limits.Path; p != "" {
		if !filepath.IsAbs(p) && c.file != "" {
			p = filepath.Join(filepath.Dir(c.file), p)
		}
		s.Path = p
	}
	return s
}

// Load reads and compiles the limits. The error lists every problem, one
// per line, each with file and line.
func (s Source) Load() (*limiter.Limits, error) {
	domains, err := s.LoadDomains()
	if err != nil {
		return nil, err
	}
	lims, err := limiter.Compile(domains, s.CompileOptions())
	if err != nil {
		return nil, err
	}
	return lims, nil
}

// LoadDomains reads the limits without compiling them. The error lists
// every problem, one per line, each with file and line.
func (s Source) LoadDomains() ([]limiter.DomainConfig, error) {
	var (
		domains []limiter.DomainConfig
		errs    []error
	)
	if s.Inline != nil {
		ds, err := limiter.DecodeDomains(s.ConfigFile, s.Inline)
		if err != nil {
			errs = append(errs, err)
		}
		domains = append(domains, ds...)
	}
	if s.Path != "" {
		ds, err := limiter.LoadLimits(s.Path)
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

// Watched lists the files and directories whose change means a reload:
// the config file (it may hold domains or name the limits) and the limits
// path.
func (c *Config) Watched() []string {
	var out []string
	if c.file != "" {
		out = append(out, c.file)
	}
	if p := c.LimitsSource().Path; p != "" {
		out = append(out, p)
	}
	return out
}
