//go:build unix

package reload

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestOpenCloseSignal: with watching off, SIGHUP reloads between Open and
// Close; a file change alone does not.
func TestOpenCloseSignal(t *testing.T) {
	r, lim, limits, logs := setup(t, false)
	v0 := lim.Limits().Version()
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("Close before Open: %v", err)
	}
	if err := r.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	writeLimits(t, limits, "40")
	time.Sleep(100 * time.Millisecond)
	if lim.Limits().Version() != v0 {
		t.Fatal("reloaded without a signal while watching is off")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, lim, v0, logs)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
