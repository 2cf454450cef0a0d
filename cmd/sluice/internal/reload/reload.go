// Package reload keeps the limiter's limits in step with their sources:
// the config file and limit files (on SIGHUP, and when a watched file
// changes), the admin API's reload, the domains an xDS control plane
// pushes (SetXDS), and the overrides from Postgres, merged over the
// configured limits. Every change compiles the whole set and swaps it in
// at once.
//
// A Reloader is built with New, loads the first limits with LoadInitial,
// and between Open and Close runs the one goroutine that watches for
// SIGHUP and file changes.
package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"
)

// Options configure a Reloader.
type Options struct {
	// Path is the config file; "" for built-in defaults.
	Path string
	// Getenv reads the SLUICE_* environment on each reload.
	Getenv func(string) string
	// Load reads the configuration on each reload; nil is config.Load.
	// The compat mode passes its own, so a reload keeps reading
	// envoyproxy/ratelimit's settings (limits path, charging default).
	Load func(path string, getenv func(string) string) (*config.Config, error)
	// Limiter is given the limits.
	Limiter *limiter.Limiter
	// Logger logs each load; it is scoped with component=limits.
	Logger *slog.Logger
	// Metrics counts reloads by result; nil counts nothing.
	Metrics *metrics.Metrics
	// Watch turns on reloading when a watched file changes, checked every
	// WatchInterval (limits.watch, limits.watch_interval).
	Watch         bool
	WatchInterval time.Duration
	// XDS says domains also come from an xDS control plane (SetXDS).
	// Unless StartWithoutXDS, no limits are set, and nothing is ready,
	// until its first config is accepted.
	XDS             bool
	StartWithoutXDS bool
}

// Reloader keeps the limiter's limits in step with the files: on SIGHUP,
// and when a watched file changes. A bad reload keeps the running limits.
type Reloader struct {
	path   string // config file; "" for built-in defaults
	getenv func(string) string
	load   func(string, func(string) string) (*config.Config, error)
	lim    *limiter.Limiter
	log    *slog.Logger
	// metrics counts reloads by result; nil counts nothing.
	metrics  *metrics.Metrics
	watch    bool
	interval time.Duration

	// Between Open and Close: the goroutine's stop and its wait.
	cancel context.CancelFunc
	wg     sync.WaitGroup

	watched []string // files and directories of the last load
	stat    string   // their names, sizes and mtimes at the last look
	sum     [32]byte // their content at the last load attempt

	// loadMu serialises loads: the file watcher, SIGHUP, the admin API
	// and new override snapshots.
	loadMu    sync.Mutex
	domains   []limiter.DomainConfig // from the files, as last loaded
	opts      limiter.CompileOptions // the global modes, as last loaded
	overrides []limiter.Override     // in force, from Postgres

	xds        bool                   // domains also come over xDS
	xdsWaiting bool                   // for the first xDS config: no limits set yet
	xdsDomains []limiter.DomainConfig // as last accepted

	mu         sync.Mutex
	filesGiven bool      // some domains come from files
	version    string    // of the running limits
	loadedAt   time.Time // when they were loaded
	lastErr    error     // of the last reload, nil when it worked
	xdsVer     string    // version_info of the xDS config in force
}

// Status is the configuration's state, for /health/detailed.
func (r *Reloader) Status() server.ConfigStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return server.ConfigStatus{Version: r.version, LoadedAt: r.loadedAt, LastError: r.lastErr,
		Source: r.source(), XDSVersion: r.xdsVer}
}

// source names where the limits in force come from: files, xds or both
// ("file+xds"); "" before any. r.mu is held.
func (r *Reloader) source() string {
	switch {
	case r.version == "":
		return ""
	case !r.xds:
		return "file"
	case r.filesGiven:
		return "file+xds"
	}
	return "xds"
}

// record notes a load's outcome: the new limits' version, or the error.
func (r *Reloader) record(version string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err
	if err == nil {
		r.version, r.loadedAt = version, time.Now()
	}
}

// New returns a Reloader; it loads nothing until LoadInitial and watches
// nothing until Open.
func New(o Options) *Reloader {
	load := o.Load
	if load == nil {
		load = config.Load
	}
	return &Reloader{path: o.Path, getenv: o.Getenv, load: load, lim: o.Limiter, log: o.Logger.With("component", "limits"),
		metrics: o.Metrics, watch: o.Watch, interval: o.WatchInterval,
		xds: o.XDS, xdsWaiting: o.XDS && !o.StartWithoutXDS}
}

