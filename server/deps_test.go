package server_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestServerNeedsNoStorePackage: the domain (limiter) owns the contracts
// the edges use; server reaches no store package, so a store can change
// without the edges noticing.
func TestServerNeedsNoStorePackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, store := range []string{"/limiter/postgres", "/limiter/redis", "/limiter/memory"} {
			if strings.HasSuffix(pkg, store) {
				t.Errorf("server depends on %s; let limiter declare what server needs", pkg)
			}
		}
	}
}
