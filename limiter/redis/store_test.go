package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
)

// newTestStore returns a Store on addr, closed when t ends, with batching
// on unless batching[0] says otherwise.
func newTestStore(t testing.TB, addr string, batching ...string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.URL = "redis://" + addr
	if len(batching) > 0 {
		cfg.Batching = batching[0]
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// bothModes runs test with batching on and off.
func bothModes(t *testing.T, test func(t *testing.T, batching string)) {
	for _, b := range []string{"on", "off"} {
		t.Run("batching="+b, func(t *testing.T) { test(t, b) })
	}
}

// rawClient is a plain client for looking at what the script left behind.
func rawClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func redisNow(t testing.TB, c *goredis.Client) int64 {
	t.Helper()
	tm, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	return tm.UnixMicro()
}

func mustRate(t testing.TB, rpu uint32, unit limiter.Unit, burst uint32) limiter.Rate {
	t.Helper()
	rl := limiter.RateLimit{RequestsPerUnit: rpu, Unit: unit, Burst: burst}
	r, err := rl.Rate()
	if err != nil {
		t.Fatalf("rate %d/%v burst %d: %v", rpu, unit, burst, err)
	}
	return r
}

var keySeq atomic.Int64

// uniqueKey is a key no other test uses, so tests can share a server.
func uniqueKey(name string) string {
	return fmt.Sprintf("test:%s:%d:%d", name, time.Now().UnixNano(), keySeq.Add(1))
}

func apply(t testing.TB, s *Store, reqs ...limiter.BucketRequest) (bool, []limiter.BucketResult) {
	t.Helper()
	res := make([]limiter.BucketResult, len(reqs))
	ok, err := s.Apply(context.Background(), reqs, res)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return ok, res
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	cases := []struct {
		name  string
		edit  func(*Config)
		field string // "" when valid
		msg   string // part of the message
	}{
		{"default", func(c *Config) {}, "", ""},
		{"rediss", func(c *Config) { c.URL = "rediss://user:pw@redis.example:6380/2" }, "", ""},
		{"unix", func(c *Config) { c.URL = "unix:///run/redis.sock" }, "", ""},
		{"tls files", func(c *Config) {
			c.URL = "rediss://h:1"
			c.TLS = TLSConfig{CertFile: "c.pem", KeyFile: "k.pem", CAFile: "ca.pem", ServerName: "h"}
		}, "", ""},
		{"empty url", func(c *Config) { c.URL = "" }, "url", "required"},
		{"no scheme", func(c *Config) { c.URL = "localhost:6379" }, "url", "scheme"},
		{"unknown scheme", func(c *Config) { c.URL = "http://localhost:6379" }, "url", `unknown scheme "http"`},
		{"sentinel", func(c *Config) { c.URL = "redis-sentinel://:pw@h1:26379,h2:26379/mymaster" }, "", ""},
		{"sentinel db", func(c *Config) { c.URL = "redis+sentinel://h1:26379/mymaster/2?sentinel_password=x" }, "", ""},
		{"sentinel tls", func(c *Config) { c.URL = "rediss+sentinel://h1:26379/m"; c.TLS.CAFile = "ca.pem" }, "", ""},
		{"cluster", func(c *Config) { c.URL = "redis-cluster://h1:7000" }, "", ""},
		{"cluster hosts", func(c *Config) { c.URL = "redis+cluster://u:secret@h1:7000,h2:7001,[::1]:7002" }, "", ""},
		{"sentinel without master", func(c *Config) { c.URL = "redis+sentinel://:secret@h1:26379" }, "url", "no master name"},
		{"sentinel bad db", func(c *Config) { c.URL = "redis+sentinel://h1:26379/m/x" }, "url", "database"},
		{"sentinel no host", func(c *Config) { c.URL = "redis+sentinel:///m" }, "url", "no host"},
		{"cluster bad host", func(c *Config) { c.URL = "redis+cluster://:secret@h1:7000,h2" }, "url", "not host:port"},
		{"cluster bad port", func(c *Config) { c.URL = "redis+cluster://h1:99999" }, "url", "bad port"},
		{"cluster path", func(c *Config) { c.URL = "redis+cluster://h1:7000/1" }, "url", "no path"},
		{"cluster sentinel param", func(c *Config) { c.URL = "redis+cluster://h1:7000?sentinel_password=secret" }, "url", "sentinel URLs only"},
		{"unknown param", func(c *Config) { c.URL = "redis+sentinel://h1:7000/m?foo=1" }, "url", `unknown parameter "foo"`},
		{"batching", func(c *Config) { c.Batching = "sometimes" }, "batching", "on or off"},
		{"batching off", func(c *Config) { c.Batching = "off" }, "", ""},
		{"max batch", func(c *Config) { c.MaxBatch = -1 }, "max_batch", "negative"},
		{"pipelines", func(c *Config) { c.Pipelines = -2 }, "pipelines", "negative"},
		{"no host", func(c *Config) { c.URL = "redis://" }, "url", "no host"},
		{"bad db", func(c *Config) { c.URL = "redis://:secret@h:6379/abc" }, "url", "database"},
		{"bad url", func(c *Config) { c.URL = "redis://:sec ret@h:6379/%zz" }, "url", "cannot parse"},
		{"pool size", func(c *Config) { c.PoolSize = -1 }, "pool_size", "negative"},
		{"dial timeout", func(c *Config) { c.DialTimeout = -time.Second }, "dial_timeout", "negative"},
		{"read timeout", func(c *Config) { c.ReadTimeout = -time.Second }, "read_timeout", "negative"},
		{"write timeout", func(c *Config) { c.WriteTimeout = -time.Second }, "write_timeout", "negative"},
		{"cert without key", func(c *Config) { c.URL = "rediss://h:1"; c.TLS.CertFile = "c.pem" }, "tls.key_file", "required"},
		{"key without cert", func(c *Config) { c.URL = "rediss://h:1"; c.TLS.KeyFile = "k.pem" }, "tls.cert_file", "required"},
		{"tls without rediss", func(c *Config) { c.URL = "redis://:secret@h:1"; c.TLS.CAFile = "ca.pem" }, "tls", "rediss://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate = %v, want a ConfigError for %s", err, tc.field)
			}
			if ce.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate = %q (field %s), want field %s and %q", err, ce.Field, tc.field, tc.msg)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "sec ret") {
				t.Fatalf("error leaks the password: %v", err)
			}
			if _, err := New(c); err == nil {
				t.Fatalf("New accepted an invalid config")
			}
		})
	}
}

