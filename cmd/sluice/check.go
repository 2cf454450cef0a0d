package main

import (
	"fmt"
	"io"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
)

// check validates the configuration and every limit file it names,
// printing every problem (one per line, with file and line) to stderr, or
// a one-line summary to stdout. Deprecated settings are warnings: printed,
// not failing.
func check(path string, getenv func(string) string, stdout, stderr io.Writer) error {
	name := path
	if name == "" {
		name = "built-in defaults"
	}
	cfg, err := config.Load(path, getenv)
	if err != nil {
		printErrors(stderr, err)
		// The limits may still be checkable, so report them too.
		if cfg = config.LimitsOnly(path, getenv); cfg == nil {
			return exitError{1}
		}
		if _, lerr := cfg.LimitsSource().Load(); lerr != nil {
			printErrors(stderr, lerr)
		}
		return exitError{1}
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "warning: %v\n", w)
	}
	lims, err := cfg.LimitsSource().Load()
	if err != nil {
		printErrors(stderr, err)
		return exitError{1}
	}
	fmt.Fprintf(stdout, "%s: ok: %d %s, %d %s, version %s\n", name,
		len(lims.Domains()), plural(len(lims.Domains()), "domain"),
		lims.Rules(), plural(lims.Rules(), "rule"), lims.Version())
	return nil
}

// printErrors prints err: every error type here prints one problem per
// line, each with its file and line.
func printErrors(w io.Writer, err error) {
	fmt.Fprintln(w, err.Error())
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}
