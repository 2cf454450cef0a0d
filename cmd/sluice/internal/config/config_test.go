package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// env is a fake environment for getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := Load("", env{}.get)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.GRPC.Addr != ":8081" || c.HTTP.Addr != ":8080" || c.Redis.URL != "" || c.Redis.KeyPrefix != "sl:" ||
		!c.Limits.Watch || c.Limits.WatchInterval != time.Second || c.Request.MaxDescriptors != 64 ||
		!c.ResponseHeaders.Enabled || c.Log.Level != "info" || c.Shutdown.DrainDelay != time.Second {
		t.Errorf("unexpected defaults: %+v", c)
	}
}

func TestShippedConfig(t *testing.T) {
	c, err := Load("../../../../config.yaml", env{}.get)
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	// The shipped file states every default.
	d := Default()
	if c.Config != d.Config || !reflect.DeepEqual(c.Redis, d.Redis) || c.Memory != d.Memory || !reflect.DeepEqual(c.Postgres, d.Postgres) || c.Request != d.Request || c.Log != d.Log || c.Runtime != d.Runtime ||
		c.Limits.Watch != d.Limits.Watch || c.Limits.WatchInterval != d.Limits.WatchInterval || c.Limits.XDS != d.Limits.XDS {
		t.Errorf("config.yaml differs from the defaults:\n%+v\n%+v", c, d)
	}
	lims, err := c.LimitsSource().Load()
	if err != nil {
		t.Fatalf("limits: %v", err)
	}
	if got := lims.Domains(); len(got) != 1 || got[0] != "edge" {
		t.Errorf("domains = %v, want [edge]", got)
	}
}

func TestStrictDecoding(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string // each a full error line
	}{
		{"unknown nested field with suggestion", "redis:\n  url: \"\"\n  pool_sise: 3\n",
			[]string{"config.yaml:3: redis.pool_sise: unknown field; did you mean pool_size?"}},
		{"unknown top-level field", "log: {level: info}\nlimts:\n  path: x\n",
			[]string{"config.yaml:2: limts: unknown field; did you mean limits?"}},
		{"unknown field without a close match", "shutdown:\n  zzz: 1\n",
			[]string{"config.yaml:2: shutdown.zzz: unknown field; known fields: drain_delay, timeout"}},
		{"inline struct fields are known", "redis:\n  tls:\n    server_nam: x\n",
			[]string{"config.yaml:3: redis.tls.server_nam: unknown field; did you mean server_name?"}},
		{"admin token is not a file setting", "admin_token: x\n",
			[]string{"config.yaml:1: admin_token: unknown field"}},
		{"tracing settings are validated", "tracing:\n  enabled: true\n  protocol: zipkin\n  sampling_ratio: 2\n",
			[]string{
				`config.yaml:3: tracing.protocol: "zipkin" is not one of grpc, http`,
				`config.yaml:4: tracing.sampling_ratio: must be between 0 and 1, got 2`,
			}},
		{"wrong types, all reported", "grpc:\n  max_recv_msg_bytes: lots\n  keepalive_min_time: soon\nlimits:\n  watch: sometimes\n",
			[]string{
				`config.yaml:2: grpc.max_recv_msg_bytes: must be an integer, not "lots"`,
				`config.yaml:3: grpc.keepalive_min_time: must be a duration such as 250ms, 1s or 2m, not "soon"`,
				`config.yaml:5: limits.watch: must be true or false, not "sometimes"`,
			}},
		{"bool where a string belongs", "log:\n  format: true\n",
			[]string{`config.yaml:2: log.format: must be a string, not the boolean true; quote it`}},
		{"repeated key", "http:\n  addr: a\n  addr: b\n",
			[]string{"config.yaml:3: http.addr: given twice; first given on line 2"}},
		{"scalar for a section", "grpc: 8081\n",
			[]string{`config.yaml:1: grpc: must be a mapping of settings, not the number 8081`}},
		{"list for a scalar", "http:\n  addr: [a, b]\n",
			[]string{"config.yaml:2: http.addr: must be a string, not a list"}},
		{"top level not a mapping", "- a\n- b\n",
			[]string{"config.yaml:1: the file must be a mapping of settings, not a list"}},
		{"decode and validation errors together", "grpc:\n  addr: \"\"\n  bogus: 1\nlog:\n  format: xml\n",
			[]string{
				"config.yaml:3: grpc.bogus: unknown field",
				"config.yaml:2: grpc.addr: must not be empty",
				`config.yaml:5: log.format: "xml" is not one of text, json`,
			}},
		{"gc target out of range", "log: {level: info}\nruntime:\n  gc_percent: 5\n",
			[]string{"config.yaml:3: runtime.gc_percent: 5: must be between 25 and 10000"}},
		{"memory bound of zero", "memory:\n  max_buckets: 0\n",
			[]string{"config.yaml:2: memory.max_buckets: must be at least 64 (one per shard), got 0"}},
		{"memory bound below one per shard", "memory:\n  max_buckets: -5\n",
			[]string{"config.yaml:2: memory.max_buckets: must be at least 64 (one per shard), got -5"}},
		{"too many stream workers", "grpc:\n  stream_workers: 100000\n",
			[]string{"config.yaml:2: grpc.stream_workers: 100000 is more than the maximum of 65536"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeConfig(t, c.body)
			_, err := Load(p, env{}.get)
			if err == nil {
				t.Fatal("no error")
			}
			var ce Errors
			if !errors.As(err, &ce) {
				t.Fatalf("error %T, want Errors", err)
			}
			got := strings.ReplaceAll(err.Error(), p, "config.yaml")
			lines := strings.Split(got, "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(c.want), got)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, lines[i], w)
				}
			}
		})
	}
}

