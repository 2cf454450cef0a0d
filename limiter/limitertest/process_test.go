//go:build integration

package limitertest

import (
	"errors"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestLaunchPortTaken: a server whose port was taken after freePort found
// it free fails with errPortTaken, and startOnFreePort then tries another
// port rather than failing the test.
func TestLaunchPortTaken(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found in PATH (%v): run `make deps`", err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	dir := t.TempDir()
	var ports []int
	var p process
	t.Cleanup(p.kill)
	err = startOnFreePort(func(port int) error {
		if len(ports) == 0 {
			port = takenPort // as if another process had bound it meanwhile
		}
		ports = append(ports, port)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, nodeArgs(port, dir)...)
		err := p.launch(cmd, "redis-server on "+addr, 10*time.Second,
			func() error { return pingRedis(addr, 200*time.Millisecond) }, p.kill)
		if len(ports) == 1 && !errors.Is(err, errPortTaken) {
			t.Errorf("start on a taken port: %v, want errPortTaken", err)
		}
		return err
	})
	if err != nil {
		t.Fatalf("startOnFreePort: %v", err)
	}
	if len(ports) != 2 || ports[1] == takenPort {
		t.Errorf("ports tried %v, want the taken %d and then another", ports, takenPort)
	}
	if p.pid() == 0 {
		t.Error("no server running after startOnFreePort")
	}
}
