//go:build integration

package limitertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// process is a server process a test owns: the one way the helpers start
// a server (launch), wait until it answers, stop it by its PID (kill,
// stop) and collect its output. RedisServer, PostgresServer and the nodes
// of a cluster or Sentinel setup all embed one.
type process struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *SyncBuffer
}

// errPortTaken reports that a server could not bind its port (another
// process took it after freePort found it free): start on another port.
var errPortTaken = errors.New("port taken")

// launch starts cmd with its output captured, then polls ready until it
// answers, backing off from 1 ms to 50 ms. what names the server in
// errors. When the process exits first, or ready has not answered within
// timeout, launch stops it with stop and returns an error carrying its
// output; one that wraps errPortTaken when the output says its address
// was in use.
func (p *process) launch(cmd *exec.Cmd, what string, timeout time.Duration, ready func() error, stop func()) error {
	if err := p.running(); err != nil {
		return err
	}
	out := &SyncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // a server stopped on purpose: its status says nothing
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.out = cmd, done, out
	p.mu.Unlock()

	deadline := time.Now().Add(timeout)
	poll := time.Millisecond
	for {
		select {
		case <-done:
			p.mu.Lock()
			p.cmd = nil
			p.mu.Unlock()
			output := strings.TrimSpace(out.String())
			if addrInUse(output) {
				return fmt.Errorf("%s exited at start: %w: %s", what, errPortTaken, output)
			}
			return fmt.Errorf("%s exited at start: %s", what, output)
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
		poll = min(2*poll, 50*time.Millisecond)
	}
}

// addrInUse tells from a server's output whether it failed to bind.
func addrInUse(output string) bool {
	return strings.Contains(output, "Address already in use") || strings.Contains(output, "address already in use")
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

// stop sends sig and waits for the process to exit, killing it (SIGKILL)
// when that takes longer than grace. It does nothing when the process is
// not running.
func (p *process) stop(sig os.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig) // fails only when it has exited already
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// kill stops the process with SIGKILL, like a crash, and waits for it.
func (p *process) kill() { p.stop(os.Kill, time.Minute) }

// signal sends sig to the running process.
func (p *process) signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal pid %d: %w", cmd.Process.Pid, err)
	}
	return nil
}

// pid is the process id, or 0 when it is not running.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// output is what the process has printed since it was last started.
func (p *process) output() string {
	p.mu.Lock()
	out := p.out
	p.mu.Unlock()
	if out == nil {
		return ""
	}
	return out.String()
}

// startOnFreePort runs start on a free loopback port, and on another when
// that one was taken before the server could bind it (freePort closes its
// listener before the server binds): up to three times.
func startOnFreePort(start func(port int) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		port, perr := freePort()
		if perr != nil {
			return fmt.Errorf("find a free port: %w", perr)
		}
		if err = start(port); err == nil || !errors.Is(err, errPortTaken) {
			return err
		}
	}
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
