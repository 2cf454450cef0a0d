// Package compat reads envoyproxy/ratelimit's environment settings onto
// Sluice's configuration, so the binary can run where envoyproxy/ratelimit
// is deployed (Envoy Gateway execs /bin/ratelimit with that environment).
//
// Every setting of envoyproxy/ratelimit is in Settings, with its default
// there and what Sluice does with it: Mapped onto a Sluice setting, Same
// (Sluice already behaves so), Warned (not implemented; when set to other
// than its default it is named in the one startup warning) or Refused
// (not implemented and it would change decisions: a startup error). A
// value that does not parse as its type is a startup error naming the
// variable. docs/compat-envoy-ratelimit.md is the same table for users.
package compat

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/limiter"
)

// Mode is the name of the compat mode: `sluice serve -compat envoy-ratelimit`.
const Mode = "envoy-ratelimit"

// Selected reports whether the program name argv0 selects the compat mode:
// its base name is ratelimit, as envoyproxy/ratelimit's binary is called.
func Selected(argv0 string) bool {
	return strings.TrimSuffix(filepath.Base(argv0), ".exe") == "ratelimit"
}

// Status is what Sluice does with a setting.
type Status int

const (
	Mapped  Status = iota // onto a Sluice setting
	Same                  // Sluice already behaves as the setting asks
	Warned                // not implemented: named in the startup warning
	Refused               // not implemented: a startup error
)

func (s Status) String() string {
	return [...]string{"mapped", "same", "warned", "refused"}[s]
}

// Setting is one envoyproxy/ratelimit environment variable.
type Setting struct {
	Name    string
	Default string // envoyproxy/ratelimit's
	Type    string // bool, int, port, duration, float, string
	Status  Status
	// Fine, for Warned and Refused, accepts the values that need no
	// warning or error because Sluice does what they ask; nil: the default.
	Fine func(v string) bool
}

// DenyCacheEntryBytes is the memory one entry of Sluice's deny cache is
// taken to cost (the entry, its key and its index slot), to turn
// LOCAL_CACHE_SIZE_IN_BYTES into a number of entries. Measured by
// limiter's BenchmarkDenyCacheEntryMemory: 183 bytes with a 45-byte key,
// 263 with a 115-byte one.
const DenyCacheEntryBytes = 256

func isTrue(v string) bool { b, _ := strconv.ParseBool(v); return b }

