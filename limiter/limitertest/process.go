//go:build integration

package limitertest

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// process is a server process a test owns: started, waited for until it
// answers, and stopped by its PID.
type process struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *lockedBuffer
}

// running returns an error when a process is already running.
func (p *process) running() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("already running (pid %d)", p.cmd.Process.Pid)
	}
	return nil
}

// launch starts cmd with its output captured in out, then polls ready every
// poll until it answers. what names the server in errors. When the process
// exits first, or ready has not answered within timeout, launch stops it
// with stop and returns an error carrying its output.
func (p *process) launch(cmd *exec.Cmd, out *lockedBuffer, what string, timeout, poll time.Duration, ready func() error, stop func()) error {
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.out = cmd, done, out
	p.mu.Unlock()

	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			p.mu.Lock()
			p.cmd = nil
			p.mu.Unlock()
			return fmt.Errorf("%s exited at start: %s", what, strings.TrimSpace(out.String()))
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("%s did not answer within %v (last error: %w); output: %s",
				what, timeout, err, strings.TrimSpace(out.String()))
		}
		time.Sleep(poll)
	}
}
