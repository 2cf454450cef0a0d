package compat

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/limiter"
)

type vars map[string]string

func (e vars) get(k string) string { return e[k] }

// TestMapping: each variable, with a good value, lands on its Sluice
// setting; with a bad one, fails naming the variable.
func TestMapping(t *testing.T) {
	type check func(c *config.Config) (got, want any)
	cases := []struct {
		name  string
		env   vars
		check check
		err   string // substring of the error; "" for none
	}{
		{"defaults", vars{}, func(c *config.Config) (any, any) {
			return []any{c.HTTP.Addr, c.GRPC.Addr, c.HTTP.Healthcheck, c.Log.Level, c.Log.Format, c.Redis.URL,
					c.ResponseHeaders.Enabled, c.HTTP.MetricsAddr, c.LimitsSource().Path, c.Redis.PoolSize, c.HTTP.AdminAddr},
				[]any{"0.0.0.0:8080", "0.0.0.0:8081", true, "warn", "text", "unix:///var/run/nutcracker/ratelimit.sock",
					false, "", "/srv/runtime_data/current/config", 10, ""}
		}, ""},
		{"HOST PORT", vars{"HOST": "127.0.0.1", "PORT": "9000"}, func(c *config.Config) (any, any) { return c.HTTP.Addr, "127.0.0.1:9000" }, ""},
		{"PORT bad", vars{"PORT": "abc"}, nil, `PORT: "abc" is not a port number`},
		{"PORT range", vars{"PORT": "70000"}, nil, `PORT: "70000" is not a port number`},
		{"GRPC", vars{"GRPC_HOST": "::1", "GRPC_PORT": "0"}, func(c *config.Config) (any, any) { return c.GRPC.Addr, "[::1]:0" }, ""},
		{"GRPC_PORT bad", vars{"GRPC_PORT": "x"}, nil, "GRPC_PORT: "},
		{"DEBUG with admin token", vars{"SLUICE_ADMIN_TOKEN": strings.Repeat("t", 32), "DEBUG_PORT": "7000"},
			func(c *config.Config) (any, any) { return c.HTTP.AdminAddr, "0.0.0.0:7000" }, ""},
		{"DEBUG_PORT bad", vars{"DEBUG_PORT": "-1"}, nil, "DEBUG_PORT: "},
		{"LOG_LEVEL", vars{"LOG_LEVEL": "Trace"}, func(c *config.Config) (any, any) { return c.Log.Level, "debug" }, ""},
		{"LOG_LEVEL info", vars{"LOG_LEVEL": "info"}, func(c *config.Config) (any, any) { return c.Log.Level, "info" }, ""},
		{"LOG_LEVEL bad", vars{"LOG_LEVEL": "loud"}, nil, `LOG_LEVEL: "loud" is not one of`},
		{"LOG_FORMAT", vars{"LOG_FORMAT": "json"}, func(c *config.Config) (any, any) { return c.Log.Format, "json" }, ""},
		{"LOG_FORMAT bad", vars{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT: "},
		{"USE_PROMETHEUS", vars{"USE_PROMETHEUS": "true", "PROMETHEUS_ADDR": "127.0.0.1:9191", "PROMETHEUS_PATH": "/m"},
			func(c *config.Config) (any, any) { return c.HTTP.MetricsAddr + c.HTTP.MetricsPath, "127.0.0.1:9191/m" }, ""},
		{"USE_PROMETHEUS default addr", vars{"USE_PROMETHEUS": "1"},
			func(c *config.Config) (any, any) { return c.HTTP.MetricsAddr + c.HTTP.MetricsPath, ":9090/metrics" }, ""},
		{"USE_PROMETHEUS bad", vars{"USE_PROMETHEUS": "maybe"}, nil, `USE_PROMETHEUS: "maybe" is not a boolean`},
		{"PROMETHEUS_ADDR bad", vars{"USE_PROMETHEUS": "true", "PROMETHEUS_ADDR": "9090"}, nil, "PROMETHEUS_ADDR: "},
		{"PROMETHEUS_PATH bad", vars{"USE_PROMETHEUS": "true", "PROMETHEUS_PATH": "metrics"}, nil, "PROMETHEUS_PATH: "},
		{"USE_STATSD bad", vars{"USE_STATSD": "yes please"}, nil, "USE_STATSD: "},
		{"REDIS single tcp", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "redis.ns:6379", "REDIS_AUTH": "s3cret", "REDIS_POOL_SIZE": "7"},
			func(c *config.Config) (any, any) {
				return []any{c.Redis.URL, c.Redis.Username, c.Redis.Password, c.Redis.PoolSize},
					[]any{"redis://redis.ns:6379", "", "s3cret", 7}
			}, ""},
		{"REDIS_AUTH user", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "r:6379", "REDIS_AUTH": "app:pa:ss"},
			func(c *config.Config) (any, any) { return c.Redis.Username + "|" + c.Redis.Password, "app|pa:ss" }, ""},
		{"REDIS tls", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "r:6380", "REDIS_TLS": "true"},
			func(c *config.Config) (any, any) { return c.Redis.URL, "rediss://r:6380" }, ""},
		{"REDIS_TLS_CACERT missing file", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "r:6380", "REDIS_TLS": "true", "REDIS_TLS_CACERT": "/nonexistent/ca.pem"},
			nil, "REDIS_TLS_CACERT: "},
		{"REDIS sentinel", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_TYPE": "sentinel", "REDIS_URL": "mymaster,s1:26379,s2:26379", "REDIS_SENTINEL_AUTH": "p w"},
			func(c *config.Config) (any, any) {
				return c.Redis.URL, "redis+sentinel://s1:26379,s2:26379/mymaster?sentinel_password=p+w"
			}, ""},
		{"REDIS sentinel bad", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_TYPE": "SENTINEL", "REDIS_URL": "s1:26379"}, nil, "REDIS_URL: REDIS_TYPE=SENTINEL needs"},
		{"REDIS cluster", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_TYPE": "CLUSTER", "REDIS_URL": "n1:7000,n2:7001"},
			func(c *config.Config) (any, any) { return c.Redis.URL, "redis+cluster://n1:7000,n2:7001" }, ""},
		{"REDIS_TYPE bad", vars{"REDIS_TYPE": "ring"}, nil, `REDIS_TYPE: "ring" is not one of`},
		{"REDIS_SOCKET_TYPE bad", vars{"REDIS_SOCKET_TYPE": "udp"}, nil, "REDIS_SOCKET_TYPE: "},
		{"REDIS_URL bad", vars{"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "nohost"}, nil, `REDIS_URL: "nohost" is not host:port`},
		{"REDIS_POOL_SIZE bad", vars{"REDIS_POOL_SIZE": "ten"}, nil, "REDIS_POOL_SIZE: "},
		{"REDIS_POOL_SIZE zero", vars{"REDIS_POOL_SIZE": "0"}, nil, "REDIS_POOL_SIZE: must be at least 1"},
		{"REDIS_TLS bad", vars{"REDIS_TLS": "on"}, nil, "REDIS_TLS: "},
		{"REDIS_TIMEOUT", vars{"REDIS_TIMEOUT": "2s"}, func(c *config.Config) (any, any) { return c.Redis.ReadTimeout.String(), "2s" }, ""},
		{"REDIS_TIMEOUT bad", vars{"REDIS_TIMEOUT": "2"}, nil, "REDIS_TIMEOUT: "},
		{"RUNTIME", vars{"RUNTIME_ROOT": "/data", "RUNTIME_SUBDIRECTORY": "ratelimit", "RUNTIME_APPDIRECTORY": "limits"},
			func(c *config.Config) (any, any) { return c.LimitsSource().Path, "/data/ratelimit/limits" }, ""},
		{"RUNTIME_WATCH_ROOT bad", vars{"RUNTIME_WATCH_ROOT": "sometimes"}, nil, "RUNTIME_WATCH_ROOT: "},
		{"RUNTIME_IGNOREDOTFILES bad", vars{"RUNTIME_IGNOREDOTFILES": "2"}, nil, "RUNTIME_IGNOREDOTFILES: "},
		{"SHADOW_MODE", vars{"SHADOW_MODE": "true"}, func(c *config.Config) (any, any) { return c.LimitsSource().Shadow, true }, ""},
		{"SHADOW_MODE bad", vars{"SHADOW_MODE": "t r u e"}, nil, "SHADOW_MODE: "},
		{"headers", vars{"LIMIT_RESPONSE_HEADERS_ENABLED": "true", "LIMIT_REMAINING_HEADER": "X-Left"},
			func(c *config.Config) (any, any) {
				h := c.ResponseHeaders
				return []any{h.Enabled, h.Limit, h.Remaining, h.Reset}, []any{true, "RateLimit-Limit", "X-Left", "RateLimit-Reset"}
			}, ""},
		{"header name bad", vars{"LIMIT_RESPONSE_HEADERS_ENABLED": "true", "LIMIT_LIMIT_HEADER": "a b"}, nil, "LIMIT_LIMIT_HEADER: "},
		{"LOCAL_CACHE_SIZE_IN_BYTES", vars{"LOCAL_CACHE_SIZE_IN_BYTES": "1048576"},
			func(c *config.Config) (any, any) { return c.Redis.DenyCacheSize, 1048576 / DenyCacheEntryBytes }, ""},
		{"LOCAL_CACHE_SIZE_IN_BYTES 0 keeps the cache", vars{"LOCAL_CACHE_SIZE_IN_BYTES": "0"},
			func(c *config.Config) (any, any) { return c.Redis.DenyCacheSize, limiter.DefaultDenyCacheSize }, ""},
		{"LOCAL_CACHE_SIZE_IN_BYTES bad", vars{"LOCAL_CACHE_SIZE_IN_BYTES": "1MB"}, nil, "LOCAL_CACHE_SIZE_IN_BYTES: "},
		{"CACHE_KEY_PREFIX", vars{"CACHE_KEY_PREFIX": "rl:"}, func(c *config.Config) (any, any) { return c.Redis.KeyPrefix, "rl:" }, ""},
		{"GRPC TLS files missing", vars{"GRPC_SERVER_USE_TLS": "true", "GRPC_SERVER_TLS_CERT": "/nonexistent/c.pem", "GRPC_SERVER_TLS_KEY": "/nonexistent/k.pem"},
			nil, "GRPC_SERVER_TLS_CERT: "},
		{"GRPC TLS without cert", vars{"GRPC_SERVER_USE_TLS": "true"}, nil, "GRPC_SERVER_USE_TLS: true needs"},
		{"GRPC CA names disagree", vars{"GRPC_SERVER_USE_TLS": "true", "GRPC_SERVER_TLS_CERT": "c", "GRPC_SERVER_TLS_KEY": "k",
			"GRPC_CLIENT_TLS_CACERT": "a.pem", "GRPC_SERVER_TLS_CA_CERT": "b.pem"}, nil, "GRPC_SERVER_TLS_CA_CERT: "},
		{"CONFIG_TYPE FILE", vars{"CONFIG_TYPE": "FILE"}, func(c *config.Config) (any, any) { return c.Limits.Watch, true }, ""},
		{"CONFIG_TYPE xds defaults", vars{"CONFIG_TYPE": "GRPC_XDS_SOTW"}, func(c *config.Config) (any, any) {
			x := c.Limits.XDS
			return []any{x.Server, x.NodeID, x.StartWithoutConfig, x.TLS.Enabled, x.Backoff.Initial, x.Backoff.Max,
					x.Backoff.RandomFactor, x.Backoff.Jitter, c.LimitsSource().Path},
				[]any{"localhost:18000", "default", false, false, 10 * time.Second, 60 * time.Second, 0.5, true, ""}
		}, ""},
		{"CONFIG_TYPE xds Envoy Gateway", vars{"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_URL": "envoy-gateway:18001",
			"CONFIG_GRPC_XDS_NODE_ID": "envoy-ratelimit", "CONFIG_GRPC_XDS_NODE_METADATA": "a=1,b=x=y",
			"FORCE_START_WITHOUT_INITIAL_CONFIG": "true", "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL": "1s",
			"XDS_CLIENT_BACKOFF_MAX_INTERVAL": "5s", "XDS_CLIENT_BACKOFF_RANDOM_FACTOR": "0.2", "XDS_CLIENT_BACKOFF_JITTER": "false",
			"XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES": "8388608"}, func(c *config.Config) (any, any) {
			x := c.Limits.XDS
			return []any{x.Server, x.NodeID, x.NodeMetadata, x.StartWithoutConfig, x.Backoff.Initial, x.Backoff.Max,
					x.Backoff.RandomFactor, x.Backoff.Jitter, x.MaxRecvMsgBytes},
				[]any{"envoy-gateway:18001", "envoy-ratelimit", "a=1,b=x=y", true, time.Second, 5 * time.Second, 0.2, false, 8388608}
		}, ""},
		{"CONFIG_TYPE xds TLS files", vars{"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_USE_TLS": "true",
			"CONFIG_GRPC_XDS_CLIENT_TLS_CERT": "/nonexistent/tls.crt", "CONFIG_GRPC_XDS_CLIENT_TLS_KEY": "/nonexistent/tls.key"},
			nil, "CONFIG_GRPC_XDS_CLIENT_TLS_CERT: limits.xds.tls.cert_file: open /nonexistent/tls.crt"},
		{"CONFIG_TYPE xds TLS files without TLS", vars{"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_TLS_CACERT": "/ca.crt"},
			nil, "CONFIG_GRPC_XDS_SERVER_TLS_CACERT: is set but CONFIG_GRPC_XDS_SERVER_USE_TLS is not true"},
		{"CONFIG_TYPE xds bad metadata", vars{"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_NODE_METADATA": "a"},
			nil, "CONFIG_GRPC_XDS_NODE_METADATA: limits.xds.node_metadata: \"a\" is not key=value"},
		{"CONFIG_TYPE xds bad backoff", vars{"CONFIG_TYPE": "GRPC_XDS_SOTW", "XDS_CLIENT_BACKOFF_MAX_INTERVAL": "1s"},
			nil, "XDS_CLIENT_BACKOFF_MAX_INTERVAL: limits.xds.backoff.max: 1s is below backoff.initial 10s"},
		{"CONFIG_TYPE bad", vars{"CONFIG_TYPE": "ETCD"}, nil, "CONFIG_TYPE: "},
		{"QUOTA_MODE", vars{"QUOTA_MODE": "true"}, func(c *config.Config) (any, any) { return c.Limits.QuotaMode, true }, ""},
		{"QUOTA_MODE false", vars{"QUOTA_MODE": "false"}, func(c *config.Config) (any, any) { return c.Limits.QuotaMode, false }, ""},
		{"QUOTA_MODE bad", vars{"QUOTA_MODE": "sometimes"}, nil, "QUOTA_MODE: "},
		{"RESPONSE_DYNAMIC_METADATA", vars{"RESPONSE_DYNAMIC_METADATA": "true"},
			func(c *config.Config) (any, any) { return c.GRPC.ResponseDynamicMetadata, true }, ""},
		{"RESPONSE_DYNAMIC_METADATA default", vars{}, func(c *config.Config) (any, any) { return c.GRPC.ResponseDynamicMetadata, false }, ""},
		{"GRPC_UDS", vars{"GRPC_UDS": "/tmp/rl.sock"}, nil, "GRPC_UDS: "},
		{"GRPC_CLIENT_TLS_SAN", vars{"GRPC_CLIENT_TLS_SAN": "envoy"}, nil, "GRPC_CLIENT_TLS_SAN: "},
		{"BACKEND_TYPE memcache", vars{"BACKEND_TYPE": "memcache"}, nil, "BACKEND_TYPE: memcache is not supported yet"},
		{"TRACING_SAMPLING_RATE bad", vars{"TRACING_SAMPLING_RATE": "half"}, nil, "TRACING_SAMPLING_RATE: "},
		{"XDS backoff bad", vars{"XDS_CLIENT_BACKOFF_MAX_INTERVAL": "1 minute"}, nil, "XDS_CLIENT_BACKOFF_MAX_INTERVAL: "},
		{"SLUICE_ no counterpart still applies", vars{"SLUICE_POSTGRES_DSN": "postgres://u@db:5432/sl"},
			func(c *config.Config) (any, any) { return c.Postgres.DSN, "postgres://u@db:5432/sl" }, ""},
		{"SLUICE_ with counterpart replaced", vars{"SLUICE_HTTP_ADDR": "127.0.0.1:1", "SLUICE_LIMITS": "/x"},
			func(c *config.Config) (any, any) {
				return c.HTTP.Addr + c.LimitsSource().Path, "0.0.0.0:8080/srv/runtime_data/current/config"
			}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := Load("", tc.env.get)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got, want := tc.check(cfg)
			if !equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func equal(a, b any) bool {
	as, ok1 := a.([]any)
	bs, ok2 := b.([]any)
	if ok1 && ok2 {
		return slices.Equal(as, bs)
	}
	return a == b
}

// TestReport: every setting given that Sluice does not implement is named
// in the report's one list; a default value, or one Sluice honours, is
// not; USE_STATSD=true and a replaced SLUICE_* setting get a note each.
func TestReport(t *testing.T) {
	e := vars{
		"PROMETHEUS_MAPPER_YAML":  "/m.yaml",
		"CONFIG_GRPC_XDS_NODE_ID": "rl", "FORCE_START_WITHOUT_INITIAL_CONFIG": "true", "STATSD_PORT": "9125",
		"RUNTIME_IGNOREDOTFILES": "false", "MERGE_DOMAIN_CONFIG": "true",
		// Not named: defaults, or what Sluice does.
		"DISABLE_STATS": "false", "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "true", "RUNTIME_WATCH_ROOT": "false",
		"QUOTA_MODE": "False", "CONFIG_TYPE": "FILE", "TRACING_SERVICE_NAME": "RateLimit",
		"TRACING_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
		"USE_STATSD": "true", "SLUICE_REDIS_URL": "redis://x:1",
	}
	_, rep, err := Load("", e.get)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CONFIG_GRPC_XDS_NODE_ID (CONFIG_TYPE is not GRPC_XDS_SOTW)",
		"FORCE_START_WITHOUT_INITIAL_CONFIG (CONFIG_TYPE is not GRPC_XDS_SOTW)", "MERGE_DOMAIN_CONFIG",
		"PROMETHEUS_MAPPER_YAML", "RUNTIME_IGNOREDOTFILES", "STATSD_PORT"}
	got := slices.Sorted(slices.Values(rep.Ignored))
	if !slices.Equal(got, want) {
		t.Errorf("ignored = %v\nwant      %v", got, want)
	}
	notes := strings.Join(rep.Notes, "\n")
	for _, s := range []string{"USE_STATSD=true: statsd is not supported", "SLUICE_REDIS_URL is ignored"} {
		if !strings.Contains(notes, s) {
			t.Errorf("notes lack %q:\n%s", s, notes)
		}
	}
	if len(rep.Notes) != 2 {
		t.Errorf("%d notes, want 2: %q", len(rep.Notes), rep.Notes)
	}
}

// TestEveryErrorNamesItsVariable: an unparsable value of any typed
// setting is an error that starts with the variable's name.
func TestEveryErrorNamesItsVariable(t *testing.T) {
	for _, s := range Settings {
		if s.Type == "string" {
			continue
		}
		_, _, err := Load("", vars{s.Name: "%%"}.get)
		if err == nil || !strings.HasPrefix(err.Error(), s.Name+": ") {
			t.Errorf("%s=%%%%: %v", s.Name, err)
		}
	}
}

// TestSelected: the program name ratelimit selects the compat mode.
func TestSelected(t *testing.T) {
	for argv0, want := range map[string]bool{
		"/bin/ratelimit": true, "ratelimit": true, "./ratelimit": true,
		"/bin/sluice": false, "ratelimit-old": false, "/ratelimit/sluice": false,
	} {
		if Selected(argv0) != want {
			t.Errorf("Selected(%q) = %v", argv0, !want)
		}
	}
	if got := Args([]string{"/bin/ratelimit"}); !slices.Equal(got, []string{"serve", "-compat", Mode}) {
		t.Errorf("Args(ratelimit) = %q", got)
	}
	if got := Args([]string{"/bin/sluice", "check"}); !slices.Equal(got, []string{"check"}) {
		t.Errorf("Args(sluice check) = %q", got)
	}
}

// TestDocsNameEverySetting: docs/compat-envoy-ratelimit.md has a row for
// every setting, with its status.
func TestDocsNameEverySetting(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docs", "compat-envoy-ratelimit.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, s := range Settings {
		row := "| `" + s.Name + "` |"
		i := strings.Index(doc, row)
		if i < 0 {
			t.Errorf("docs: no row for %s", s.Name)
			continue
		}
		line, _, _ := strings.Cut(doc[i:], "\n")
		if !strings.Contains(line, "| "+s.Status.String()+" |") {
			t.Errorf("docs: %s row does not say %s: %s", s.Name, s.Status, line)
		}
	}
	// The summary's counts are the table's.
	count := map[Status]int{}
	for _, s := range Settings {
		count[s.Status]++
	}
	for st, n := range count {
		if want := fmt.Sprintf("**%d %s**", n, st); !strings.Contains(doc, want) {
			t.Errorf("docs: the summary does not say %s", want)
		}
	}
	if want := fmt.Sprintf("**%d settings**", len(Settings)); !strings.Contains(doc, want) {
		t.Errorf("docs: the summary does not say %s", want)
	}
}

// TestChargeDefault: compat mode charges denied hits by default, as
// envoyproxy/ratelimit counts them; STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
// =true selects admission; a config file's default stands unless the
// switch is given; SLUICE_DEFAULT_CHARGE wins over all.
func TestChargeDefault(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("limits: {default_charge: admission}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		file string
		env  vars
		want limiter.Charge
		err  string
	}{
		{"default", "", vars{}, limiter.ChargeUsage, ""},
		{"stop false", "", vars{"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "false"}, limiter.ChargeUsage, ""},
		{"stop true", "", vars{"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "true"}, limiter.ChargeAdmission, ""},
		{"file", file, vars{}, limiter.ChargeAdmission, ""},
		{"switch over file", file, vars{"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "0"}, limiter.ChargeUsage, ""},
		{"sluice over switch", "", vars{"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "true", "SLUICE_DEFAULT_CHARGE": "usage"}, limiter.ChargeUsage, ""},
		{"sluice over default", "", vars{"SLUICE_DEFAULT_CHARGE": "admission"}, limiter.ChargeAdmission, ""},
		{"sluice bad", "", vars{"SLUICE_DEFAULT_CHARGE": "later"}, 0, `SLUICE_DEFAULT_CHARGE: limits.default_charge: "later" is not one of admission, usage`},
		{"stop bad", "", vars{"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "sometimes"}, 0, "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, rep, err := Load(c.file, c.env.get)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.LimitsSource().Charge; got != c.want {
				t.Errorf("default charge = %v, want %v", got, c.want)
			}
			if slices.Contains(rep.Ignored, "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT") {
				t.Error("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT reported as ignored")
			}
		})
	}
}

// TestTracingSettings: the environment Envoy Gateway sets for tracing
// turns it on with envoyproxy/ratelimit's meaning, leaving the endpoint to
// the OTLP exporter's own OTEL_EXPORTER_OTLP_* reading; a bad protocol is
// an error naming the variable.
func TestTracingSettings(t *testing.T) {
	c, _, err := Load("", vars{
		"TRACING_ENABLED": "true", "TRACING_SERVICE_NAME": "envoy-ratelimit", "TRACING_SERVICE_NAMESPACE": "envoy-gateway-system",
		"TRACING_SERVICE_INSTANCE_ID": "envoy-ratelimit-7f9c", "TRACING_SAMPLING_RATE": "0.5",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
	}.get)
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Tracing
	if !tr.Enabled || tr.ServiceName != "envoy-ratelimit" || tr.ServiceNamespace != "envoy-gateway-system" ||
		tr.ServiceInstanceID != "envoy-ratelimit-7f9c" || tr.SamplingRatio != 0.5 || tr.Protocol != "http" || tr.Endpoint != "" {
		t.Errorf("tracing = %+v", tr)
	}
	c, _, err = Load("", vars{"TRACING_SAMPLING_RATE": "7", "TRACING_EXPORTER_PROTOCOL": "GRPC"}.get)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing.Enabled || c.Tracing.SamplingRatio != 1 || c.Tracing.Protocol != "grpc" || c.Tracing.ServiceName != "RateLimit" {
		t.Errorf("tracing = %+v: want off, ratio 1, grpc, envoyproxy/ratelimit's service name", c.Tracing)
	}
	_, _, err = Load("", vars{"TRACING_ENABLED": "true", "TRACING_EXPORTER_PROTOCOL": "zipkin"}.get)
	if err == nil || !strings.Contains(err.Error(), "TRACING_EXPORTER_PROTOCOL") || !strings.Contains(err.Error(), "zipkin") {
		t.Errorf("error %v: want one naming TRACING_EXPORTER_PROTOCOL", err)
	}
}
