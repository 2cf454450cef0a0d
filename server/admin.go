package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// HandleAdmin adds a route to the admin API: pattern is a net/http
// ServeMux pattern under /admin/ ("PUT /admin/overrides"). Admin routes
// are served only when Options.AdminToken is set, and only to callers that
// send it as "Authorization: Bearer TOKEN"; others get 401 (no or wrong
// token) or, with no token configured, 404. Call it before Run.
func (s *Server) HandleAdmin(pattern string, h http.Handler) {
	s.admin.Handle(pattern, h)
}

// adminHandler guards the admin routes with the bearer token.
func (s *Server) adminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.adminOn {
			http.NotFound(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Compare hashes: equal length, so the time taken tells nothing
		// about the token, not even its length.
		sum := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.adminToken[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
			writeError(w, http.StatusUnauthorized, "admin: missing or wrong bearer token")
			return
		}
		s.admin.ServeHTTP(w, r)
	})
}

// handleBreakerReset serves POST /admin/breakers/{name}/reset: it closes
// the named breaker (redis, postgres) and answers its state.
func (s *Server) handleBreakerReset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	b, ok := s.breakers[name]
	if !ok {
		writeError(w, http.StatusNotFound, "breaker "+name+": no such breaker")
		return
	}
	from := b.State()
	b.Reset()
	s.log.Info("breaker reset by admin", "breaker", name, "from", from.String(), "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct { // best effort: the client may be gone
		Breaker string       `json:"breaker"`
		State   BreakerState `json:"state"`
	}{name, breakerState(b.Snapshot())})
}