// LoadInitial loads the limits cfg names; serving does not start without
// them.
func (r *Reloader) LoadInitial(cfg *config.Config) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.watched = cfg.Watched()
	r.stat, r.sum = fingerprint(r.watched)
	src := cfg.LimitsSource()
	domains, err := src.LoadDomains()
	if err != nil {
		return err
	}
	lims, err := r.compile(domains, src.CompileOptions(), r.overrides)
	if err != nil {
		return err
	}
	r.domains, r.opts = domains, src.CompileOptions()
	if r.xdsWaiting {
		r.log.Info("limits from files checked; waiting for the first xDS config before serving",
			"file_domains", len(domains))
		return nil
	}
	r.record(lims.Version(), nil)
	r.swap(lims)
	r.log.Info("limits loaded", "version", lims.Version(), "domains", len(lims.Domains()), "rules", lims.Rules())
	return nil
}

// swap puts lims in force and shows them in metrics. r.loadMu is held.
func (r *Reloader) swap(lims *limiter.Limits) {
	r.lim.SetLimits(lims)
	r.mu.Lock()
	r.filesGiven = len(r.domains) > 0
	r.mu.Unlock()
	st := r.Status()
	r.metrics.LimitsInfo(st.Source, st.XDSVersion, lims.Version())
}

// all is every configured domain: the files' and xDS's. r.loadMu is held.
func (r *Reloader) all(files []limiter.DomainConfig) []limiter.DomainConfig {
	return joined(files, r.xdsDomains)
}

// joined is the domains of files and then of xds, in a new slice when both
// have some.
func joined(files, xds []limiter.DomainConfig) []limiter.DomainConfig {
	if len(xds) == 0 {
		return files
	}
	return append(append(make([]limiter.DomainConfig, 0, len(files)+len(xds)), files...), xds...)
}

// SetXDS puts a config from the xDS control plane in force, with the
// files' domains and the overrides, as one swap. An error (a domain also
// defined by a file or twice over xDS, or limits that do not compile)
// keeps the running limits; the caller NACKs with it.
func (r *Reloader) SetXDS(version string, domains []limiter.DomainConfig) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	err := collisions(r.domains, domains)
	var lims *limiter.Limits
	if err == nil {
		lims, err = r.compile(joined(r.domains, domains), r.opts, r.overrides)
	}
	if err != nil {
		err = fmt.Errorf("xds version %q: %w", version, err)
		r.record("", err)
		r.metrics.ConfigReload(err)
		return err
	}
	r.xdsDomains, r.xdsWaiting = domains, false
	r.mu.Lock()
	r.xdsVer = version
	r.mu.Unlock()
	r.record(lims.Version(), nil)
	r.swap(lims)
	r.metrics.ConfigReload(nil)
	r.log.Info("limits from xDS applied", "xds_version", version, "version", lims.Version(),
		"domains", len(lims.Domains()), "rules", lims.Rules())
	return nil
}

// collisions reports a domain defined twice over xDS, or by a file and
// over xDS, naming both sources.
func collisions(files, pushed []limiter.DomainConfig) error {
	where := map[string]string{}
	for _, d := range files {
		where[d.Domain] = fmt.Sprintf("%s:%d", d.File, d.Line)
	}
	var errs []error
	for _, d := range pushed {
		if prev, ok := where[d.Domain]; ok {
			errs = append(errs, fmt.Errorf("%s: domain %q is already defined by %s; a domain comes from one source", d.File, d.Domain, prev))
			continue
		}
		where[d.Domain] = d.File
	}
	return errors.Join(errs...)
}

// compile builds the limits in force: the configured domains with the
// overrides merged in. Overrides are checked when stored, so they cannot
// break a config that compiles; should one do so anyway, the config is
// compiled without the overrides rather than not at all.
func (r *Reloader) compile(domains []limiter.DomainConfig, opts limiter.CompileOptions, overrides []limiter.Override) (*limiter.Limits, error) {
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

// SetOverrides applies a new set of overrides to the running limits.
func (r *Reloader) SetOverrides(overrides []limiter.Override) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.overrides = overrides
	if r.lim.Limits() == nil {
		return // the first load merges them
	}
	lims, err := r.compile(r.all(r.domains), r.opts, overrides)
	if err != nil {
		r.log.Error("overrides not applied; keeping the running limits", "err", err.Error())
		return
	}
	r.swap(lims)
	// The version changes; a failed file reload's error stays shown.
	r.mu.Lock()
	r.version, r.loadedAt = lims.Version(), time.Now()
	r.mu.Unlock()
	r.log.Info("overrides applied", "overrides", len(overrides), "version", lims.Version(), "rules", lims.Rules())
}

