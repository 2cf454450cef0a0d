package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// maxWiringLines bounds the non-test Go of package main.
const maxWiringLines = 900

// TestCommandIsWiringOnly keeps cmd/sluice a thin command: it parses the
// arguments, builds the parts from the config, serves, and closes them in
// order. Anything with logic of its own belongs in a package: under
// cmd/sluice/internal/ when only the command uses it (config, reload,
// adminclient), else in limiter/, server/, breaker/ or bench/.
func TestCommandIsWiringOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	var counts []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			n++
		}
		total += n
		counts = append(counts, f+": "+strconv.Itoa(n))
	}
	if total == 0 {
		t.Fatal("no Go files found in cmd/sluice")
	}
	if total > maxWiringLines {
		t.Fatalf("cmd/sluice has %d lines of non-test Go, more than %d (%s).\n"+
			"It should only wire the parts together (setup, serve, close): move logic into its own package, "+
			"under cmd/sluice/internal/ if only the command uses it, else into limiter/, server/, breaker/ or bench/.",
			total, maxWiringLines, strings.Join(counts, ", "))
	}
}
