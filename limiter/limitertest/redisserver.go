//go:build integration

package limitertest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	err = startOnFreePort(func(port int) error {
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return s.start()
	})
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	return s
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
func (s *RedisServer) Stop() { s.kill() }

// Pause stops the server process (SIGSTOP) without closing its sockets, so
// clients see a server that accepts but never answers. Resume undoes it;
// Stop works on a paused server too.
func (s *RedisServer) Pause() { s.pause(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *RedisServer) Resume() { s.pause(syscall.SIGCONT) }

// PID is the server's process id, or 0 when it is not running.
func (s *RedisServer) PID() int { return s.pid() }

// Output is what the server has logged since it was last started.
func (s *RedisServer) Output() string { return s.output() }

func (s *RedisServer) pause(sig syscall.Signal) {
	s.t.Helper()
	if err := s.process.signal(sig); err != nil {
		s.t.Fatalf("redis-server on %s: %v", s.Addr, err)
	}
}

func (s *RedisServer) start() error {
	cmd := exec.Command(s.bin, append(nodeArgs(s.port, s.dir), "--databases", "1")...)
	cmd.Dir = s.dir
	return s.launch(cmd, fmt.Sprintf("redis-server on port %d", s.port), redisStartTimeout,
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
