package server

import (
	"io"
	"net/http"
	"net/http/pprof"
	rpprof "runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxProfileSeconds bounds a CPU profile or execution trace request.
const maxProfileSeconds = 60

// handleProfile serves GET /admin/debug/pprof/{name}: "profile" (CPU, for
// ?seconds=N, default 30), "trace" (execution trace, ?seconds=N, default
// 1), or a runtime profile by name (heap, allocs, goroutine, mutex, block,
// threadcreate), in the format `go tool pprof` reads. It is an admin route,
// so it needs the admin token.
func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if v := r.URL.Query().Get("seconds"); v != "" && (name == "profile" || name == "trace") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxProfileSeconds {
			writeError(w, http.StatusBadRequest, "seconds: "+strconv.Quote(v)+" must be a whole number from 1 to "+
				strconv.Itoa(maxProfileSeconds))
			return
		}
	}
	switch name {
	case "profile":
		record(w, r, 30, rpprof.StartCPUProfile, rpprof.StopCPUProfile)
	case "trace":
		record(w, r, 1, trace.Start, trace.Stop)
	default:
		if rpprof.Lookup(name) == nil {
			writeError(w, http.StatusNotFound, "profile "+strconv.Quote(name)+": no such profile (known: "+
				strings.Join(profileNames(), ", ")+")")
			return
		}
		pprof.Handler(name).ServeHTTP(w, r)
	}
}

// record runs start for the request's seconds (or def), writing to w,
// then stop. The write deadline is moved past the recording, which may be
// longer than the HTTP server's write timeout.
func record(w http.ResponseWriter, r *http.Request, def int, start func(io.Writer) error, stop func()) {
	secs := def
	if v := r.URL.Query().Get("seconds"); v != "" {
		secs, _ = strconv.Atoi(v) // checked by handleProfile
	}
	d := time.Duration(secs) * time.Second
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + 10*time.Second))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+r.PathValue("name")+`"`)
	if err := start(w); err != nil {
		// Another recording is running.
		writeError(w, http.StatusConflict, r.PathValue("name")+": "+err.Error())
		return
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-r.Context().Done():
		t.Stop()
	}
	stop()
}

// profileNames lists what handleProfile serves.
func profileNames() []string {
	names := []string{"profile", "trace"}
	for _, p := range rpprof.Profiles() {
		names = append(names, p.Name())
	}
	slices.Sort(names)
	return names
}
