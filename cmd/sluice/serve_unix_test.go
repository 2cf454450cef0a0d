//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadOnSIGHUP: with watching off, only SIGHUP reloads the limits,
// and a bad file on a signal keeps the running ones. (Unix only: there is
// no SIGHUP on Windows.)
func TestReloadOnSIGHUP(t *testing.T) {
	cfg, limits := testConfigFile(t, "")
	// Watching off: only the signal reloads.
	data, _ := os.ReadFile(cfg)
	writeFile(t, cfg, strings.Replace(string(data), "watch_interval: 20ms", "watch: false", 1))
	r := startServe(t, serveWith(cfg, env{}.get))
	writeFile(t, filepath.Join(limits, "api.yaml"), limitFile("40"))
	time.Sleep(100 * time.Millisecond)
	if got := r.limitOf("api", "tenant", "t"); got != 10 {
		t.Fatalf("limit changed without a signal: %d", got)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.waitLimit("api", "tenant", "t", 40)
	r.waitLog("reason=signal")

	writeFile(t, filepath.Join(limits, "api.yaml"), limitFile("oops"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.waitLog("reload failed")
	if got := r.limitOf("api", "tenant", "t"); got != 40 {
		t.Errorf("limit after a bad reload = %d, want 40", got)
	}
}
