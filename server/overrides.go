package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
)

// OverrideStore keeps the overrides; limiter/postgres.DB is one. A
// missing id is limiter.ErrOverrideNotFound; data the store refuses is a
// *limiter.OverrideRefused.
type OverrideStore interface {
	PutOverride(ctx context.Context, o limiter.Override, actor string) (limiter.Override, bool, error)
	GetOverride(ctx context.Context, id int64) (limiter.Override, error)
	ListOverrides(ctx context.Context) ([]limiter.Override, error)
	DeleteOverride(ctx context.Context, id int64, actor string) (limiter.Override, error)
	OverrideHistory(ctx context.Context, id int64) ([]limiter.OverrideChange, error)
}

// OverridesOptions are what the override routes of the admin API use.
type OverridesOptions struct {
	Store OverrideStore
	// Breaker guards Store (the Postgres breaker); nil for none. While it
	// is open the routes answer 503 at once.
	Breaker *breaker.Breaker
	// Changed, when set, is called after a change is stored, with the
	// admin request's context, so this replica applies it without waiting
	// for the notification; the answer is sent when Changed returns.
	Changed func(ctx context.Context)
}

// ActorHeader names the caller of an admin change, recorded in history.
const ActorHeader = "X-Sluice-Actor"

// DefaultActor is recorded when a change comes without ActorHeader.
const DefaultActor = "admin"

// maxActorLen bounds ActorHeader's value.
const maxActorLen = 256

// HandleOverrides adds the override routes to the admin API:
//
//	PUT    /admin/overrides               create or replace the override for a path
//	GET    /admin/overrides               {"overrides": [...]}
//	GET    /admin/overrides/{id}          one override
//	DELETE /admin/overrides/{id}          204
//	GET    /admin/overrides/{id}/history  {"history": [...]}
//
// A bad body is 400 naming the field, an unknown id 404, and Postgres down
// (or its breaker open) 503 with the breaker's state; decisions are not
// affected. Call it before Run.
func (s *Server) HandleOverrides(o OverridesOptions) {
	a := &overrideAdmin{s: s, opts: o}
	s.HandleAdmin("PUT /admin/overrides", http.HandlerFunc(a.put))
	s.HandleAdmin("GET /admin/overrides", http.HandlerFunc(a.list))
	s.HandleAdmin("GET /admin/overrides/{id}", http.HandlerFunc(a.get))
	s.HandleAdmin("DELETE /admin/overrides/{id}", http.HandlerFunc(a.delete))
	s.HandleAdmin("GET /admin/overrides/{id}/history", http.HandlerFunc(a.history))
}

type overrideAdmin struct {
	s    *Server
	opts OverridesOptions
}

// overrideBody is the body of PUT /admin/overrides.
type overrideBody struct {
	Domain      string                  `json:"domain"`
	Descriptors []limiter.OverrideEntry `json:"descriptors"`
	RateLimit   json.RawMessage         `json:"rate_limit"`
	Reason      string                  `json:"reason"`
	ExpiresAt   *time.Time              `json:"expires_at"`
}

const overrideBodyFields = "domain, descriptors, rate_limit, reason, expires_at"

// parseOverride decodes and checks a PUT body; the error is an
// *limiter.OverrideError naming the field.
func parseOverride(body []byte, b limiter.Bounds, now time.Time) (limiter.Override, error) {
	var in overrideBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return limiter.Override{}, decodeError(err)
	}
	if dec.More() {
		return limiter.Override{}, &limiter.OverrideError{Field: "body", Msg: "holds more than one JSON object"}
	}
	if err := checkOverrideText(body); err != nil {
		return limiter.Override{}, err
	}
	o := limiter.Override{Domain: in.Domain, Descriptors: in.Descriptors, Reason: in.Reason}
	if in.ExpiresAt != nil {
		o.ExpiresAt = in.ExpiresAt.UTC()
	}
	raw := bytes.TrimSpace(in.RateLimit)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		// Checked after the fields before it in the body, so a missing
		// domain is named first.
		if err := o.Validate(b, now); err != nil {
			var oe *limiter.OverrideError
			if errors.As(err, &oe) && !strings.HasPrefix(oe.Field, "rate_limit") {
				return o, err
			}
		}
		return o, &limiter.OverrideError{Field: "rate_limit", Msg: `required: {"unit": "second", "requests_per_unit": 10} (0 is a ban), or {"unlimited": true}`}
	}
	rl, err := limiter.ParseRateLimitJSON(raw)
	if err != nil {
		return o, err
	}
	o.RateLimit = *rl
	if err := o.Validate(b, now); err != nil {
		return o, err
	}
	return o, nil
}

