package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// newTestStore returns a Store on addr, closed when t ends.
func newTestStore(t testing.TB, addr string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.URL = "redis://" + addr
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
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
		{"sentinel", func(c *Config) { c.URL = "redis-sentinel://:pw@h1:26379,h2:26379/mymaster" }, "url", "Sentinel and Cluster are not supported yet"},
		{"cluster", func(c *Config) { c.URL = "redis-cluster://h1:7000" }, "url", "Sentinel and Cluster are not supported yet"},
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
		{"redis://:hunter2@localhost:6379", "redis://:xxxxx@localhost:6379"},
		{"rediss://app:hunter2@redis.example:6380/1", "rediss://app:xxxxx@redis.example:6380/1"},
		{"redis://app@localhost:6379", "redis://app@localhost:6379"},
		{"redis://localhost:6379?password=hunter2&db=1", "redis://localhost:6379?db=1&password=xxxxx"},
		{"redis://:hun ter%zz@host:1", "redis://xxxxx@host:1"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(RedactURL(tc.in), "hunter2") || strings.Contains(RedactURL(tc.in), "hun ter") {
			t.Errorf("RedactURL(%q) leaks the password", tc.in)
		}
	}
}

func TestModeAndURL(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URL = "redis://:hunter2@127.0.0.1:1"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Mode() != "single" {
		t.Errorf("Mode = %q", s.Mode())
	}
	if s.URL() != "redis://:xxxxx@127.0.0.1:1" {
		t.Errorf("URL = %q", s.URL())
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

// TestScriptMatchesDecide drives random calls through the script and
// through limiter.Decide and wants the same answers. Rates are slow (a
// token takes minutes or more), so the few milliseconds between the
// model's clock and the script's cannot change whole-token results; reset
// times may differ by about that much.
func TestScriptMatchesDecide(t *testing.T) {
	addr := limitertest.StartRedis(t)
	s := newTestStore(t, addr)
	rc := rawClient(t, addr)

	type keyRate struct {
		key  string
		rpu  uint32
		unit limiter.Unit
		caps []uint32 // capacities a call may use (a limit that changed)
	}
	seed := uint64(time.Now().UnixNano())
	if v := testingSeed(); v != 0 {
		seed = v
	}
	t.Logf("seed %d (set SLUICE_TEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	calls := 3000
	if testing.Short() {
		calls = 500
	}
	var m model
	var maxWindow int64
	// Keys persist across rounds of one epoch so buckets accumulate debt.
	var pool []keyRate
	newPool := func() {
		pool = []keyRate{
			{uniqueKey("a"), 1, limiter.Hour, []uint32{3, 3, 3, 1}},
			{uniqueKey("b"), 7, limiter.Hour, []uint32{5, 5, 2}},
			{uniqueKey("c"), 2, limiter.Day, []uint32{4}},
			{uniqueKey("d"), 1, limiter.Day, []uint32{1}},
			{uniqueKey("e"), 10, limiter.Week, []uint32{6, 6, 6, 3}},
		}
		m = model{}
	}
	newPool()
	var denied, allowedN, refunds int
	var history []string
	defer func() {
		if t.Failed() {
			for _, h := range history[max(0, len(history)-12):] {
				t.Log(h)
			}
		}
	}()
	for round := 0; round < calls; round++ {
		if round%100 == 99 {
			newPool()
		}
		n := 1 + rng.IntN(5)
		reqs := make([]limiter.BucketRequest, n)
		for i := range reqs {
			kr := pool[rng.IntN(len(pool))]
			if i > 0 && rng.IntN(4) == 0 {
				// the same key again in this call
				reqs[i] = reqs[rng.IntN(i)]
			} else {
				rt := mustRate(t, kr.rpu, kr.unit, kr.caps[rng.IntN(len(kr.caps))])
				reqs[i] = limiter.BucketRequest{Key: kr.key, Rate: rt}
			}
			switch x := rng.IntN(10); {
			case x < 5:
				reqs[i].Op = limiter.OpTake
			case x < 7:
				reqs[i].Op = limiter.OpShadowTake
			case x < 8:
				reqs[i].Op = limiter.OpPeek
			default:
				reqs[i].Op = limiter.OpRefund
				refunds++
			}
			switch x := rng.IntN(20); {
			case x == 0:
				reqs[i].Cost = 0
			case x == 1:
				reqs[i].Cost = reqs[i].Rate.Cap + 1 + uint64(rng.IntN(3))
			case x == 2:
				reqs[i].Cost = 1 << 40
			default:
				reqs[i].Cost = 1 + uint64(rng.IntN(int(reqs[i].Rate.Cap)))
			}
		}

		t0 := redisNow(t, rc)
		got := make([]limiter.BucketResult, n)
		gotOK, err := s.Apply(context.Background(), reqs, got)
		if err != nil {
			t.Fatalf("round %d: Apply(%+v): %v", round, reqs, err)
		}
		t1 := redisNow(t, rc)
		maxWindow = max(maxWindow, t1-t0)

		want := make([]limiter.BucketResult, n)
		wantOK := m.apply(t0, reqs, want)
		history = append(history, fmt.Sprintf("round %d at %d: reqs %+v\n  got %v %+v\n  want %v %+v", round, t0, reqs, gotOK, got, wantOK, want))
		if gotOK != wantOK {
			t.Fatalf("round %d: allowed = %v, model %v\nreqs %+v\ngot  %+v\nwant %+v", round, gotOK, wantOK, reqs, got, want)
		}
		if gotOK {
			allowedN++
		} else {
			denied++
		}
		tol := 3*maxWindow + 10
		for i := range reqs {
			g, w := got[i], want[i]
			if g.OK != w.OK || g.Remaining != w.Remaining || abs(g.ResetMicros-w.ResetMicros) > tol {
				t.Fatalf("round %d: bucket %d: script %+v, model %+v (reset tolerance %dµs)\nreqs %+v\ngot  %+v\nwant %+v",
					round, i, g, w, tol, reqs, got, want)
			}
		}
	}
	t.Logf("%d calls: %d allowed, %d denied, %d refunds; widest TIME window %dµs", calls, allowedN, denied, refunds, maxWindow)
	if allowedN == 0 || denied == 0 {
		t.Fatalf("the random calls did not exercise both outcomes")
	}
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
