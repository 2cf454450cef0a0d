//go:build integration

package limitertest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisProc is one redis-server process (a node or a sentinel) owned by a
// test and stopped by its PID when the test ends.
type redisProc struct {
	Addr string
	process
}

// startRedisProc starts redis-server on a free loopback port with the
// arguments args(port) gives (a config file first, for a sentinel), waits
// until it answers PING, and tries other ports when the one found free was
// taken before the server bound it.
func startRedisProc(t testing.TB, dir string, args func(port int) ([]string, error)) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found in PATH (%v): run `make deps`", err)
	}
	p := &redisProc{}
	t.Cleanup(p.Kill)
	err = startOnFreePort(func(port int) error {
		a, err := args(port)
		if err != nil {
			return err
		}
		p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, a...)
		cmd.Dir = dir
		return p.launch(cmd, "redis-server on "+p.Addr, redisStartTimeout,
			func() error { return pingRedis(p.Addr, 200*time.Millisecond) }, p.Kill)
	})
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	return p
}

// Kill stops the process with SIGKILL (like a crash) and waits for it.
func (p *redisProc) Kill() { p.kill() }

// Output is what the process printed.
func (p *redisProc) Output() string { return p.output() }

// nodeArgs are the arguments of a throwaway node: loopback, no
// persistence, quiet.
func nodeArgs(port int, dir string) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--dir", dir, "--logfile", "", "--loglevel", "warning"}
}

// command sends one command over a fresh connection and returns the reply
// as text: a status or error line, a bulk string, or the elements of an
// array of bulk strings joined by newlines.
func command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		var parts []string
		for i := 0; i < n; i++ {
			s, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// RedisCluster is a Redis Cluster of masters on loopback ports, owned by
// one test.
type RedisCluster struct {
	// Addrs are the masters' host:port.
	Addrs []string
	nodes []*redisProc
}

// StartRedisCluster starts masters redis-server nodes in cluster mode on
// free loopback ports (with their bus ports chosen too), joins them with
// `redis-cli --cluster create`, waits until every node reports
// cluster_state:ok, and stops them when t ends.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH (%v): run `make deps`", err)
	}
	c := &RedisCluster{}
	for i := 0; i < masters; i++ {
		dir := t.TempDir()
		n := startRedisProc(t, dir, func(port int) ([]string, error) {
			bus, err := freePort()
			return append(nodeArgs(port, dir), "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--cluster-node-timeout", "2000"), err
		})
		c.nodes = append(c.nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range c.Addrs {
		Eventually(t, 20*time.Second, "cluster node "+a+" to report cluster_state:ok", func() error {
			info, err := command(a, "CLUSTER", "INFO")
			if err == nil && !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s", info)
			}
			return err
		})
	}
	return c
}

// URL is the redis+cluster URL naming every master.
func (c *RedisCluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs, ",") }

// RedisSentinel is one master, one replica and one sentinel watching them,
// on loopback ports, owned by one test.
type RedisSentinel struct {
	// MasterName is the name the sentinel monitors the master under.
	MasterName   string
	SentinelAddr string
	nodes        map[string]*redisProc // by address
	sentinel     *redisProc
}

// StartRedisSentinel starts a master, a replica of it and a sentinel with
// quorum 1 and a down-after of 500 ms, and waits until the sentinel knows
// the replica. Everything is stopped when t ends.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{MasterName: "sluice", nodes: map[string]*redisProc{}}
	mdir := t.TempDir()
	var mport int
	master := startRedisProc(t, mdir, func(port int) ([]string, error) {
		mport = port
		return nodeArgs(port, mdir), nil
	})
	s.nodes[master.Addr] = master
	rdir := t.TempDir()
	var rport int
	replica := startRedisProc(t, rdir, func(port int) ([]string, error) {
		rport = port
		return append(nodeArgs(port, rdir), "--replicaof", "127.0.0.1", strconv.Itoa(mport)), nil
	})
	s.nodes[replica.Addr] = replica
	raddr := replica.Addr

	sdir := t.TempDir()
	conf := filepath.Join(sdir, "sentinel.conf")
	s.sentinel = startRedisProc(t, sdir, func(port int) ([]string, error) {
		cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nlogfile \"\"\nloglevel warning\n"+
			"sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 500\n"+
			"sentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n",
			port, sdir, s.MasterName, mport, s.MasterName, s.MasterName, s.MasterName)
		return []string{conf, "--sentinel"}, os.WriteFile(conf, []byte(cfg), 0o644)
	})
	s.SentinelAddr = s.sentinel.Addr
	saddr := s.SentinelAddr

	// Wait until the replica has synced and the sentinel has seen it.
	Eventually(t, 20*time.Second, "the replica to sync and the sentinel to see it", func() error {
		info, _ := command(raddr, "INFO", "replication")
		reps, _ := command(saddr, "SENTINEL", "REPLICAS", s.MasterName)
		if strings.Contains(info, "master_link_status:up") && strings.Contains(reps, strconv.Itoa(rport)) {
			return nil
		}
		return fmt.Errorf("replica %q; sentinel replicas %q", info, reps)
	})
	return s
}

// URL is the redis+sentinel URL of the setup.
func (s *RedisSentinel) URL() string {
	return "redis+sentinel://" + s.SentinelAddr + "/" + s.MasterName
}

// Master is the address the sentinel currently names as master.
func (s *RedisSentinel) Master(t testing.TB) string {
	t.Helper()
	out, err := command(s.SentinelAddr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
	if err != nil {
		t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME: %v", err)
	}
	host, port, _ := strings.Cut(out, "\n")
	return net.JoinHostPort(host, port)
}

// KillMaster kills the current master (SIGKILL) and returns its address.
// The sentinel promotes the replica after its down-after time.
func (s *RedisSentinel) KillMaster(t testing.TB) string {
	t.Helper()
	m := s.Master(t)
	p, ok := s.nodes[m]
	if !ok {
		t.Fatalf("master %s is not one of this setup's nodes", m)
	}
	p.Kill()
	return m
}

// WaitFailover waits until the sentinel names a master other than old and
// that node answers as a master, up to timeout, and returns it.
func (s *RedisSentinel) WaitFailover(t testing.TB, old string, timeout time.Duration) string {
	t.Helper()
	var m string
	Eventually(t, timeout, "a failover from "+old, func() error {
		m = s.Master(t)
		if m == old {
			return fmt.Errorf("sentinel names %s", m)
		}
		role, err := command(m, "ROLE")
		if err != nil {
			return fmt.Errorf("sentinel names %s: ROLE: %w", m, err)
		}
		if !strings.HasPrefix(role, "master") {
			return fmt.Errorf("sentinel names %s, whose role is %q", m, role)
		}
		return nil
	})
	return m
}