// TestMergeKeys checks that config.yaml takes YAML merge keys as limit
// files do: a shared mapping merged into two sections, explicit keys
// winning, and a list of mappings merged in order.
func TestMergeKeys(t *testing.T) {
	p := writeConfig(t, `breaker_defaults: &b {consecutive_failures: 7, open_duration: 3s}
`)
	// An unknown top-level key is still an error: anchors live inside
	// settings that exist.
	if _, err := Load(p, env{}.get); err == nil {
		t.Fatal("unknown top-level key accepted")
	}
	p = writeConfig(t, `redis:
  breaker: &b {consecutive_failures: 7, open_duration: 3s}
postgres:
  breaker:
    <<: *b
    open_duration: 9s
shutdown:
  <<: [{timeout: 4s}, {timeout: 5s, drain_delay: 1s}]
`)
	c, err := Load(p, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	if c.Postgres.Breaker.ConsecutiveFailures != 7 || c.Postgres.Breaker.OpenDuration != 9*time.Second {
		t.Errorf("postgres.breaker = %+v, want consecutive_failures 7 merged and open_duration 9s kept", c.Postgres.Breaker)
	}
	if c.Shutdown.Timeout != 4*time.Second || c.Shutdown.DrainDelay != time.Second {
		t.Errorf("shutdown = %+v, want timeout 4s from the first merged mapping, drain_delay 1s", c.Shutdown)
	}
	// A merged field that is wrong is reported at its own line, under the
	// section it was merged into.
	p = writeConfig(t, "redis:\n  breaker: &b {consecutive_failure: 7}\npostgres:\n  breaker: {<<: *b}\n")
	_, err = Load(p, env{}.get)
	got := strings.ReplaceAll(fmt.Sprint(err), p, "config.yaml")
	want := "config.yaml:2: redis.breaker.consecutive_failure: unknown field; did you mean consecutive_failures?\n" +
		"config.yaml:2: postgres.breaker.consecutive_failure: unknown field; did you mean consecutive_failures?"
	if got != want {
		t.Errorf("error =\n%s\nwant\n%s", got, want)
	}
}

// TestAliasBomb checks that merge keys nested to expand exponentially are
// refused with one clear error, not walked.
func TestAliasBomb(t *testing.T) {
	// Ten levels of ten merges each would visit 10^10 mappings.
	var b strings.Builder
	b.WriteString("log:\n  <<:\n    - &a0 {level: info}\n")
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "    - &a%d {<<: [", i)
		for j := 0; j < 10; j++ {
			fmt.Fprintf(&b, "*a%d, ", i-1)
		}
		b.WriteString("]}\n")
	}
	_, err := Parse("config.yaml", []byte(b.String()), env{}.get)
	var ce Errors
	if !errors.As(err, &ce) || len(ce) != 1 || ce[0].Msg != "the file expands to too many nodes through aliases" || ce[0].Line < 3 {
		t.Fatalf("err = %v", err)
	}
}

