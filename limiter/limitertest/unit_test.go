//go:build !integration

package limitertest

import (
	"strings"
	"testing"
)

// TestUnitModeFailsLoudly: built without the integration tag, every helper
// that would start a server fails its test with a message that says how to
// run it, rather than finding a server some other way or skipping.
func TestUnitModeFailsLoudly(t *testing.T) {
	// Set so that a helper that still honoured them would not fail.
	t.Setenv(EnvRedisAddr, "127.0.0.1:1")
	t.Setenv(EnvPostgresDSN, "postgres://postgres@127.0.0.1:1/x")
	helpers := map[string]func(testing.TB){
		"StartRedis":         func(t testing.TB) { StartRedis(t) },
		"NewRedisServer":     func(t testing.TB) { NewRedisServer(t) },
		"StartPostgres":      func(t testing.TB) { StartPostgres(t) },
		"NewPostgresServer":  func(t testing.TB) { NewPostgresServer(t) },
		"StartRedisCluster":  func(t testing.TB) { StartRedisCluster(t, 3) },
		"StartRedisSentinel": func(t testing.TB) { StartRedisSentinel(t) },
	}
	for name, start := range helpers {
		t.Run(name, func(t *testing.T) {
			r := &recorder{TB: t}
			run(func() { start(r) })
			if !r.failed {
				t.Fatalf("%s did not fail the test", name)
			}
			if !strings.Contains(r.msg, UnitModeMessage) || !strings.Contains(r.msg, name) {
				t.Errorf("%s failed with %q, want the helper's name and %q", name, r.msg, UnitModeMessage)
			}
		})
	}
}
