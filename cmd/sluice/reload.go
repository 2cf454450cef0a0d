package main

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"
)

// reloader keeps the limiter's limits in step with the files: on SIGHUP,
// and when a watched file changes. A bad reload keeps the running limits.
type reloader struct {
	path   string // config file; "" for built-in defaults
	getenv func(string) string
	lim    *limiter.Limiter
	log    *slog.Logger
	// metrics counts reloads by result; nil counts nothing.
	metrics *metrics.Metrics

	watched []string // files and directories of the last load
	stat    string   // their names, sizes and mtimes at the last look
	sum     [32]byte // their content at the last load attempt

	// loadMu serialises loads: the file watcher, SIGHUP, the admin API
	// and new override snapshots.
	loadMu    sync.Mutex
	domains   []limiter.DomainConfig // from the files, as last loaded
	shadow    bool
	overrides []limiter.Override // in force, from Postgres

	mu       sync.Mutex
	version  string    // of the running limits
	loadedAt time.Time // when they were loaded
	lastErr  error     // of the last reload, nil when it worked
}

// status is the configuration's state, for /health/detailed.
func (r *reloader) status() server.ConfigStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return server.ConfigStatus{Version: r.version, LoadedAt: r.loadedAt, LastError: r.lastErr}
}

// record notes a load's outcome: the new limits' version, or the error.
func (r *reloader) record(version string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err
	if err == nil {
		r.version, r.loadedAt = version, time.Now()
	}
}

func newReloader(path string, getenv func(string) string, lim *limiter.Limiter, log *slog.Logger) *reloader {
	return &reloader{path: path, getenv: getenv, lim: lim, log: log.With("component", "limits")}
}

// loadInitial loads the limits cfg names; serving does not start without
// them.
func (r *reloader) loadInitial(cfg *Config) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.watched = cfg.watched()
	r.stat, r.sum = fingerprint(r.watched)
	src := cfg.limitsSource()
	domains, err := src.loadDomains()
	if err != nil {
		return err
	}
	lims, err := r.compile(domains, src.shadow, r.overrides)
	if err != nil {
		return err
	}
	r.domains, r.shadow = domains, src.shadow
	r.lim.SetLimits(lims)
	r.record(lims.Version(), nil)
	r.log.Info("limits loaded", "version", lims.Version(), "domains", len(lims.Domains()), "rules", lims.Rules())
	return nil
}

// compile builds the limits in force: the configured domains with the
// overrides merged in. Overrides are checked when stored, so they cannot
// break a config that compiles; should one do so anyway, the config is
// compiled without the overrides rather than not at all.
func (r *reloader) compile(domains []limiter.DomainConfig, shadow bool, overrides []limiter.Override) (*limiter.Limits, error) {
	opts := limiter.CompileOptions{ShadowMode: shadow}
	if len(overrides) == 0 {
		return limiter.Compile(domains, opts)
	}
	lims, err := limiter.Compile(limiter.MergeOverrides(domains, overrides), opts)
	if err == nil {
		return lims, nil
	}
	r.log.Error("overrides do not merge into the configured limits; applying the configured limits alone", "err", err.Error())
	return limiter.Compile(domains, opts)
}

// setOverrides applies a new set of overrides to the running limits.
func (r *reloader) setOverrides(overrides []limiter.Override) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.overrides = overrides
	if r.domains == nil && r.lim.Limits() == nil {
		return // the first load merges them
	}
	lims, err := r.compile(r.domains, r.shadow, overrides)
	if err != nil {
		r.log.Error("overrides not applied; keeping the running limits", "err", err.Error())
		return
	}
	r.lim.SetLimits(lims)
	// The version changes; a failed file reload's error stays shown.
	r.mu.Lock()
	r.version, r.loadedAt = lims.Version(), time.Now()
	r.mu.Unlock()
	r.log.Info("overrides applied", "overrides", len(overrides), "version", lims.Version(), "rules", lims.Rules())
}

// effective returns the domains in force, overrides merged, and their
// version.
func (r *reloader) effective() ([]limiter.DomainConfig, string) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	version := ""
	if l := r.lim.Limits(); l != nil {
		version = l.Version()
	}
	return limiter.MergeOverrides(r.domains, r.overrides), version
}