// Effective returns the domains in force, overrides merged, and their
// version.
func (r *Reloader) Effective() ([]limiter.DomainConfig, string) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	version := ""
	if l := r.lim.Limits(); l != nil {
		version = l.Version()
	}
	return limiter.MergeOverrides(r.all(r.domains), r.overrides), version
}

// ReloadNow reloads for the admin API and reports the outcome.
func (r *Reloader) ReloadNow() (string, error) {
	r.reload("admin")
	st := r.Status()
	return st.Version, st.LastError
}

// Open starts watching: the goroutine that reloads on SIGHUP and, with
// Watch on, when the watched files change. It runs until Close (or until
// ctx ends). Open is called once, after LoadInitial.
func (r *Reloader) Open(ctx context.Context) error {
	if r.cancel != nil {
		return errors.New("reload: already open")
	}
	if r.watch && r.interval <= 0 {
		return errors.New("reload: watch interval must be positive")
	}
	// SIGHUP is caught from here on; before Open it ends the process, as
	// it would any program that does not reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer signal.Stop(hup)
		r.run(ctx, hup)
	}()
	return nil
}

// Close stops watching and waits for the goroutine to end; a reload under
// way finishes first. It does nothing before Open. ctx bounds the wait.
func (r *Reloader) Close(ctx context.Context) error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reload: close: %w", ctx.Err())
	}
}

// run reloads on each hup and, when watch is on, when the watched files
// change (checked every interval), until ctx ends.
func (r *Reloader) run(ctx context.Context, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if r.watch {
		t := time.NewTicker(r.interval)
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
func (r *Reloader) reloadIfChanged() {
	r.loadMu.Lock()
	changed := r.changed()
	r.loadMu.Unlock()
	if changed {
		r.reload("file change")
	}
}

// changed reports whether the watched files' content differs from the last
// load attempt. Content is read only when names, sizes or mtimes moved, or
// while a file's mtime is recent: file systems keep mtimes in coarse ticks,
// so a file rewritten within one tick at the same size looks unchanged.
func (r *Reloader) changed() bool {
	stat, newest := statPrint(r.watched)
	if stat == r.stat && time.Since(newest) > racyMtime {
		return false
	}
	r.stat = stat
	_, sum := fingerprint(r.watched)
	return sum != r.sum
}

// reload reads the config file and the limits again and swaps them in. A
// failure keeps the running limits and is logged. Settings other than the
// limits need a restart.
func (r *Reloader) reload(reason string) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	stat, sum := fingerprint(r.watched)
	r.stat, r.sum = stat, sum
	cfg, err := r.load(r.path, r.getenv)
	if err != nil {
		r.record("", err)
		r.metrics.ConfigReload(err)
		r.log.Error("reload failed; keeping the running limits", "reason", reason, "err", err.Error())
		return
	}
	if w := cfg.Watched(); !slices.Equal(w, r.watched) {
		r.watched = w
		r.stat, r.sum = fingerprint(w)
	}
	src := cfg.LimitsSource()
	domains, err := src.LoadDomains()
	var lims *limiter.Limits
	if err == nil {
		err = collisions(domains, r.xdsDomains)
	}
	if err == nil {
		lims, err = r.compile(r.all(domains), src.CompileOptions(), r.overrides)
	}
	if err != nil {
		r.record("", err)
		r.metrics.ConfigReload(err)
		r.log.Error("reload failed; keeping the running limits", "reason", reason, "err", err.Error())
		return
	}
	r.domains, r.opts = domains, src.CompileOptions()
	if r.xdsWaiting {
		r.metrics.ConfigReload(nil)
		r.log.Info("limits from files reloaded; still waiting for the first xDS config", "reason", reason)
		return
	}
	old := r.lim.Limits()
	r.record(lims.Version(), nil)
	r.swap(lims)
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

// racyMtime is how recent an mtime must be for the content to be read
// even when names, sizes and mtimes look unchanged.
const racyMtime = 2 * time.Second

// statPrint describes the files' names, sizes and modification times, and
// gives the newest of those times.
func statPrint(paths []string) (string, time.Time) {
	var (
		b      strings.Builder
		newest time.Time
	)
	for _, f := range files(paths) {
		b.WriteString(f)
		if fi, err := os.Stat(f); err == nil {
			if fi.ModTime().After(newest) {
				newest = fi.ModTime()
			}
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(fi.Size(), 10))
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(fi.ModTime().UnixNano(), 10))
		} else {
			b.WriteString(" missing")
		}
		b.WriteByte('\n')
	}
	return b.String(), newest
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
	stat, _ := statPrint(paths)
	return stat, sum
}
