package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// check validates the configuration and every limit file it names,
// printing every problem (one per line, with file and line) to stderr, or
// a one-line summary to stdout.
func check(path string, getenv func(string) string, stdout, stderr io.Writer) error {
	name := path
	if name == "" {
		name = "built-in defaults"
	}
	cfg, err := loadConfig(path, getenv)
	if err != nil {
		printErrors(stderr, err)
		// The limits may still be checkable, so report them too.
		if cfg = limitsOnlyConfig(path, getenv); cfg == nil {
			return exitError{1}
		}
		if _, lerr := cfg.limitsSource().load(); lerr != nil {
			printErrors(stderr, lerr)
		}
		return exitError{1}
	}
	lims, err := cfg.limitsSource().load()
	if err != nil {
		printErrors(stderr, err)
		return exitError{1}
	}
	fmt.Fprintf(stdout, "%s: ok: %d %s, %d %s, version %s\n", name,
		len(lims.Domains()), plural(len(lims.Domains()), "domain"),
		lims.Rules(), plural(lims.Rules(), "rule"), lims.Version())
	return nil
}

// limitsOnlyConfig decodes what it can of a config with errors, so check
// can report the limit files too; nil when even that fails.
func limitsOnlyConfig(path string, getenv func(string) string) *Config {
	c := defaultConfig()
	c.lines, c.envs = map[string]int{}, map[string]string{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		c.file = path
		if errs := c.decode(path, data); len(errs) > 0 {
			for _, e := range errs {
				if strings.HasPrefix(e.Field, "limits") || e.Field == "" {
					return nil
				}
			}
		}
	}
	c.applyEnv(getenv)
	return &c
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