func TestNewReadsTLSFiles(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URL = "rediss://localhost:6380"
	cfg.TLS.CAFile = t.TempDir() + "/missing.pem"
	_, err := New(cfg)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "tls.ca_file" {
		t.Fatalf("New = %v, want a tls.ca_file error", err)
	}
}

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"redis://localhost:6379/0", "redis://localhost:6379/0"},
		{"redis://:hunter2@localhost:6379", "redis://:xxxxx@localhost:6379/0"},
		{"rediss://app:hunter2@redis.example:6380/1", "rediss://app:xxxxx@redis.example:6380/1"},
		{"redis://app@localhost:6379", "redis://app@localhost:6379/0"},
		// go-redis takes no password parameter: the URL does not parse.
		{"redis://localhost:6379?password=hunter2&db=1", "redis://localhost:6379"},
		{"redis://:hun ter%zz@host:1", "redis://host:1"},
		{"redis+sentinel://:hunter2@h1:1,h2:2/m", "redis+sentinel://:xxxxx@h1:1,h2:2/m"},
		{"redis+sentinel://h1:1/m?sentinel_password=hunter2", "redis+sentinel://h1:1/m?sentinel_password=xxxxx"},
		{"redis-cluster://app:hunter2@h1:1,h2:2", "redis-cluster://app:xxxxx@h1:1,h2:2"},
		// A '/' in the password: the URL does not parse, and only the
		// host past the '@' is shown.
		{"redis+sentinel://user:hun/ter2@127.0.0.1:26379/m", "redis+sentinel://127.0.0.1:26379"},
		{"redis+cluster://user:hun/ter2@h1:1,h2:2", "redis+cluster://h1:1,h2:2"},
		{"redis://user:hun/ter2@h:6379", "redis://h:6379"},
		{"redis://user:hun?ter2@h:6379", "redis://"},
		{"redis://user:hunter2@h:99999", "redis://h:99999"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := RedactURL(tc.in); strings.Contains(got, "hunter2") || strings.Contains(got, "hun ter") || strings.Contains(got, "ter2") {
			t.Errorf("RedactURL(%q) leaks the password", tc.in)
		}
	}
}

func TestModeAndURL(t *testing.T) {
	for _, tc := range []struct{ url, mode, redacted string }{
		{"redis://:hunter2@127.0.0.1:1", ModeSingle, "redis://:xxxxx@127.0.0.1:1/0"},
		{"redis+sentinel://:hunter2@127.0.0.1:1,127.0.0.1:2/mymaster", ModeSentinel, "redis+sentinel://:xxxxx@127.0.0.1:1,127.0.0.1:2/mymaster"},
		{"redis-cluster://:hunter2@127.0.0.1:1", ModeCluster, "redis-cluster://:xxxxx@127.0.0.1:1"},
	} {
		cfg := DefaultConfig()
		cfg.URL = tc.url
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s.Mode() != tc.mode {
			t.Errorf("%s: Mode = %q, want %q", tc.redacted, s.Mode(), tc.mode)
		}
		if s.URL() != tc.redacted {
			t.Errorf("URL = %q, want %q", s.URL(), tc.redacted)
		}
		s.Close()
	}
}

// model is limiter.Decide over buckets kept in a map, the way the memory
// store keeps them: what the script must agree with.
type model map[string]limiter.Stored

func (m model) apply(now int64, reqs []limiter.BucketRequest, res []limiter.BucketResult) bool {
	slot := make([]int, len(reqs))
	debt := make([]int64, len(reqs))
	for i := range reqs {
		slot[i] = i
		for j := 0; j < i; j++ {
			if reqs[j].Key == reqs[i].Key {
				slot[i] = slot[j]
				break
			}
		}
		if slot[i] == i {
			if st, ok := m[reqs[i].Key]; ok {
				debt[i] = st.Debt(now, reqs[i].Rate)
			}
		}
	}
	before := append([]int64(nil), debt...)
	allowed := limiter.Decide(reqs, slot, debt, res)
	for i := range reqs {
		if slot[i] != i || debt[i] == before[i] {
			continue // a bucket is written only when its debt changed
		}
		if debt[i] > 0 {
			m[reqs[i].Key] = limiter.Encode(debt[i], now, reqs[i].Rate)
		} else {
			delete(m, reqs[i].Key)
		}
	}
	return allowed
}

func testingSeed() uint64 {
	v, _ := strconv.ParseUint(strings.TrimSpace(os.Getenv("SLUICE_TEST_SEED")), 10, 64)
	return v
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// sdsAlloc is the jemalloc size class holding an sds string of n bytes
// (1-byte type-8 header for n < 32, else 3 bytes, plus the NUL).
func sdsAlloc(n int) int {
	size := n + 1 + 3
	if n < 32 {
		size = n + 1 + 1
	}
	for _, c := range []int{8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256} {
		if size <= c {
			return c
		}
	}
	return size
}