// decodeError names the field a JSON decoding error is about.
func decodeError(err error) error {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
		timeErr   *time.ParseError
		oe        *limiter.OverrideError
	)
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return &limiter.OverrideError{Field: field, Msg: fmt.Sprintf("must be %s, not a JSON %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return &limiter.OverrideError{Field: "body", Msg: fmt.Sprintf("invalid JSON at byte %d: %v", syntaxErr.Offset, err)}
	case errors.As(err, &timeErr):
		return &limiter.OverrideError{Field: "expires_at", Msg: "must be an RFC 3339 time such as 2026-12-01T00:00:00Z"}
	case errors.Is(err, io.EOF):
		return &limiter.OverrideError{Field: "body", Msg: "empty; send the override as JSON"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &limiter.OverrideError{Field: "body", Msg: "truncated JSON"}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if u, err := strconv.Unquote(name); err == nil {
			name = u
		}
		if name == "" {
			name = `""` // an empty member name
		}
		return &limiter.OverrideError{Field: name, Msg: "unknown field; an override has " + overrideBodyFields +
			", and each descriptors entry key and value"}
	}
	return &limiter.OverrideError{Field: "body", Msg: msg}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	}
	return "a " + goKind
}

// actor is the caller named by ActorHeader, else DefaultActor.
func actor(r *http.Request) (string, error) {
	a := strings.TrimSpace(r.Header.Get(ActorHeader))
	if a == "" {
		return DefaultActor, nil
	}
	if len(a) > maxActorLen {
		return "", fmt.Errorf("%s: longer than %d bytes", ActorHeader, maxActorLen)
	}
	if p := actorProblem(a); p != "" {
		return "", fmt.Errorf("%s: %s", ActorHeader, p)
	}
	return a, nil
}

// call runs fn through the breaker. ErrNotFound is an answer, not a
// failure of Postgres, and so is Postgres refusing the data it was sent
// (*limiter.OverrideRefused: a data exception or a constraint violation): the
// breaker counts both as a success, since Postgres answered. Only
// connection, timeout and server-side errors count against it, so bad
// input cannot open the breaker.
func (a *overrideAdmin) call(ctx context.Context, fn func(ctx context.Context) error) error {
	if a.opts.Breaker == nil {
		return fn(ctx)
	}
	var inner error
	err := a.opts.Breaker.Do(ctx, func(ctx context.Context) error {
		inner = fn(ctx)
		if errors.Is(inner, limiter.ErrOverrideNotFound) {
			return nil
		}
		if refused := (*limiter.OverrideRefused)(nil); errors.As(inner, &refused) {
			return nil
		}
		return inner
	})
	if inner != nil {
		return inner
	}
	return err
}

// fail answers a store error: 404 for an unknown id, 409 or 400 for data
// Postgres refused (the caller's error, with its SQLSTATE), else 503 with
// the breaker's state.
func (a *overrideAdmin) fail(w http.ResponseWriter, id int64, err error) {
	if errors.Is(err, limiter.ErrOverrideNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("override %d: not found", id))
		return
	}
	if refused := (*limiter.OverrideRefused)(nil); errors.As(err, &refused) {
		status := http.StatusBadRequest
		if refused.Conflict {
			status = http.StatusConflict
		}
		a.s.log.Info("admin: postgres refused the data", "sqlstate", refused.Code, "err", err.Error())
		writeError(w, status, "body: postgres refused the override: "+err.Error())
		return
	}
	body := struct {
		Error   string        `json:"error"`
		Breaker *BreakerState `json:"breaker,omitempty"`
	}{Error: "overrides unavailable: postgres: " + err.Error()}
	if errors.Is(err, breaker.ErrOpen) {
		body.Error = "overrides unavailable: the postgres breaker is open; decisions go on with the overrides last loaded"
	}
	if a.opts.Breaker != nil {
		bs := breakerState(a.opts.Breaker.Snapshot())
		body.Breaker = &bs
	}
	a.s.log.Warn("admin: overrides unavailable", "err", err.Error())
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // best effort: the client may be gone
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "id: must be a positive whole number, not "+strconv.Quote(r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (a *overrideAdmin) put(w http.ResponseWriter, r *http.Request) {
	who, err := actor(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.s.cfg.HTTP.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body: larger than the bound of "+strconv.FormatInt(tooBig.Limit, 10)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	o, err := parseOverride(body, a.s.lim.Bounds(), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// As in a limit file, replaces must name a limit of the domain when
	// the override is set: one in force here, or one another stored
	// override names that this replica has not applied yet.
	var others []limiter.Override
	listed := false
	for i, name := range o.RateLimit.Replaces {
		if a.s.lim.Limits().HasLimitName(o.Domain, name) {
			continue
		}
		if !listed {
			if err := a.call(r.Context(), func(ctx context.Context) error {
				others, err = a.opts.Store.ListOverrides(ctx)
				return err
			}); err != nil {
				a.fail(w, 0, err)
				return
			}
			listed = true
		}
		if !slices.ContainsFunc(others, func(s limiter.Override) bool {
			return s.Domain == o.Domain && s.RateLimit.Name == name && s.PathString() != o.PathString()
		}) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("rate_limit.replaces[%d].name: %q names no limit of domain %q",
				i, name, o.Domain))
			return
		}
	}
	var (
		stored  limiter.Override
		created bool
	)
	if err := a.call(r.Context(), func(ctx context.Context) error {
		stored, created, err = a.opts.Store.PutOverride(ctx, o, who)
		return err
	}); err != nil {
		a.fail(w, 0, err)
		return
	}
	action := limiter.OverrideUpdate
	if created {
		action = limiter.OverrideCreate
	}
	a.s.log.Info("admin: override stored", "action", action, "id", stored.ID, "domain", stored.Domain,
		"path", stored.PathString(), "actor", who)
	if a.opts.Changed != nil {
		a.opts.Changed(r.Context())
	}
	writeJSON(w, http.StatusOK, stored)
}

