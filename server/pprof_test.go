package server_test

import (
	"bytes"
	"io"
	"net/http"
	rpprof "runtime/pprof"
	"strings"
	"testing"
	"time"
)

// skipIfProfiling skips a test when the test binary itself is being CPU
// profiled (go test -cpuprofile): the server runs in this process, so
// every profile request would be 409.
func skipIfProfiling(t *testing.T) {
	t.Helper()
	if err := rpprof.StartCPUProfile(io.Discard); err != nil {
		t.Skipf("a CPU profile is already running: %v", err)
	}
	rpprof.StopCPUProfile()
}

// TestAdminProfiles: with the token, the profiles come in the formats the
// Go tools read; bad parameters and unknown names are refused by name.
func TestAdminProfiles(t *testing.T) {
	skipIfProfiling(t)

	h := overrideServer(t, refusingStore{t}, nil)
	for _, c := range []struct{ path, prefix string }{
		{"/admin/debug/pprof/heap", "\x1f\x8b"}, // gzipped profile proto
		{"/admin/debug/pprof/goroutine", "\x1f\x8b"},
		{"/admin/debug/pprof/profile?seconds=1", "\x1f\x8b"},
		{"/admin/debug/pprof/trace?seconds=1", "go 1."},
		{"/admin/debug/pprof/heap?debug=1", "heap profile: "},
		{"/admin/debug/pprof/goroutine?debug=2", "goroutine "},
	} {
		code, out := adminDo(t, h.base, "GET", c.path, bearer, "")
		if code != 200 || !strings.HasPrefix(out, c.prefix) {
			t.Errorf("GET %s = %d, %d bytes starting %q; want 200 starting %q", c.path, code, len(out), out[:min(len(out), 40)], c.prefix)
		}
	}
	for _, c := range []struct{ path, want string }{
		{"/admin/debug/pprof/profile?seconds=0", `seconds: \"0\" must be a whole number from 1 to 60`},
		{"/admin/debug/pprof/profile?seconds=61", `seconds: \"61\" must be a whole number from 1 to 60`},
		{"/admin/debug/pprof/trace?seconds=x", `seconds: \"x\" must be a whole number from 1 to 60`},
		{"/admin/debug/pprof/heap?seconds=1000000000", `seconds: \"1000000000\" must be a whole number from 1 to 60`},
	} {
		if code, out := adminDo(t, h.base, "GET", c.path, bearer, ""); code != 400 || !strings.Contains(out, c.want) {
			t.Errorf("GET %s = %d %s, want 400 with %q", c.path, code, out, c.want)
		}
	}
	// One CPU profile at a time: one already recording makes the request
	// a conflict, not a mixed profile.
	if err := rpprof.StartCPUProfile(io.Discard); err != nil {
		t.Fatal(err)
	}
	code, out := adminDo(t, h.base, "GET", "/admin/debug/pprof/profile?seconds=1", bearer, "")
	rpprof.StopCPUProfile()
	if code != 500 || !strings.Contains(out, "cpu profiling already in use") {
		t.Errorf("profile while another records = %d %.80q, want 500 saying so", code, out)
	}
	code, out = adminDo(t, h.base, "GET", "/admin/debug/pprof/hep", bearer, "")
	if code != 404 || !strings.Contains(out, "Unknown profile") {
		t.Errorf("unknown profile = %d %s, want 404", code, out)
	}
	code, out = adminDo(t, h.base, "GET", "/admin/debug/pprof/", bearer, "")
	if code != 200 || !strings.Contains(out, "goroutine") {
		t.Errorf("profile index = %d %.80q, want 200 listing the profiles", code, out)
	}
	if code, _ := adminDo(t, h.base, "GET", "/admin/debug/pprof/", "", ""); code != 401 {
		t.Errorf("profile index without a token = %d, want 401", code)
	}
}

// TestProfileEndsWithShutdown: a recording in progress stops when the
// server begins to stop, so it neither holds the shutdown for its timeout
// nor loses what it recorded.
func TestProfileEndsWithShutdown(t *testing.T) {
	skipIfProfiling(t)
	h := overrideServer(t, refusingStore{t}, nil)
	type result struct {
		code int
		body []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", h.base+"/admin/debug/pprof/profile?seconds=60", nil)
		req.Header.Set("Authorization", bearer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, b, err}
	}()
	time.Sleep(300 * time.Millisecond) // let it record
	h.stop()                           // drain_delay 0; shutdown timeout 5 s, after which connections are cut
	r := <-got
	if r.err != nil || r.code != 200 || !bytes.HasPrefix(r.body, []byte("\x1f\x8b")) {
		t.Errorf("profile during shutdown = %d, %d bytes, %v; want 200 and the profile", r.code, len(r.body), r.err)
	}
}
