//go:build integration

package limitertest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisStartTimeout bounds the wait for a started redis-server to answer.
const redisStartTimeout = 10 * time.Second

// StartRedis returns the address of a Redis for t: the one named by
// SLUICE_TEST_REDIS_ADDR when set, else a redis-server started for t on a
// free loopback port, with no persistence, stopped when t ends. It fails t
// when redis-server is not installed or does not answer PING in time.
func StartRedis(t testing.TB) (addr string) {
	t.Helper()
	if a := os.Getenv(EnvRedisAddr); a != "" {
		if err := pingRedis(a, time.Second); err != nil {
			t.Fatalf("%s=%s does not answer PING: %v", EnvRedisAddr, a, err)
		}
		return a
	}
	return NewRedisServer(t).Addr
}

// RedisServer is a redis-server process owned by one test. Stop and Start
// restart it on the same port, for tests of what a client does when Redis
// goes away and comes back (empty, as after a crash).
type RedisServer struct {
	// Addr is host:port on the loopback interface.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	port int

	process
}

// NewRedisServer starts a redis-server for t on a free loopback port and
// stops it (by its PID) when t ends. It ignores SLUICE_TEST_REDIS_ADDR: a
// test that needs to stop and start Redis needs one of its own.
func NewRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found in PATH (%v): run `make test`, which installs it, "+
			"or set %s=host:port to use an existing server", err, EnvRedisAddr)
	}
	s := &RedisServer{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	// A free port can be taken between finding and binding it: try again.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("find a free port for redis-server: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

// Start starts the server again on its port after Stop. It fails the test
// when the server does not come up.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart redis-server on %s: %v", s.Addr, err)
	}
}

// Stop kills the server (SIGKILL, like a crash) and waits for it to exit.
// It does nothing when the server is not running.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Pause stops the server process (SIGSTOP) without closing its sockets, so
// clients see a server that accepts but never answers. Resume undoes it;
// Stop works on a paused server too.
func (s *RedisServer) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *RedisServer) Resume() { s.signal(syscall.SIGCONT) }

// PID is the server's process id, or 0 when it is not running.
func (s *RedisServer) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *RedisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatalf("redis-server on %s is not running", s.Addr)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal redis-server (pid %d): %v", cmd.Process.Pid, err)
	}
}

func (s *RedisServer) start() error {
	if err := s.running(); err != nil {
		return err
	}
	out := &lockedBuffer{}
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", "",
		"--loglevel", "warning",
		"--databases", "1",
	)
	cmd.Dir = s.dir
	return s.launch(cmd, out, fmt.Sprintf("redis-server on port %d", s.port), redisStartTimeout, 10*time.Millisecond,
		func() error { return pingRedis(s.Addr, 200*time.Millisecond) }, s.Stop)
}

// pingRedis sends one PING over a fresh connection and wants +PONG.
func pingRedis(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a process's output from its copying goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