// reloadNow reloads for the admin API and reports the outcome.
func (r *reloader) reloadNow() (string, error) {
	r.reload("admin")
	st := r.status()
	return st.Version, st.LastError
}

// run reloads on each hup and, when watch is on, when the watched files
// change (checked every interval), until ctx ends.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal, watch bool, interval time.Duration) {
	var tick <-chan time.Time
	if watch {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload("signal")
		case <-tick:
			r.reloadIfChanged()
		}
	}
}

// reloadIfChanged reloads when the watched files changed.
func (r *reloader) reloadIfChanged() {
	r.loadMu.Lock()
	changed := r.changed()
	r.loadMu.Unlock()
	if changed {
		r.reload("file change")
	}
}

// changed reports whether the watched files' content differs from the last
// load attempt. Content is read only when names, sizes or mtimes moved.
func (r *reloader) changed() bool {
	stat := statPrint(r.watched)
	if stat == r.stat {
		return false
	}
	r.stat = stat
	_, sum := fingerprint(r.watched)
	return sum != r.sum
}

// reload reads the config file and the limits again and swaps them in. A
// failure keeps the running limits and is logged. Settings other than the
// limits need a restart.
func (r *reloader) reload(reason string) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	stat, sum := fingerprint(r.watched)
	r.stat, r.sum = stat, sum
	cfg, err := loadConfig(r.path, r.getenv)
	if err != nil {
		r.record("", err)
		r.metrics.ConfigReload(err)
		r.log.Error("reload failed; keeping the running limits", "reason", reason, "err", err.Error())
		return
	}
	if w := cfg.watched(); !slices.Equal(w, r.watched) {
		r.watched = w
		r.stat, r.sum = fingerprint(w)
	}
	src := cfg.limitsSource()
	domains, err := src.loadDomains()
	var lims *limiter.Limits
	if err == nil {
		lims, err = r.compile(domains, src.shadow, r.overrides)
	}
	if err != nil {
		r.record("", err)
		r.metrics.ConfigReload(err)
		r.log.Error("reload failed; keeping the running limits", "reason", reason, "err", err.Error())
		return
	}
	r.domains, r.shadow = domains, src.shadow
	old := r.lim.Limits()
	r.lim.SetLimits(lims)
	r.record(lims.Version(), nil)
	r.metrics.ConfigReload(nil)
	if old != nil && old.Version() == lims.Version() {
		r.log.Info("limits reloaded, unchanged", "reason", reason, "version", lims.Version())
		return
	}
	r.log.Info("limits reloaded", "reason", reason, "version", lims.Version(),
		"domains", len(lims.Domains()), "rules", lims.Rules())
}

// files expands the watched paths: a directory stands for its limit files.
func files(paths []string) []string {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			out = append(out, p)
			continue
		}
		for _, e := range entries {
			n := e.Name()
			if ext := filepath.Ext(n); !strings.HasPrefix(n, ".") && (ext == ".yaml" || ext == ".yml") {
				out = append(out, filepath.Join(p, n))
			}
		}
	}
	sort.Strings(out)
	return out
}

// statPrint describes the files' names, sizes and modification times.
func statPrint(paths []string) string {
	var b strings.Builder
	for _, f := range files(paths) {
		b.WriteString(f)
		if fi, err := os.Stat(f); err == nil {
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(fi.Size(), 10))
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(fi.ModTime().UnixNano(), 10))
		} else {
			b.WriteString(" missing")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// fingerprint is statPrint and a hash of the files' names and contents.
func fingerprint(paths []string) (string, [32]byte) {
	h := sha256.New()
	for _, f := range files(paths) {
		_, _ = io.WriteString(h, f) // a hash.Hash never returns an error
		h.Write([]byte{0})
		if fh, err := os.Open(f); err == nil {
			// A read error leaves a different hash: the file is reloaded and
			// the reload reports the error.
			_, _ = io.Copy(h, fh)
			fh.Close()
		} else {
			_, _ = io.WriteString(h, "\x00missing")
		}
		h.Write([]byte{0})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return statPrint(paths), sum
}
