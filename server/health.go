package server

import (
	"encoding/json"
	"math"
	"net/http"
	"time"

	"github.com/sluice-rl/sluice/breaker"
)

// Health statuses of /health/detailed.
const (
	StatusPass = "pass" // every backend answers, every breaker is closed
	StatusWarn = "warn" // decisions are made, but something is degraded
	StatusFail = "fail" // no decision can be made
)

// DetailedHealth is the body of GET /health/detailed.
type DetailedHealth struct {
	Status      string                  `json:"status"`
	Version     string                  `json:"version"`
	UptimeS     int64                   `json:"uptime_s"`
	Config      ConfigHealth            `json:"config"`
	Checks      map[string]CheckHealth  `json:"checks"`
	Breakers    map[string]BreakerState `json:"breakers"`
	FailureMode *string                 `json:"failure_mode"`
}

// ConfigHealth is the configuration part of DetailedHealth.
type ConfigHealth struct {
	Version   string     `json:"version"`
	LoadedAt  *time.Time `json:"loaded_at"`
	LastError *string    `json:"last_error"`
	// Source is where the limits come from (file, xds, file+xds).
	Source string `json:"source,omitempty"`
	// XDSVersion is the version_info of the xDS config in force.
	XDSVersion string `json:"xds_version,omitempty"`
}

// CheckHealth is one backend's last check.
type CheckHealth struct {
	// Status is fail while the check fails, warn while it passes but the
	// backend's breaker is not closed, else pass.
	Status    string     `json:"status"`
	LatencyMs *float64   `json:"latency_ms"`
	Mode      string     `json:"mode,omitempty"`
	Address   string     `json:"address,omitempty"`
	Breaker   string     `json:"breaker,omitempty"`
	Overrides *int       `json:"overrides,omitempty"`
	LastError *string    `json:"last_error"`
	CheckedAt *time.Time `json:"checked_at"`
}

// BreakerState is one circuit breaker's state.
type BreakerState struct {
	State       string     `json:"state"`
	Failures    int        `json:"failures"`
	OpenedAt    *time.Time `json:"opened_at"`
	NextProbeAt *time.Time `json:"next_probe_at"`
}

// Detailed reports the server's health from the cached check results. It
// never calls a backend.
func (s *Server) Detailed() DetailedHealth {
	h := DetailedHealth{
		Status:   StatusPass,
		Version:  s.version,
		UptimeS:  int64(time.Since(s.started) / time.Second),
		Checks:   map[string]CheckHealth{},
		Breakers: map[string]BreakerState{},
	}
	if s.failureMode != "" {
		m := s.failureMode
		h.FailureMode = &m
	}
	warn := false

	var cs ConfigStatus
	if s.configFn != nil {
		cs = s.configFn()
	} else if lim := s.lim.Limits(); lim != nil {
		cs = ConfigStatus{Version: lim.Version(), LoadedAt: s.started}
	}
	h.Config.Version = cs.Version
	h.Config.LoadedAt = timePtr(cs.LoadedAt)
	h.Config.Source, h.Config.XDSVersion = cs.Source, cs.XDSVersion
	if cs.LastError != nil {
		h.Config.LastError = strPtr(cs.LastError.Error())
		warn = true
	}

	for name, b := range s.breakers {
		bs := breakerState(b.Snapshot())
		h.Breakers[name] = bs
		if bs.State != breaker.StateClosed.String() {
			warn = true
		}
	}

	for i := range s.checks {
		c := &s.checks[i]
		ch := CheckHealth{Mode: c.Mode, Address: c.Address}
		if c.Breaker != nil {
			ch.Breaker = h.Breakers[c.Name].State
		}
		if c.Overrides != nil {
			n := c.Overrides()
			ch.Overrides = &n
		}
		r := s.results[i].Load()
		switch {
		case r == nil:
			ch.Status = StatusWarn
			ch.LastError = strPtr("not checked yet")
		case r.err != nil && c.WarnOnly:
			ch.Status = StatusWarn
			ch.LastError = strPtr(r.err.Error())
		case r.err != nil:
			ch.Status = StatusFail
			ch.LastError = strPtr(r.err.Error())
		case c.Breaker != nil && ch.Breaker != breaker.StateClosed.String():
			ch.Status = StatusWarn
		default:
			ch.Status = StatusPass
		}
		if r != nil {
			ms := math.Round(float64(r.latency)/float64(time.Millisecond)*1000) / 1000
			ch.LatencyMs = &ms
			ch.CheckedAt = timePtr(r.at)
		}
		if ch.Status != StatusPass {
			warn = true
		}
		h.Checks[c.Name] = ch
	}

	switch {
	case s.decidable() != nil:
		h.Status = StatusFail
	case warn:
		h.Status = StatusWarn
	}
	return h
}

func breakerState(sn breaker.Snapshot) BreakerState {
	return BreakerState{
		State:       sn.State.String(),
		Failures:    sn.ConsecutiveFailures,
		OpenedAt:    timePtr(sn.OpenedAt),
		NextProbeAt: timePtr(sn.NextProbeAt),
	}
}

// handleDetailed serves GET /health/detailed: 200 for pass and warn, 503
// for fail, with the DetailedHealth JSON either way.
func (s *Server) handleDetailed(w http.ResponseWriter, _ *http.Request) {
	h := s.Detailed()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if h.Status == StatusFail {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(h) // best effort: the client may be gone
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func strPtr(s string) *string { return &s }
