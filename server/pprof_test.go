package server_test

import (
	"io"
	rpprof "runtime/pprof"
	"strings"
	"testing"
)

// TestAdminProfiles: with the token, the profiles come in pprof's gzipped
// format; bad durations and unknown names are refused by name.
func TestAdminProfiles(t *testing.T) {
	h := overrideServer(t, refusingStore{t}, nil)
	for _, path := range []string{"/admin/debug/pprof/heap", "/admin/debug/pprof/goroutine", "/admin/debug/pprof/profile?seconds=1"} {
		code, out := adminDo(t, h.base, "GET", path, bearer, "")
		if code != 200 || !strings.HasPrefix(out, "\x1f\x8b") {
			t.Errorf("GET %s = %d, %d bytes starting %q; want 200 and a gzipped profile", path, code, len(out), out[:min(len(out), 40)])
		}
	}
	for _, c := range []struct{ path, want string }{
		{"/admin/debug/pprof/profile?seconds=0", `seconds: \"0\" must be a whole number from 1 to 60`},
		{"/admin/debug/pprof/profile?seconds=61", `seconds: \"61\" must be a whole number from 1 to 60`},
		{"/admin/debug/pprof/trace?seconds=x", `seconds: \"x\" must be a whole number from 1 to 60`},
	} {
		if code, out := adminDo(t, h.base, "GET", c.path, bearer, ""); code != 400 || !strings.Contains(out, c.want) {
			t.Errorf("GET %s = %d %s, want 400 with %q", c.path, code, out, c.want)
		}
	}
	// One CPU profile at a time: one already recording (the server runs in
	// this process) makes the request a conflict, not a mixed profile.
	if err := rpprof.StartCPUProfile(io.Discard); err != nil {
		t.Fatal(err)
	}
	code, out := adminDo(t, h.base, "GET", "/admin/debug/pprof/profile?seconds=1", bearer, "")
	rpprof.StopCPUProfile()
	if code != 409 || !strings.Contains(out, "profile: cpu profiling already in use") {
		t.Errorf("profile while another records = %d %.80q, want 409", code, out)
	}
	code, out = adminDo(t, h.base, "GET", "/admin/debug/pprof/hep", bearer, "")
	if code != 404 || !strings.Contains(out, `profile \"hep\": no such profile`) || !strings.Contains(out, "heap") {
		t.Errorf("unknown profile = %d %s, want 404 naming it and the known ones", code, out)
	}
}
