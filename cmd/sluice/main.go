// Command sluice is the Sluice rate-limit service: `sluice serve` runs it,
// `sluice check` validates its configuration and limit files, and
// `sluice version` prints the build.
//
// It only wires: it loads the configuration, builds the store, the limiter
// and the server, serves, and shuts them down in order.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/sluice-rl/sluice/bench"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/adminclient"
	"github.com/sluice-rl/sluice/cmd/sluice/internal/compat"
)

// Set with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = ""
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, compat.Args(os.Args), options{getenv: os.Getenv, stdout: os.Stdout, stderr: os.Stderr})
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

// options is what run is given by the process: its environment and
// output, and, for tests, a hook.
type options struct {
	getenv         func(string) string
	stdout, stderr io.Writer
	// onListen, when set, is told the addresses serve bound, before it
	// serves: tests listen on :0. admin is http's without a separate admin
	// listener.
	onListen func(grpc, http, admin net.Addr)
	// compat is the settings the environment gives: "" for SLUICE_*, or
	// compat.Mode for envoyproxy/ratelimit's.
	compat string
}

// exitError ends the process with code, its message already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const usage = `usage: sluice <command> [flags]

commands:
  serve   [-config FILE] [-compat envoy-ratelimit]
                           run the service; -compat reads envoyproxy/ratelimit's
                           environment (also when run as "ratelimit")
  check   [-config FILE]   validate the configuration and every limit file
  bench   [flags]          load-test any Envoy rate-limit server (sluice bench -h)
  overrides list|get|set|delete|history
                           change limits at run time through the admin API
                           (sluice overrides -h)
  version                  print the version

Without -config, ./config.yaml is used when present, else built-in defaults.
Environment: SLUICE_GRPC_ADDR, SLUICE_HTTP_ADDR, SLUICE_REDIS_URL,
SLUICE_POSTGRES_DSN, SLUICE_ADMIN_TOKEN, SLUICE_ADMIN_ADDR, SLUICE_LIMITS,
SLUICE_LOG_LEVEL.
`

// run is the whole program; main only adds the process: signals, exit code.
func run(ctx context.Context, args []string, o options) error {
	stdout, stderr := o.stdout, o.stderr
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{2}
	}
	switch args[0] {
	case "serve":
		path, err := parseConfigFlag("serve", args[1:], stderr, &o.compat)
		if err != nil {
			return err
		}
		return serve(ctx, path, o)
	case "check":
		path, err := parseConfigFlag("check", args[1:], stderr, nil)
		if err != nil {
			return err
		}
		return check(path, o.getenv, stdout, stderr)
	case "bench":
		if code := bench.Main(ctx, args[1:], stdout, stderr); code != 0 {
			return exitError{code}
		}
		return nil
	case "overrides":
		if code := adminclient.Main(ctx, args[1:], o.getenv, stdout, stderr); code != 0 {
			return exitError{code}
		}
		return nil
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "sluice %s (revision %s, %s)\n", version, buildRevision(), runtime.Version())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
	return exitError{2}
}

// parseConfigFlag parses [-config FILE] (and [-compat MODE] when mode is
// not nil) and picks the config file: the flag, else ./config.yaml when
// present and not in a compat mode, else "" (built-in defaults).
func parseConfigFlag(cmd string, args []string, stderr io.Writer, mode *string) (string, error) {
	fs := flag.NewFlagSet("sluice "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` (default ./config.yaml when present)")
	if mode != nil {
		fs.StringVar(mode, "compat", "", "read the `settings` of another service from the environment: "+compat.Mode)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", exitError{0}
		}
		return "", exitError{2}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return "", exitError{2}
	}
	if mode != nil && *mode != "" && *mode != compat.Mode {
		fmt.Fprintf(stderr, "sluice %s: -compat %q: the only mode is %s\n", cmd, *mode, compat.Mode)
		return "", exitError{2}
	}
	if *path != "" || (mode != nil && *mode != "") {
		return *path, nil
	}
	if _, err := os.Stat("config.yaml"); err == nil {
		return "config.yaml", nil
	}
	return "", nil
}

// buildRevision is the -ldflags revision, else the VCS revision recorded
// by the Go toolchain, else "unknown".
func buildRevision() string {
	if revision != "" {
		return revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}
