// Command suite is `make bench`: it starts a local redis-server and a Sluice
// built from this tree, both on free loopback ports, runs the standard
// scenarios with the bench harness several times each, writes every report
// (text, JSON, HTML) to a folder and prints the medians. It stops both
// servers, by their PIDs, when it ends or is interrupted.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-rl/sluice/bench"
)

const limitsYAML = `domain: bench
descriptors:
  - key: k
    rate_limit: {unit: second, requests_per_unit: 1000, burst: 1000}
  - key: k2
    rate_limit: {unit: second, requests_per_unit: 1000, burst: 1000}
  - key: k3
    rate_limit: {unit: second, requests_per_unit: 1000, burst: 1000}
  - key: hot
    rate_limit: {unit: second, requests_per_unit: 100, burst: 100}
`

// scenario is one standard workload.
type scenario struct {
	name        string
	key         string
	values      int
	descriptors int
	limit       string
}

var scenarios = []scenario{
	{name: "all-ok-10k", key: "k", values: 10000, descriptors: 1, limit: "1000/second,1000"},
	{name: "hot-key", key: "hot", values: 1, descriptors: 1, limit: "100/second,100"},
	{name: "multi-descriptor", key: "k", values: 10000, descriptors: 3, limit: "1000/second,1000"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench suite:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	out := fs.String("out", "bench-reports", "folder for the reports")
	runs := fs.Int("runs", 3, "runs of each scenario; the summary gives medians")
	duration := fs.Duration("duration", 10*time.Second, "measured time of each run")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up of each run, not measured")
	concurrency := fs.Int("concurrency", 50, "closed-loop workers")
	only := fs.String("scenarios", "", "comma-separated scenario names (default all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bin := filepath.Join(tmp, "sluice")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sluice")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build sluice: %w", err)
	}

	redisPort, err := freePort()
	if err != nil {
		return err
	}
	redis := exec.Command("redis-server", "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", tmp, "--loglevel", "warning")
	if err := redis.Start(); err != nil {
		return fmt.Errorf("start redis-server (make deps installs it): %w", err)
	}
	defer stopProcess(redis)
	redisAddr := "127.0.0.1:" + strconv.Itoa(redisPort)
	if err := waitRedis(ctx, redisAddr); err != nil {
		return err
	}

	limits := filepath.Join(tmp, "limits.yaml")
	if err := os.WriteFile(limits, []byte(limitsYAML), 0o644); err != nil {
		return err
	}
	grpcPort, err := freePort()
	if err != nil {
		return err
	}
	httpPort, err := freePort()
	if err != nil {
		return err
	}
	grpcAddr := "127.0.0.1:" + strconv.Itoa(grpcPort)
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	srv := exec.Command(bin, "serve")
	srv.Dir = tmp // no config.yaml there: built-in defaults plus the environment
	srv.Env = append(os.Environ(),
		"SLUICE_GRPC_ADDR="+grpcAddr, "SLUICE_HTTP_ADDR="+httpAddr,
		"SLUICE_REDIS_URL=redis://"+redisAddr, "SLUICE_LIMITS="+limits, "SLUICE_LOG_LEVEL=warn")
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start sluice: %w", err)
	}
	defer stopProcess(srv)
	if err := waitReady(ctx, "http://"+httpAddr+"/health/ready"); err != nil {
		return err
	}

	host, _ := os.Hostname()
	fmt.Printf("machine: %s, %d CPUs, %s; %s\n", host, runtime.NumCPU(), runtime.Version(), cpuModel())
	fmt.Printf("each run: closed loop, concurrency %d, %v measured after %v warm-up; %d runs per scenario\n\n",
		*concurrency, *duration, *warmup, *runs)

	var summary []string
	for _, sc := range scenarios {
		if *only != "" && !contains(strings.Split(*only, ","), sc.name) {
			continue
		}
		var rps, p50, p99, cpu []float64
		var over int64
		for r := 1; r <= *runs; r++ {
			o := bench.DefaultOptions()
			o.Addrs = []string{grpcAddr}
			o.Concurrency = *concurrency
			o.Duration = *duration
			o.Warmup = *warmup
			o.Domain = "bench"
			o.Key = sc.key
			o.Values = sc.values
			o.Descriptors = sc.descriptors
			lim, err := bench.ParseLimit(sc.limit)
			if err != nil {
				return err
			}
			o.Limit = &lim
			o.Targets.MaxOverAdmission = 0
			before, _ := cpuMicros(srv.Process.Pid)
			rep, err := bench.Run(ctx, o)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", sc.name, r, err)
			}
			after, _ := cpuMicros(srv.Process.Pid)
			if err := writeReports(*out, fmt.Sprintf("%s-%d", sc.name, r), rep); err != nil {
				return err
			}
			perDecision := 0.0
			if rep.Decisions > 0 {
				// Warm-up decisions used CPU too: divide by all of them.
				total := float64(rep.Decisions) * float64(*duration+*warmup) / float64(*duration)
				perDecision = float64(after-before) / total
			}
			rps = append(rps, rep.ThroughputRPS)
			p50 = append(p50, rep.Latency.P50)
			p99 = append(p99, rep.Latency.P99)
			cpu = append(cpu, perDecision)
			if rep.Accuracy != nil {
				over += rep.Accuracy.OverAdmission
			}
			fmt.Printf("%-17s run %d: %8.0f decisions/s  p50 %6.3f ms  p99 %6.3f ms  errors %d  OK %d OVER_LIMIT %d  server CPU %.1f us/decision\n",
				sc.name, r, rep.ThroughputRPS, rep.Latency.P50, rep.Latency.P99, rep.ErrorCount,
				rep.Codes["OK"], rep.Codes["OVER_LIMIT"], perDecision)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		summary = append(summary, fmt.Sprintf("%-17s %10.0f %9.3f %9.3f %12.1f %14d",
			sc.name, median(rps), median(p50), median(p99), median(cpu), over))
	}
	header := fmt.Sprintf("%-17s %10s %9s %9s %12s %14s", "scenario", "rps", "p50 ms", "p99 ms", "cpu us/dec", "over-admitted")
	table := header + "\n" + strings.Join(summary, "\n") + "\n"
	fmt.Printf("\nmedians of %d runs:\n%s", *runs, table)
	fmt.Printf("reports in %s/\n", *out)
	return os.WriteFile(filepath.Join(*out, "summary.txt"), []byte(table), 0o644)
}

func writeReports(dir, name string, rep *bench.Report) error {
	for ext, write := range map[string]func(io.Writer) error{
		".txt": rep.WriteText, ".json": rep.WriteJSON, ".html": rep.WriteHTML,
	} {
		f, err := os.Create(filepath.Join(dir, name+ext))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
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

func waitRedis(ctx context.Context, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			fmt.Fprint(c, "PING\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("redis-server did not answer PING within 10s")
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("sluice not ready at %s within 20s", url)
}

// stopProcess ends a process this program started: SIGTERM, then SIGKILL
// after five seconds.
func stopProcess(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// cpuMicros is the user+system CPU time of a process, from /proc.
func cpuMicros(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("bad /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return (ut + st) * 1e6 / ticksPerSecond, nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "cpu unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if i := strings.IndexByte(line, ':'); i >= 0 {
				return strings.TrimSpace(line[i+1:])
			}
		}
	}
	return "cpu unknown"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}
