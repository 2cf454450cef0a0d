package server

import (
	"context"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"
)

// maxProfileSeconds bounds a recording: a CPU profile, an execution trace
// or a delta profile (?seconds= on a named profile).
const maxProfileSeconds = 60

// handleProfileIndex serves GET /admin/debug/pprof/: net/http/pprof's
// index of the profiles, behind the admin guard like the profiles.
func (s *Server) handleProfileIndex(w http.ResponseWriter, r *http.Request) {
	pprof.Index(w, r)
}

// handleProfile serves GET /admin/debug/pprof/{name} with net/http/pprof:
// "profile" (CPU, ?seconds=N, default 30), "trace" (execution trace,
// ?seconds=N, default 1), or a runtime profile by name (heap, allocs,
// goroutine, ...; ?debug=1 or 2 for text, ?seconds=N for a delta). It is
// an admin route, so it needs the admin token. A recording is bounded to
// maxProfileSeconds, may outlast the HTTP write timeout, and stops early
// when the server begins to stop, so it never holds up a shutdown.
func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var handler http.Handler
	secs := 0
	switch name {
	case "profile":
		handler, secs = http.HandlerFunc(pprof.Profile), 30
	case "trace":
		handler, secs = http.HandlerFunc(pprof.Trace), 1
	default:
		handler = pprof.Handler(name)
	}
	if v := r.URL.Query().Get("seconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxProfileSeconds {
			writeError(w, http.StatusBadRequest, "seconds: "+strconv.Quote(v)+" must be a whole number from 1 to "+
				strconv.Itoa(maxProfileSeconds))
			return
		}
		secs = n
	}
	if secs == 0 { // a snapshot
		handler.ServeHTTP(w, r)
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Duration(secs)*time.Second + 10*time.Second))
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // owned by this call: ends with it
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	// net/http/pprof refuses a recording at least as long as the server's
	// WriteTimeout; the deadline was moved past this one above, so it is
	// shown a server without one.
	// A new variable: the goroutine above reads ctx.
	pctx := context.WithValue(ctx, http.ServerContextKey, &http.Server{})
	handler.ServeHTTP(w, r.WithContext(pctx))
}
