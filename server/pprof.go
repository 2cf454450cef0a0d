package server

import (
	"io"
	"net/http"
	"runtime/pprof"
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
// 1), or a runtime profile by name (heap, allocs, goroutine, threadcreate;
// ?debug=1 or 2 for text), in the formats `go tool pprof` and `go tool
// trace` read. It is an admin route, so it needs the admin token.
func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	q := r.URL.Query()
	switch name {
	case "profile", "trace":
		secs := 30
		if name == "trace" {
			secs = 1
		}
		if v := q.Get("seconds"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxProfileSeconds {
				writeError(w, http.StatusBadRequest, "seconds: "+strconv.Quote(v)+" must be a whole number from 1 to "+
					strconv.Itoa(maxProfileSeconds))
				return
			}
			secs = n
		}
		if name == "profile" {
			s.record(w, r, time.Duration(secs)*time.Second, pprof.StartCPUProfile, pprof.StopCPUProfile)
		} else {
			s.record(w, r, time.Duration(secs)*time.Second, trace.Start, trace.Stop)
		}
		return
	}
	p := pprof.Lookup(name)
	if p == nil {
		writeError(w, http.StatusNotFound, "profile "+strconv.Quote(name)+": no such profile (known: "+
			strings.Join(profileNames(), ", ")+")")
		return
	}
	if q.Has("seconds") {
		writeError(w, http.StatusBadRequest, "seconds: only for profile and trace; "+name+" is a snapshot")
		return
	}
	debug := 0
	if v := q.Get("debug"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 2 {
			writeError(w, http.StatusBadRequest, "debug: "+strconv.Quote(v)+" must be 0, 1 or 2")
			return
		}
		debug = n
	}
	if debug > 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	}
	_ = p.WriteTo(w, debug) // a failed write is the client gone
}

// record runs start for d, writing to w, then stop; it stops early when
// the client goes or the server begins to stop. The write deadline is
// moved past the recording, which may outlast the HTTP write timeout.
func (s *Server) record(w http.ResponseWriter, r *http.Request, d time.Duration, start func(io.Writer) error, stop func()) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + 10*time.Second))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+r.PathValue("name")+`"`)
	if err := start(w); err != nil {
		// Another recording is running; nothing was written yet.
		w.Header().Del("Content-Disposition")
		writeError(w, http.StatusConflict, r.PathValue("name")+": "+err.Error())
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	case <-s.stopping:
	}
	stop()
}

// profileNames lists what handleProfile serves.
func profileNames() []string {
	names := []string{"profile", "trace"}
	for _, p := range pprof.Profiles() {
		names = append(names, p.Name())
	}
	slices.Sort(names)
	return names
}