func TestNullKeepsDefault(t *testing.T) {
	p := writeConfig(t, "grpc:\n  addr:\nhttp:\n")
	c, err := Load(p, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPC.Addr != ":8081" || c.HTTP.Addr != ":8080" {
		t.Errorf("null did not keep defaults: %q %q", c.GRPC.Addr, c.HTTP.Addr)
	}
}

func TestEnvOverrides(t *testing.T) {
	p := writeConfig(t, "grpc: {addr: \":1\"}\nhttp: {addr: \":2\"}\nlimits:\n  path: file.yaml\n  domains: [{domain: d, descriptors: []}]\nlog: {level: info}\n")
	e := env{
		"SLUICE_GRPC_ADDR":    "127.0.0.1:7081",
		"SLUICE_HTTP_ADDR":    "127.0.0.1:7080",
		"SLUICE_REDIS_URL":    "redis://:pw@127.0.0.1:6390/2",
		"SLUICE_POSTGRES_DSN": "postgres://u:p@db/sluice",
		"SLUICE_ADMIN_TOKEN":  "s3cret-token-0123456789abcdef-0123",
		"SLUICE_LIMITS":       "/etc/sluice/limits",
		"SLUICE_LOG_LEVEL":    "debug",
	}
	c, err := Load(p, e.get)
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPC.Addr != e["SLUICE_GRPC_ADDR"] || c.HTTP.Addr != e["SLUICE_HTTP_ADDR"] || c.Redis.URL != e["SLUICE_REDIS_URL"] ||
		c.Postgres.DSN != e["SLUICE_POSTGRES_DSN"] || c.AdminToken != e["SLUICE_ADMIN_TOKEN"] || c.Log.Level != "debug" {
		t.Errorf("overrides not applied: %+v", c)
	}
	src := c.LimitsSource()
	if src.Path != "/etc/sluice/limits" || src.Inline != nil {
		t.Errorf("SLUICE_LIMITS should replace both path and inline domains: %+v", src)
	}

	// Without the env, the path is relative to the config file.
	c, err = Load(p, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	src = c.LimitsSource()
	if src.Path != filepath.Join(filepath.Dir(p), "file.yaml") || src.Inline == nil {
		t.Errorf("limits source = %+v", src)
	}
}

func TestEnvErrorsNameTheVariable(t *testing.T) {
	_, err := Load("", env{"SLUICE_LOG_LEVEL": "chatty", "SLUICE_REDIS_URL": "mysql://x", "SLUICE_ADMIN_TOKEN": "tok-123"}.get)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, w := range []string{`SLUICE_LOG_LEVEL: log.level: "chatty" is not one of`, "SLUICE_REDIS_URL: redis.url"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
	if strings.Contains(msg, "tok-123") {
		t.Errorf("error shows the admin token: %q", msg)
	}
}

// TestTLSPathsRelativeToConfigFile: relative TLS files are found next to
// the config file, as limits.path is, whatever the working directory.
func TestTLSPathsRelativeToConfigFile(t *testing.T) {
	dir := t.TempDir()
	limitertest.WriteKeyPair(t, dir)
	if err := os.Mkdir(filepath.Join(dir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	limitertest.WriteKeyPair(t, filepath.Join(dir, "certs"))
	abs := filepath.Join(dir, "cert.pem")
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(`grpc:
  tls: {cert_file: cert.pem, key_file: key.pem, client_ca_file: cert.pem}
http:
  tls: {cert_file: certs/cert.pem, key_file: certs/key.pem}
  admin_addr: "127.0.0.1:8082"
  admin_tls: {cert_file: `+abs+`, key_file: key.pem}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ got, want string }{
		{c.GRPC.TLS.CertFile, filepath.Join(dir, "cert.pem")},
		{c.GRPC.TLS.KeyFile, filepath.Join(dir, "key.pem")},
		{c.GRPC.TLS.ClientCAFile, filepath.Join(dir, "cert.pem")},
		{c.HTTP.TLS.CertFile, filepath.Join(dir, "certs/cert.pem")},
		{c.HTTP.TLS.KeyFile, filepath.Join(dir, "certs/key.pem")},
		{c.HTTP.AdminTLS.CertFile, abs},
		{c.HTTP.AdminTLS.KeyFile, filepath.Join(dir, "key.pem")},
	} {
		if f.got != f.want {
			t.Errorf("path %q, want %q", f.got, f.want)
		}
	}
}

// TestOneErrorFormat checks that config.yaml settings, its inline domains
// and a limit file report problems the same way: file:line: path: problem,
// the same YAML accepted (merge keys) and the same words for the same
// mistake.
func TestOneErrorFormat(t *testing.T) {
	dir := t.TempDir()
	domain := "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {<<: {unit: second}, requests_per_unit: 1, brust: 2}\n"
	file := filepath.Join(dir, "d.yaml")
	if err := os.WriteFile(file, []byte(domain), 0o644); err != nil {
		t.Fatal(err)
	}
	inline := "limits:\n  domains:\n    - " + strings.ReplaceAll(strings.TrimSuffix(domain, "\n"), "\n", "\n      ") + "\nlog: {<<: {level: info}, lvel: x}\n"
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(inline), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(cfgPath, env{}.get)
	if got, want := fmt.Sprint(err), cfgPath+":7: log.lvel: unknown field; did you mean level?"; got != want {
		t.Errorf("config error\n%s\nwant\n%s", got, want)
	}
	c, err := Parse(cfgPath, []byte(strings.ReplaceAll(inline, ", lvel: x", "")), env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.LimitsSource().LoadDomains()
	if got, want := fmt.Sprint(err), cfgPath+":6: limits.domains[0].descriptors[0].rate_limit.brust: unknown field; did you mean burst?"; got != want {
		t.Errorf("inline domain error\n%s\nwant\n%s", got, want)
	}
	_, err = Source{Path: file}.LoadDomains()
	if got, want := fmt.Sprint(err), file+":4: descriptors[0].rate_limit.brust: unknown field; did you mean burst?"; got != want {
		t.Errorf("limit file error\n%s\nwant\n%s", got, want)
	}
}

// TestChargeDefaults: limits.default_charge and limits.domain_defaults
// become the compile options; SLUICE_DEFAULT_CHARGE wins over the file;
// a bad mode is an error naming the field.
func TestChargeDefaults(t *testing.T) {
	file := []byte(`limits:
  default_charge: usage
  domain_defaults:
    edge: {charge: admission}
    llm: {}
`)
	c, err := Parse("config.yaml", file, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	opts := c.LimitsSource().CompileOptions()
	if opts.DefaultCharge != limiter.ChargeUsage || len(opts.DomainCharge) != 1 || opts.DomainCharge["edge"] != limiter.ChargeAdmission {
		t.Fatalf("compile options %+v", opts)
	}
	c, err = Parse("config.yaml", file, env{EnvDefaultCharge: "admission"}.get)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.LimitsSource().Charge; got != limiter.ChargeAdmission {
		t.Fatalf("with %s=admission: %v", EnvDefaultCharge, got)
	}
	if got := Default().Limits.DefaultCharge; got != "" {
		t.Fatalf("built-in default %q, want none (admission)", got)
	}
	for _, c := range []struct{ yaml, want string }{
		{"limits: {default_charge: later}\n", `config.yaml:1: limits.default_charge: "later" is not one of admission, usage`},
		{"limits:\n  domain_defaults:\n    llm: {charge: Usage2}\n", `config.yaml:3: limits.domain_defaults.llm.charge: "Usage2" is not one of admission, usage`},
		{"limits:\n  domain_defaults:\n    llm: {charges: usage}\n", `config.yaml:3: limits.domain_defaults.llm.charges: unknown field`},
		{"limits:\n  domain_defaults: [llm]\n", `config.yaml:2: limits.domain_defaults: must be a mapping`},
	} {
		_, err := Parse("config.yaml", []byte(c.yaml), env{}.get)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.yaml, err, c.want)
		}
	}
}

// TestXDSConfig: limits.xds is validated with the rest, each problem
// naming its field and line; a valid section is taken as written.
func TestXDSConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	body := "limits:\n  xds:\n    server: envoy-gateway\n    node_metadata: zone\n    tls: {ca_file: ca.crt}\n    backoff: {random_factor: 2}\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, env{}.get)
	for _, want := range []string{
		p + `:3: limits.xds.server: "envoy-gateway" is not host:port`,
		p + `:4: limits.xds.node_metadata: "zone" is not key=value`,
		p + `:5: limits.xds.tls.enabled: is false, but tls files are given`,
		p + `:6: limits.xds.backoff.random_factor: must be between 0 and 1, got 2`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nlacks %q", err, want)
		}
	}
	body = "limits:\n  xds: {server: 'cp:18001', node_id: rl, start_without_config: true, backoff: {initial: 1s, max: 2s}}\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	x := c.Limits.XDS
	if !x.Enabled() || x.NodeID != "rl" || !x.StartWithoutConfig || x.Backoff.Initial != time.Second ||
		x.Backoff.Max != 2*time.Second || x.Backoff.RandomFactor != 0.5 || !x.Backoff.Jitter {
		t.Errorf("limits.xds = %+v", x)
	}
}