// Settings is every envoyproxy/ratelimit setting (src/settings/settings.go),
// plus GRPC_SERVER_TLS_CA_CERT, the name Envoy Gateway sets for the client
// CA, and the OTEL_EXPORTER_OTLP_* variables its tracing reads.
var Settings = []Setting{
	{"HOST", "0.0.0.0", "string", Mapped, nil},
	{"PORT", "8080", "port", Mapped, nil},
	{"DEBUG_HOST", "0.0.0.0", "string", Mapped, nil},
	{"DEBUG_PORT", "6070", "port", Mapped, nil},
	{"GRPC_UDS", "", "string", Refused, nil},
	{"GRPC_HOST", "0.0.0.0", "string", Mapped, nil},
	{"GRPC_PORT", "8081", "port", Mapped, nil},
	{"GRPC_MAX_CONNECTION_AGE", "24h", "duration", Warned, nil},
	{"GRPC_MAX_CONNECTION_AGE_GRACE", "1h", "duration", Warned, nil},
	{"GRPC_SERVER_USE_TLS", "false", "bool", Mapped, nil},
	{"GRPC_SERVER_TLS_CERT", "", "string", Mapped, nil},
	{"GRPC_SERVER_TLS_KEY", "", "string", Mapped, nil},
	{"GRPC_CLIENT_TLS_CACERT", "", "string", Mapped, nil},
	{"GRPC_SERVER_TLS_CA_CERT", "", "string", Mapped, nil},
	{"GRPC_CLIENT_TLS_SAN", "", "string", Refused, nil},
	{"LOG_LEVEL", "WARN", "string", Mapped, nil},
	{"LOG_FORMAT", "text", "string", Mapped, nil},
	{"CONFIG_TYPE", "FILE", "string", Mapped, nil},
	{"FORCE_START_WITHOUT_INITIAL_CONFIG", "false", "bool", Mapped, nil},
	{"CONFIG_GRPC_XDS_NODE_ID", "default", "string", Mapped, nil},
	{"CONFIG_GRPC_XDS_NODE_METADATA", "", "string", Mapped, nil},
	{"CONFIG_GRPC_XDS_SERVER_URL", "localhost:18000", "string", Mapped, nil},
	{"CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", "3s", "duration", Warned, nil},
	{"CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", "", "string", Warned, nil},
	{"CONFIG_GRPC_XDS_SERVER_USE_TLS", "false", "bool", Mapped, nil},
	{"CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "", "string", Mapped, nil},
	{"CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "", "string", Mapped, nil},
	{"CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "", "string", Mapped, nil},
	{"CONFIG_GRPC_XDS_SERVER_TLS_SAN", "", "string", Mapped, nil},
	{"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", "10s", "duration", Mapped, nil},
	{"XDS_CLIENT_BACKOFF_MAX_INTERVAL", "60s", "duration", Mapped, nil},
	{"XDS_CLIENT_BACKOFF_RANDOM_FACTOR", "0.5", "float", Mapped, nil},
	{"XDS_CLIENT_BACKOFF_JITTER", "true", "bool", Mapped, nil},
	{"XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", "", "int", Mapped, nil},
	{"USE_DOG_STATSD", "false", "bool", Warned, nil},
	{"USE_DOG_STATSD_MOGRIFIERS", "", "string", Warned, nil},
	{"USE_STATSD", "true", "bool", Mapped, nil},
	{"STATSD_HOST", "localhost", "string", Warned, nil},
	{"STATSD_PORT", "8125", "port", Warned, nil},
	{"EXTRA_TAGS", "", "string", Warned, nil},
	{"STATS_FLUSH_INTERVAL", "10s", "duration", Warned, nil},
	{"DISABLE_STATS", "false", "bool", Warned, nil},
	{"USE_PROMETHEUS", "false", "bool", Mapped, nil},
	{"PROMETHEUS_ADDR", ":9090", "string", Mapped, nil},
	{"PROMETHEUS_PATH", "/metrics", "string", Mapped, nil},
	{"PROMETHEUS_MAPPER_YAML", "", "string", Warned, nil},
	{"PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS", "false", "bool", Warned, nil},
	{"RUNTIME_ROOT", "/srv/runtime_data/current", "string", Mapped, nil},
	{"RUNTIME_SUBDIRECTORY", "", "string", Mapped, nil},
	{"RUNTIME_APPDIRECTORY", "config", "string", Mapped, nil},
	// Sluice always skips dot files: false is named.
	{"RUNTIME_IGNOREDOTFILES", "false", "bool", Warned, isTrue},
	{"RUNTIME_WATCH_ROOT", "true", "bool", Same, nil},
	{"EXPIRATION_JITTER_MAX_SECONDS", "300", "int", Warned, nil},
	{"LOCAL_CACHE_SIZE_IN_BYTES", "0", "int", Mapped, nil},
	{"NEAR_LIMIT_RATIO", "0.8", "float", Warned, nil},
	{"CACHE_KEY_PREFIX", "", "string", Mapped, nil},
	{"BACKEND_TYPE", "redis", "string", Mapped, nil},
	// Selects the charging default: false (counting denied hits) is usage,
	// true admission.
	{"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", "false", "bool", Mapped, nil},
	{"LIMIT_RESPONSE_HEADERS_ENABLED", "false", "bool", Mapped, nil},
	{"LIMIT_LIMIT_HEADER", "RateLimit-Limit", "string", Mapped, nil},
	{"LIMIT_REMAINING_HEADER", "RateLimit-Remaining", "string", Mapped, nil},
	{"LIMIT_RESET_HEADER", "RateLimit-Reset", "string", Mapped, nil},
	{"HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", "false", "bool", Same, nil},
	{"REDIS_SOCKET_TYPE", "unix", "string", Mapped, nil},
	{"REDIS_TYPE", "SINGLE", "string", Mapped, nil},
	{"REDIS_URL", "/var/run/nutcracker/ratelimit.sock", "string", Mapped, nil},
	{"REDIS_POOL_SIZE", "10", "int", Mapped, nil},
	{"REDIS_AUTH", "", "string", Mapped, nil},
	{"REDIS_TLS", "false", "bool", Mapped, nil},
	{"REDIS_TLS_CLIENT_CERT", "", "string", Mapped, nil},
	{"REDIS_TLS_CLIENT_KEY", "", "string", Mapped, nil},
	{"REDIS_TLS_CACERT", "", "string", Mapped, nil},
	{"REDIS_TLS_SKIP_HOSTNAME_VERIFICATION", "false", "bool", Refused, nil},
	{"REDIS_PIPELINE_WINDOW", "0", "duration", Warned, nil},
	{"REDIS_PIPELINE_LIMIT", "0", "int", Warned, nil},
	{"REDIS_CLUSTER_PIPELINE_PARALLELISM", "1", "int", Warned, nil},
	{"REDIS_PERSECOND", "false", "bool", Warned, nil},
	{"REDIS_PERSECOND_SOCKET_TYPE", "unix", "string", Warned, nil},
	{"REDIS_PERSECOND_TYPE", "SINGLE", "string", Warned, nil},
	{"REDIS_PERSECOND_URL", "/var/run/nutcracker/ratelimitpersecond.sock", "string", Warned, nil},
	{"REDIS_PERSECOND_POOL_SIZE", "10", "int", Warned, nil},
	{"REDIS_PERSECOND_AUTH", "", "string", Warned, nil},
	{"REDIS_PERSECOND_TLS", "false", "bool", Warned, nil},
	{"REDIS_SENTINEL_AUTH", "", "string", Mapped, nil},
	{"REDIS_PERSECOND_SENTINEL_AUTH", "", "string", Warned, nil},
	{"REDIS_PERSECOND_PIPELINE_WINDOW", "0", "duration", Warned, nil},
	{"REDIS_PERSECOND_PIPELINE_LIMIT", "0", "int", Warned, nil},
	{"REDIS_PERSECOND_CLUSTER_PIPELINE_PARALLELISM", "1", "int", Warned, nil},
	{"REDIS_HEALTH_CHECK_ACTIVE_CONNECTION", "false", "bool", Same, nil},
	{"REDIS_TIMEOUT", "10s", "duration", Mapped, nil},
	{"REDIS_PERSECOND_TIMEOUT", "10s", "duration", Warned, nil},
	{"REDIS_POOL_ON_EMPTY_BEHAVIOR", "WAIT", "string", Warned, nil},
	{"REDIS_PERSECOND_POOL_ON_EMPTY_BEHAVIOR", "WAIT", "string", Warned, nil},
	{"REDIS_STARTUP_INITIAL_INTERVAL", "1s", "duration", Warned, nil},
	{"REDIS_STARTUP_MAX_INTERVAL", "30s", "duration", Warned, nil},
	{"REDIS_STARTUP_MAX_ELAPSED_TIME", "0", "duration", Warned, nil},
	{"MEMCACHE_HOST_PORT", "", "string", Warned, nil},
	{"MEMCACHE_MAX_IDLE_CONNS", "2", "int", Warned, nil},
	{"MEMCACHE_SRV", "", "string", Warned, nil},
	{"MEMCACHE_SRV_REFRESH", "0", "duration", Warned, nil},
	{"MEMCACHE_TLS", "false", "bool", Warned, nil},
	{"MEMCACHE_TLS_CLIENT_CERT", "", "string", Warned, nil},
	{"MEMCACHE_TLS_CLIENT_KEY", "", "string", Warned, nil},
	{"MEMCACHE_TLS_CACERT", "", "string", Warned, nil},
	{"MEMCACHE_TLS_SKIP_HOSTNAME_VERIFICATION", "false", "bool", Warned, nil},
	{"SHADOW_MODE", "false", "bool", Mapped, nil},
	{"QUOTA_MODE", "false", "bool", Mapped, nil},
	{"RESPONSE_DYNAMIC_METADATA", "false", "bool", Mapped, nil},
	{"MERGE_DOMAIN_CONFIG", "false", "bool", Warned, nil},
	{"TRACING_ENABLED", "false", "bool", Mapped, nil},
	{"TRACING_SERVICE_NAME", "RateLimit", "string", Mapped, nil},
	{"TRACING_SERVICE_NAMESPACE", "", "string", Mapped, nil},
	{"TRACING_SERVICE_INSTANCE_ID", "", "string", Mapped, nil},
	{"TRACING_EXPORTER_PROTOCOL", "http", "string", Mapped, nil},
	{"TRACING_SAMPLING_RATE", "1", "float", Mapped, nil},
	// The OTLP exporters read these themselves, in both programs.
	{"OTEL_EXPORTER_OTLP_ENDPOINT", "", "string", Same, nil},
	{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "string", Same, nil},
	{"OTEL_EXPORTER_OTLP_HEADERS", "", "string", Same, nil},
	{"OTEL_EXPORTER_OTLP_CERTIFICATE", "", "string", Same, nil},
	{"OTEL_EXPORTER_OTLP_TIMEOUT", "", "string", Same, nil},
	// Neither program reads it: TRACING_EXPORTER_PROTOCOL picks the exporter.
	{"OTEL_EXPORTER_OTLP_PROTOCOL", "", "string", Same, nil},
}

// refusals says why a Refused setting cannot be honoured; each is asked
// for only with a value other than its default.
var refusals = map[string]string{
	"GRPC_UDS":                             "listening on a unix socket is not supported yet; use GRPC_HOST and GRPC_PORT",
	"GRPC_CLIENT_TLS_SAN":                  "checking the client certificate's SAN is not supported yet; without it Sluice would accept clients envoyproxy/ratelimit refuses",
	"REDIS_TLS_SKIP_HOSTNAME_VERIFICATION": "skipping only the host name check is not supported yet; give REDIS_URL the certificate's host name",
}

// Report is what Load found besides errors, for the startup log.
type Report struct {
	// Ignored names every setting given that Sluice does not implement,
	// each with its value's gist: one startup warning lists them all.
	Ignored []string
	// Notes are other warnings, each a whole sentence: statsd asked for,
	// a SLUICE_* setting the compat mode replaces.
	Notes []string
}

// Load builds the configuration from the config file at path (optional;
// "" for built-in defaults) and envoyproxy/ratelimit's environment, in
// place of the SLUICE_* settings it has counterparts for. The error, if
// any, is a config.Errors naming each variable.
func Load(path string, getenv func(string) string) (*config.Config, Report, error) {
	var rep Report
	cfg, err := config.LoadWith(path, getenv, func(c *config.Config) config.Errors {
		return apply(c, getenv, &rep)
	})
	return cfg, rep, err
}

// env reads the settings, each parsed by its type; a value that does not
// parse is an error naming the variable.
type env struct {
	getenv func(string) string
	byName map[string]*Setting
	errs   config.Errors
}

func (e *env) set(name string) bool { return e.getenv(name) != "" }

func (e *env) str(name string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return e.byName[name].Default
}

func (e *env) bad(name, format string, args ...any) {
	e.errs = append(e.errs, config.Error{Env: name, Msg: fmt.Sprintf(format, args...)})
}

func (e *env) bool(name string) bool {
	b, _ := strconv.ParseBool(e.str(name)) // checked by parse
	return b
}

func (e *env) int(name string) int {
	n, _ := strconv.Atoi(e.str(name))
	return n
}

// parse checks that every value given parses as its setting's type.
func (e *env) parse(s *Setting) {
	v := e.getenv(s.Name)
	if v == "" {
		return
	}
	var err error
	switch s.Type {
	case "bool":
		_, err = strconv.ParseBool(v)
	case "int":
		_, err = strconv.Atoi(v)
	case "port":
		var n int
		if n, err = strconv.Atoi(v); err == nil && (n < 0 || n > 65535) {
			err = fmt.Errorf("out of range")
		}
	case "duration":
		_, err = time.ParseDuration(v)
	case "float":
		_, err = strconv.ParseFloat(v, 64)
	}
	if err != nil {
		what := map[string]string{"bool": "a boolean (true or false)", "int": "a whole number",
			"port": "a port number (0-65535)", "duration": "a duration such as 10s", "float": "a number"}[s.Type]
		e.bad(s.Name, "%q is not %s", v, what)
	}
}

// differs reports whether the setting is given with a value other than
// its default (compared as its type).
func (e *env) differs(s *Setting) bool {
	v := e.getenv(s.Name)
	if v == "" {
		return false
	}
	switch s.Type {
	case "bool":
		a, _ := strconv.ParseBool(v)
		b, _ := strconv.ParseBool(s.Default)
		return a != b
	case "duration":
		a, _ := time.ParseDuration(v)
		b, _ := time.ParseDuration(s.Default)
		return a != b
	case "float", "int", "port":
		a, _ := strconv.ParseFloat(v, 64)
		b, _ := strconv.ParseFloat(s.Default, 64)
		return s.Default == "" || a != b
	}
	return !strings.EqualFold(v, s.Default)
}

func apply(c *config.Config, getenv func(string) string, rep *Report) config.Errors {
	e := &env{getenv: getenv, byName: map[string]*Setting{}}
	for i := range Settings {
		s := &Settings[i]
		e.byName[s.Name] = s
		e.parse(s)
	}
	if len(e.errs) > 0 {
		return e.errs // the rest reads the values as parsed
	}
	for i := range Settings {
		s := &Settings[i]
		if s.Status != Warned && s.Status != Refused {
			continue
		}
		fine := !e.differs(s)
		if s.Fine != nil && e.set(s.Name) {
			fine = s.Fine(getenv(s.Name))
		}
		if fine {
			continue
		}
		if s.Status == Refused {
			e.bad(s.Name, "%s", refusals[s.Name])
		} else {
			rep.Ignored = append(rep.Ignored, s.Name)
		}
	}
	for _, name := range config.EnvReplaced {
		if getenv(name) != "" {
			rep.Notes = append(rep.Notes, name+" is ignored in "+Mode+" compat mode: envoyproxy/ratelimit's settings replace it")
		}
	}

	// Listeners.
	c.HTTP.Addr = net.JoinHostPort(e.str("HOST"), e.str("PORT"))
	c.SetBy("http.addr", "PORT")
	c.HTTP.Healthcheck = true
	c.GRPC.Addr = net.JoinHostPort(e.str("GRPC_HOST"), e.str("GRPC_PORT"))
	c.SetBy("grpc.addr", "GRPC_PORT")
	// envoyproxy/ratelimit's debug listener serves pprof unauthenticated;
	// Sluice's pprof is in the admin API, behind its token, so the debug
	// address is the admin API's when a token is set.
	switch {
	case c.AdminToken != "" && c.HTTP.AdminAddr == "":
		c.HTTP.AdminAddr = net.JoinHostPort(e.str("DEBUG_HOST"), e.str("DEBUG_PORT"))
		c.SetBy("http.admin_addr", "DEBUG_PORT")
	case e.set("DEBUG_HOST") || e.set("DEBUG_PORT"):
		rep.Ignored = append(rep.Ignored, "DEBUG_HOST/DEBUG_PORT (the admin API, with pprof, serves there only with SLUICE_ADMIN_TOKEN and without SLUICE_ADMIN_ADDR)")
	}
	if e.bool("GRPC_SERVER_USE_TLS") {
		c.GRPC.TLS.CertFile, c.GRPC.TLS.KeyFile = e.str("GRPC_SERVER_TLS_CERT"), e.str("GRPC_SERVER_TLS_KEY")
		c.SetBy("grpc.tls", "GRPC_SERVER_TLS_CERT")
		c.SetBy("grpc.tls.cert_file", "GRPC_SERVER_TLS_CERT")
		ca, eg := e.str("GRPC_CLIENT_TLS_CACERT"), e.str("GRPC_SERVER_TLS_CA_CERT")
		switch {
		case ca != "" && eg != "" && ca != eg:
			e.bad("GRPC_SERVER_TLS_CA_CERT", "%q differs from GRPC_CLIENT_TLS_CACERT %q; give one", eg, ca)
		case ca != "":
			c.GRPC.TLS.ClientCAFile = ca
			c.SetBy("grpc.tls.client_ca_file", "GRPC_CLIENT_TLS_CACERT")
		case eg != "":
			c.GRPC.TLS.ClientCAFile = eg
			c.SetBy("grpc.tls.client_ca_file", "GRPC_SERVER_TLS_CA_CERT")
		}
		if c.GRPC.TLS.CertFile == "" || c.GRPC.TLS.KeyFile == "" {
			e.bad("GRPC_SERVER_USE_TLS", "true needs GRPC_SERVER_TLS_CERT and GRPC_SERVER_TLS_KEY")
		}
	} else {
		for _, n := range []string{"GRPC_SERVER_TLS_CERT", "GRPC_SERVER_TLS_KEY", "GRPC_CLIENT_TLS_CACERT", "GRPC_SERVER_TLS_CA_CERT"} {
			if e.set(n) {
				rep.Ignored = append(rep.Ignored, n+" (GRPC_SERVER_USE_TLS is not true)")
			}
		}
	}

	// Logs.
	switch l := strings.ToLower(e.str("LOG_LEVEL")); l {
	case "trace", "debug":
		c.Log.Level = "debug"
	case "info":
		c.Log.Level = "info"
	case "warn", "warning":
		c.Log.Level = "warn"
	case "error", "fatal", "panic":
		c.Log.Level = "error"
	default:
		e.bad("LOG_LEVEL", "%q is not one of trace, debug, info, warn, error, fatal, panic", e.str("LOG_LEVEL"))
	}
	switch f := strings.ToLower(e.str("LOG_FORMAT")); f {
	case "text", "json":
		c.Log.Format = f
	default:
		e.bad("LOG_FORMAT", "%q is not one of text, json", e.str("LOG_FORMAT"))
	}

	// Metrics.
	if e.set("USE_STATSD") && e.bool("USE_STATSD") {
		rep.Notes = append(rep.Notes, "USE_STATSD=true: statsd is not supported; Sluice's metrics are Prometheus "+
			"(USE_PROMETHEUS=true serves them at PROMETHEUS_ADDR, and /metrics on PORT always)")
	}
	if e.bool("USE_PROMETHEUS") {
		addr, path := e.str("PROMETHEUS_ADDR"), e.str("PROMETHEUS_PATH")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			e.bad("PROMETHEUS_ADDR", "%q is not host:port: %v", addr, err)
		}
		if !strings.HasPrefix(path, "/") {
			e.bad("PROMETHEUS_PATH", "%q must start with /", path)
		}
		c.HTTP.MetricsAddr, c.HTTP.MetricsPath = addr, path
		c.SetBy("http.metrics_addr", "PROMETHEUS_ADDR")
		c.SetBy("http.metrics_path", "PROMETHEUS_PATH")
	}

	// Limits: envoyproxy/ratelimit reads <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/<RUNTIME_APPDIRECTORY>
	// (whether it watches the root or that directory), and reloads on change.
	switch t := strings.ToUpper(e.str("CONFIG_TYPE")); t {
	case "FILE":
		for _, n := range xdsSettings {
			if e.set(n) {
				rep.Ignored = append(rep.Ignored, n+" (CONFIG_TYPE is not GRPC_XDS_SOTW)")
			}
		}
		c.SetLimitsPath(filepath.Join(e.str("RUNTIME_ROOT"), e.str("RUNTIME_SUBDIRECTORY"), e.str("RUNTIME_APPDIRECTORY")))
		c.SetBy("limits.path", "RUNTIME_ROOT")
		c.Limits.Watch = true
	case "GRPC_XDS_SOTW":
		// As envoyproxy/ratelimit: the limits come over xDS alone; the
		// RUNTIME_* directory is not read.
		xdsFromEnv(c, e)
	default:
		e.bad("CONFIG_TYPE", "%q is not one of FILE, GRPC_XDS_SOTW", e.str("CONFIG_TYPE"))
	}
	c.Limits.ShadowMode = e.bool("SHADOW_MODE")
	c.SetBy("limits.shadow_mode", "SHADOW_MODE")
	c.Limits.QuotaMode = e.bool("QUOTA_MODE")
	c.SetBy("limits.quota_mode", "QUOTA_MODE")
	c.GRPC.ResponseDynamicMetadata = e.bool("RESPONSE_DYNAMIC_METADATA")
	c.SetBy("grpc.response_dynamic_metadata", "RESPONSE_DYNAMIC_METADATA")
	// envoyproxy/ratelimit counts every hit, denied ones too, unless told
	// to stop: the charging default of limits that do not state one is
	// usage (denied reports charged), or admission with the switch on. A
	// config file's limits.default_charge stands unless the switch is
	// given; SLUICE_DEFAULT_CHARGE wins over both.
	switch {
	case e.set("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT"):
		c.Limits.DefaultCharge = limiter.ChargeUsage.String()
		if e.bool("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT") {
			c.Limits.DefaultCharge = limiter.ChargeAdmission.String()
		}
		c.SetBy("limits.default_charge", "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT")
	case c.Limits.DefaultCharge == "":
		c.Limits.DefaultCharge = limiter.ChargeUsage.String()
	}

	// Response headers: off unless asked for, named as envoyproxy/ratelimit names them.
	h := &c.ResponseHeaders
	h.Enabled = e.bool("LIMIT_RESPONSE_HEADERS_ENABLED")
	h.Limit, h.Remaining, h.Reset = e.str("LIMIT_LIMIT_HEADER"), e.str("LIMIT_REMAINING_HEADER"), e.str("LIMIT_RESET_HEADER")
	c.SetBy("response_headers.limit", "LIMIT_LIMIT_HEADER")
	c.SetBy("response_headers.remaining", "LIMIT_REMAINING_HEADER")
	c.SetBy("response_headers.reset", "LIMIT_RESET_HEADER")

	// Store.
	switch b := strings.ToLower(e.str("BACKEND_TYPE")); b {
	case "redis":
	case "memcache":
		e.bad("BACKEND_TYPE", "memcache is not supported yet; Sluice's shared store is redis")
	default:
		e.bad("BACKEND_TYPE", "%q is not one of redis, memcache", e.str("BACKEND_TYPE"))
	}
	if p := e.str("CACHE_KEY_PREFIX"); e.set("CACHE_KEY_PREFIX") {
		c.Redis.KeyPrefix = p
		c.SetBy("redis.key_prefix", "CACHE_KEY_PREFIX")
	}
	// A 0 does not turn the deny cache off: it is exact (a bucket known
	// short cannot refill before the remembered time), so it changes no
	// decision, only spares Redis.
	if n := e.int("LOCAL_CACHE_SIZE_IN_BYTES"); n < 0 {
		e.bad("LOCAL_CACHE_SIZE_IN_BYTES", "must not be negative, got %d", n)
	} else if n > 0 {
		c.Redis.DenyCacheSize = max(1, n/DenyCacheEntryBytes)
		c.SetBy("redis.deny_cache_size", "LOCAL_CACHE_SIZE_IN_BYTES")
	}
	redisFromEnv(c, e, rep)
	tracingFromEnv(c, e)
	return e.errs
}

// xdsSettings are the settings of the xDS source, read with
// CONFIG_TYPE=GRPC_XDS_SOTW only.
var xdsSettings = []string{
	"FORCE_START_WITHOUT_INITIAL_CONFIG", "CONFIG_GRPC_XDS_NODE_ID", "CONFIG_GRPC_XDS_NODE_METADATA",
	"CONFIG_GRPC_XDS_SERVER_URL", "CONFIG_GRPC_XDS_SERVER_USE_TLS", "CONFIG_GRPC_XDS_CLIENT_TLS_CERT",
	"CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "CONFIG_GRPC_XDS_SERVER_TLS_SAN",
	"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", "XDS_CLIENT_BACKOFF_MAX_INTERVAL", "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
	"XDS_CLIENT_BACKOFF_JITTER", "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES",
}

// xdsFromEnv sets limits.xds from CONFIG_GRPC_XDS_* and XDS_CLIENT_*.
func xdsFromEnv(c *config.Config, e *env) {
	x := &c.Limits.XDS
	set := func(field, env string, dst *string) {
		*dst = e.str(env)
		c.SetBy("limits.xds."+field, env)
	}
	set("server", "CONFIG_GRPC_XDS_SERVER_URL", &x.Server)
	set("node_id", "CONFIG_GRPC_XDS_NODE_ID", &x.NodeID)
	set("node_metadata", "CONFIG_GRPC_XDS_NODE_METADATA", &x.NodeMetadata)
	x.StartWithoutConfig = e.bool("FORCE_START_WITHOUT_INITIAL_CONFIG")
	x.MaxRecvMsgBytes = e.int("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES")
	c.SetBy("limits.xds.max_recv_msg_bytes", "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES")
	dur := func(field, env string, dst *time.Duration) {
		*dst, _ = time.ParseDuration(e.str(env)) // checked by parse
		c.SetBy("limits.xds.backoff."+field, env)
	}
	dur("initial", "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", &x.Backoff.Initial)
	dur("max", "XDS_CLIENT_BACKOFF_MAX_INTERVAL", &x.Backoff.Max)
	x.Backoff.RandomFactor, _ = strconv.ParseFloat(e.str("XDS_CLIENT_BACKOFF_RANDOM_FACTOR"), 64)
	c.SetBy("limits.xds.backoff.random_factor", "XDS_CLIENT_BACKOFF_RANDOM_FACTOR")
	x.Backoff.Jitter = e.bool("XDS_CLIENT_BACKOFF_JITTER")
	if e.bool("CONFIG_GRPC_XDS_SERVER_USE_TLS") {
		x.TLS.Enabled = true
		set("tls.cert_file", "CONFIG_GRPC_XDS_CLIENT_TLS_CERT", &x.TLS.CertFile)
		set("tls.key_file", "CONFIG_GRPC_XDS_CLIENT_TLS_KEY", &x.TLS.KeyFile)
		set("tls.ca_file", "CONFIG_GRPC_XDS_SERVER_TLS_CACERT", &x.TLS.CAFile)
		set("tls.server_name", "CONFIG_GRPC_XDS_SERVER_TLS_SAN", &x.TLS.ServerName)
		c.SetBy("limits.xds.tls", "CONFIG_GRPC_XDS_SERVER_USE_TLS")
	} else {
		for _, n := range []string{"CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "CONFIG_GRPC_XDS_CLIENT_TLS_KEY",
			"CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "CONFIG_GRPC_XDS_SERVER_TLS_SAN"} {
			if e.set(n) {
				e.bad(n, "is set but CONFIG_GRPC_XDS_SERVER_USE_TLS is not true: the control plane would be reached in plain text")
			}
		}
	}
}

// tracingFromEnv maps TRACING_*; the exporter reads OTEL_EXPORTER_OTLP_*
// itself (endpoint, headers, certificate, timeout), as
// envoyproxy/ratelimit's does, so tracing.endpoint stays empty.
func tracingFromEnv(c *config.Config, e *env) {
	t := &c.Tracing
	t.Enabled = e.bool("TRACING_ENABLED")
	c.SetBy("tracing.enabled", "TRACING_ENABLED")
	t.ServiceName = e.str("TRACING_SERVICE_NAME")
	c.SetBy("tracing.service_name", "TRACING_SERVICE_NAME")
	t.ServiceNamespace = e.str("TRACING_SERVICE_NAMESPACE")
	t.ServiceInstanceID = e.str("TRACING_SERVICE_INSTANCE_ID")
	switch p := strings.ToLower(e.str("TRACING_EXPORTER_PROTOCOL")); p {
	case "http", "grpc":
		t.Protocol = p
		c.SetBy("tracing.protocol", "TRACING_EXPORTER_PROTOCOL")
	default:
		e.bad("TRACING_EXPORTER_PROTOCOL", "%q is not one of http, grpc", e.str("TRACING_EXPORTER_PROTOCOL"))
	}
	// envoyproxy/ratelimit samples everything at 1 or more and nothing at
	// 0 or less; Sluice's ratio is 0 to 1.
	r, _ := strconv.ParseFloat(e.str("TRACING_SAMPLING_RATE"), 64) // checked by parse
	if math.IsNaN(r) {
		e.bad("TRACING_SAMPLING_RATE", "NaN is not a sampling rate")
	}
	t.SamplingRatio = min(max(r, 0), 1)
	c.SetBy("tracing.sampling_ratio", "TRACING_SAMPLING_RATE")
}

// redisFromEnv builds the Redis URL and settings from REDIS_*.
func redisFromEnv(c *config.Config, e *env, rep *Report) {
	r := &c.Redis
	raw := e.str("REDIS_URL")
	tlsOn := e.bool("REDIS_TLS")
	typ := strings.ToLower(e.str("REDIS_TYPE"))
	sock := strings.ToLower(e.str("REDIS_SOCKET_TYPE"))
	c.SetBy("redis.url", "REDIS_URL")
	switch sock {
	case "tcp", "unix":
	default:
		e.bad("REDIS_SOCKET_TYPE", "%q is not one of tcp, unix", e.str("REDIS_SOCKET_TYPE"))
		return
	}
	u := url.URL{}
	hosts := func(list []string) bool {
		for _, h := range list {
			if _, _, err := net.SplitHostPort(h); err != nil {
				e.bad("REDIS_URL", "%q is not host:port", h)
				return false
			}
		}
		u.Host = strings.Join(list, ",")
		return true
	}
	scheme := func(s string) string {
		if tlsOn {
			return strings.Replace(s, "redis", "rediss", 1)
		}
		return s
	}
	switch typ {
	case "single":
		if sock == "unix" {
			if tlsOn {
				e.bad("REDIS_TLS", "true needs REDIS_SOCKET_TYPE=tcp")
				return
			}
			u.Scheme, u.Path = "unix", raw
			break
		}
		if !hosts([]string{raw}) {
			return
		}
		u.Scheme = scheme("redis")
	case "sentinel":
		// master_name,host:port[,host:port...]
		parts := strings.Split(raw, ",")
		if sock != "tcp" || len(parts) < 2 || parts[0] == "" {
			e.bad("REDIS_URL", "REDIS_TYPE=SENTINEL needs REDIS_SOCKET_TYPE=tcp and REDIS_URL master_name,host:port[,host:port...]")
			return
		}
		if !hosts(parts[1:]) {
			return
		}
		u.Scheme, u.Path = scheme("redis+sentinel"), "/"+parts[0]
		if p := e.str("REDIS_SENTINEL_AUTH"); p != "" {
			u.RawQuery = url.Values{"sentinel_password": {p}}.Encode()
		}
	case "cluster":
		if sock != "tcp" || !hosts(strings.Split(raw, ",")) {
			if sock != "tcp" {
				e.bad("REDIS_SOCKET_TYPE", "REDIS_TYPE=CLUSTER needs tcp")
			}
			return
		}
		u.Scheme = scheme("redis+cluster")
	default:
		e.bad("REDIS_TYPE", "%q is not one of SINGLE, SENTINEL, CLUSTER", e.str("REDIS_TYPE"))
		return
	}
	if typ != "sentinel" && e.set("REDIS_SENTINEL_AUTH") {
		rep.Ignored = append(rep.Ignored, "REDIS_SENTINEL_AUTH (REDIS_TYPE is not SENTINEL)")
	}
	r.URL = u.String()
	if a := e.str("REDIS_AUTH"); a != "" {
		// As envoyproxy/ratelimit: user:password, else a password.
		if user, pass, ok := strings.Cut(a, ":"); ok {
			r.Username, r.Password = user, pass
		} else {
			r.Password = a
		}
	}
	if n := e.int("REDIS_POOL_SIZE"); n < 1 {
		e.bad("REDIS_POOL_SIZE", "must be at least 1, got %d", n)
	} else {
		r.PoolSize = n
	}
	if e.set("REDIS_TIMEOUT") {
		d, _ := time.ParseDuration(e.str("REDIS_TIMEOUT"))
		if d <= 0 {
			e.bad("REDIS_TIMEOUT", "must be positive")
		}
		r.DialTimeout, r.ReadTimeout, r.WriteTimeout = d, d, d
	}
	certs := []struct {
		name, field string
		dst         *string
	}{
		{"REDIS_TLS_CLIENT_CERT", "redis.tls.cert_file", &r.TLS.CertFile},
		{"REDIS_TLS_CLIENT_KEY", "redis.tls.key_file", &r.TLS.KeyFile},
		{"REDIS_TLS_CACERT", "redis.tls.ca_file", &r.TLS.CAFile},
	}
	for _, t := range certs {
		if !e.set(t.name) {
			continue
		}
		if !tlsOn {
			rep.Ignored = append(rep.Ignored, t.name+" (REDIS_TLS is not true)")
			continue
		}
		*t.dst = e.str(t.name)
		c.SetBy(t.field, t.name)
	}
	if r.TLS.CertFile != "" || r.TLS.KeyFile != "" {
		c.SetBy("redis.tls", "REDIS_TLS_CLIENT_CERT")
	}
}

// Args is the command line run is given for the process's argv: argv[1:],
// or, when argv[0] selects the compat mode, `serve -compat envoy-ratelimit`
// followed by argv[1:] (envoyproxy/ratelimit's binary takes no command).
func Args(argv []string) []string {
	if len(argv) == 0 {
		return nil
	}
	if Selected(argv[0]) {
		return append([]string{"serve", "-compat", Mode}, argv[1:]...)
	}
	return argv[1:]
}