func (a *overrideAdmin) list(w http.ResponseWriter, r *http.Request) {
	var list []limiter.Override
	if err := a.call(r.Context(), func(ctx context.Context) (err error) {
		list, err = a.opts.Store.ListOverrides(ctx)
		return err
	}); err != nil {
		a.fail(w, 0, err)
		return
	}
	if list == nil {
		list = []limiter.Override{}
	}
	writeJSON(w, http.StatusOK, struct {
		Overrides []limiter.Override `json:"overrides"`
	}{list})
}

func (a *overrideAdmin) get(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var o limiter.Override
	if err := a.call(r.Context(), func(ctx context.Context) (err error) {
		o, err = a.opts.Store.GetOverride(ctx, id)
		return err
	}); err != nil {
		a.fail(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (a *overrideAdmin) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	who, err := actor(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var o limiter.Override
	if err := a.call(r.Context(), func(ctx context.Context) (err error) {
		o, err = a.opts.Store.DeleteOverride(ctx, id, who)
		return err
	}); err != nil {
		a.fail(w, id, err)
		return
	}
	a.s.log.Info("admin: override deleted", "id", id, "domain", o.Domain, "path", o.PathString(), "actor", who)
	if a.opts.Changed != nil {
		a.opts.Changed(r.Context())
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *overrideAdmin) history(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var h []limiter.OverrideChange
	if err := a.call(r.Context(), func(ctx context.Context) (err error) {
		h, err = a.opts.Store.OverrideHistory(ctx, id)
		return err
	}); err != nil {
		a.fail(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		History []limiter.OverrideChange `json:"history"`
	}{h})
}

// ConfigOptions are what GET /admin/config and POST /admin/reload use.
type ConfigOptions struct {
	// Effective returns the limits in force: the configured domains with
	// the overrides merged in, and the compiled limits' version.
	Effective func() (domains []limiter.DomainConfig, version string)
	// Reload reads the limit files again and reloads the overrides; it
	// returns the new version, or why the running limits were kept.
	Reload func() (version string, err error)
}

// HandleConfig adds GET /admin/config (the effective limits, overrides
// merged, as YAML with ?format=yaml or an Accept naming yaml, else JSON)
// and POST /admin/reload. Call it before Run.
func (s *Server) HandleConfig(c ConfigOptions) {
	s.HandleAdmin("GET /admin/config", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		format := r.URL.Query().Get("format")
		if format == "" {
			format = "json"
			if strings.Contains(r.Header.Get("Accept"), "yaml") {
				format = "yaml"
			}
		}
		domains, version := c.Effective()
		out, err := limiter.MarshalDomains(domains, format)
		if errors.Is(err, limiter.ErrUnknownFormat) {
			writeError(w, http.StatusBadRequest, "format: "+err.Error())
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "config: "+err.Error())
			return
		}
		ct := "application/json"
		if format == "yaml" {
			ct = "application/yaml"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Sluice-Config-Version", version)
		w.Write(out)
	}))
	s.HandleAdmin("POST /admin/reload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		version, err := c.Reload()
		if err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, struct {
				Error   string `json:"error"`
				Version string `json:"version"`
			}{"reload failed; the running limits are kept: " + err.Error(), version})
			return
		}
		s.log.Info("admin: limits reloaded", "version", version)
		writeJSON(w, http.StatusOK, struct {
			Version string `json:"version"`
		}{version})
	}))
}
