// Command abtest measures one change by alternated runs: it starts two
// Sluice processes from one binary on the embedded store (A and B, each
// with its own config.yaml, on free loopback ports), then drives them in
// turn with `sluice bench`, A then B, then B then A, pair after pair, so
// that the drift of a shared machine hits both sides alike. Per run it
// reads the server's CPU (utime+stime from /proc/PID/stat), the load
// generator's CPU (its rusage) and the bench's decisions and p99; it prints
// every pair, the medians and the per-pair ratios B/A. It stops both
// servers, by their PIDs, when it ends or is interrupted.
//
//	go run ./bench/abtest -bin bin/sluice -a a.yaml -b b.yaml -pairs 6
//	go run ./bench/abtest -bin bin/sluice -b-bench '-client grpc'
//
// docs/performance.md records the decisions it was used for.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// limitsYAML allows far more than a closed loop of 50 can ask of one of
// 10k values, so every decision is OK and all runs do the same work.
const limitsYAML = `domain: bench
descriptors:
  - key: k
    rate_limit: {unit: second, requests_per_unit: 1000000, burst: 1000000}
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "abtest:", err)
		os.Exit(1)
	}
}

// side is one of the two servers and the bench flags that drive it.
type side struct {
	name  string
	cmd   *exec.Cmd
	addr  string
	bench []string
}

// sample is one bench run against one side.
type sample struct {
	serverUS  float64 // server CPU µs per decision
	clientUS  float64 // load generator CPU µs per decision
	p99MS     float64
	rps       float64
	decisions int64
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("abtest", flag.ContinueOnError)
	bin := fs.String("bin", "bin/sluice", "the sluice binary (server and load generator)")
	cfgA := fs.String("a", "", "config.yaml of server A (default: built-in defaults)")
	cfgB := fs.String("b", "", "config.yaml of server B (default: built-in defaults)")
	benchA := fs.String("a-bench", "", "extra `sluice bench` flags for runs against A, space-separated")
	benchB := fs.String("b-bench", "", "extra `sluice bench` flags for runs against B, space-separated")
	pairs := fs.Int("pairs", 6, "alternated pairs of runs")
	duration := fs.Duration("duration", 8*time.Second, "measured time of each run")
	warmup := fs.Duration("warmup", 2*time.Second, "warm-up of each run, not measured")
	concurrency := fs.Int("concurrency", 50, "closed-loop workers")
	values := fs.Int("values", 10000, "distinct descriptor values")
	one := fs.Bool("one-server", false, "drive server A on both sides (for load-generator changes); -b is ignored")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pairs < 1 {
		return errors.New("-pairs: must be at least 1")
	}
	tmp, err := os.MkdirTemp("", "sluice-abtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	limits := filepath.Join(tmp, "limits.yaml")
	if err := os.WriteFile(limits, []byte(limitsYAML), 0o644); err != nil {
		return err
	}
	a := &side{name: "A", bench: strings.Fields(*benchA)}
	b := &side{name: "B", bench: strings.Fields(*benchB)}
	servers := []struct {
		sd  *side
		cfg string
	}{{a, *cfgA}, {b, *cfgB}}
	if *one {
		servers = servers[:1]
	}
	for _, s := range servers {
		err := start(ctx, *bin, s.cfg, limits, tmp, s.sd)
		if s.sd.cmd != nil {
			defer stopProcess(s.sd.cmd)
		}
		if err != nil {
			return err
		}
	}
	if *one {
		b.cmd, b.addr = a.cmd, a.addr
	}
	common := []string{"bench", "-q", "-domain", "bench", "-key", "k",
		"-values", strconv.Itoa(*values), "-concurrency", strconv.Itoa(*concurrency),
		"-duration", duration.String(), "-warmup", warmup.String()}

	var as, bs []sample
	fmt.Printf("%-5s %-6s %14s %14s %10s %10s\n", "pair", "side", "server µs/dec", "client µs/dec", "p99 ms", "rps")
	for i := range *pairs {
		order := []*side{a, b}
		if i%2 == 1 {
			order = []*side{b, a}
		}
		for _, sd := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := measure(ctx, *bin, tmp, sd, common)
			if err != nil {
				return fmt.Errorf("pair %d, %s: %w", i+1, sd.name, err)
			}
			if sd == a {
				as = append(as, s)
			} else {
				bs = append(bs, s)
			}
			fmt.Printf("%-5d %-6s %14.2f %14.2f %10.3f %10.0f\n", i+1, sd.name, s.serverUS, s.clientUS, s.p99MS, s.rps)
		}
	}
	fmt.Println()
	report("server CPU µs/decision", as, bs, func(s sample) float64 { return s.serverUS })
	report("client CPU µs/decision", as, bs, func(s sample) float64 { return s.clientUS })
	report("p99 latency ms", as, bs, func(s sample) float64 { return s.p99MS })
	report("throughput decisions/s", as, bs, func(s sample) float64 { return s.rps })
	for _, sd := range servers {
		if hwm, err := peakRSS(sd.sd.cmd.Process.Pid); err == nil {
			fmt.Printf("server %s peak RSS: %.1f MB\n", sd.sd.name, float64(hwm)/1e6)
		}
	}
	return nil
}

// report prints the medians of one figure and the per-pair ratios B/A.
func report(what string, as, bs []sample, f func(sample) float64) {
	var va, vb, ratios []float64
	lower := 0
	for i := range as {
		x, y := f(as[i]), f(bs[i])
		va, vb = append(va, x), append(vb, y)
		ratios = append(ratios, y/x)
		if y < x {
			lower++
		}
	}
	rs := make([]string, len(ratios))
	for i, r := range ratios {
		rs[i] = strconv.FormatFloat(r, 'f', 3, 64)
	}
	fmt.Printf("%s: median A %.3f, B %.3f, B/A %.3f; pairs B/A %s; B lower in %d of %d\n",
		what, median(va), median(vb), median(vb)/median(va), strings.Join(rs, " "), lower, len(as))
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// measure runs the bench once against sd.
func measure(ctx context.Context, bin, tmp string, sd *side, common []string) (sample, error) {
	out := filepath.Join(tmp, "run.json")
	args := append(slices.Clone(common), "-addr", sd.addr, "-json", out)
	args = append(args, sd.bench...)
	before, err := cpuMicros(sd.cmd.Process.Pid)
	if err != nil {
		return sample{}, err
	}
	c := exec.CommandContext(ctx, bin, args...)
	c.Stderr = os.Stderr
	if err := c.Run(); err != nil {
		return sample{}, fmt.Errorf("sluice bench: %w", err)
	}
	after, err := cpuMicros(sd.cmd.Process.Pid)
	if err != nil {
		return sample{}, err
	}
	var rep struct {
		Decisions  int64   `json:"decisions"`
		ErrorCount int64   `json:"error_count"`
		RPS        float64 `json:"throughput_rps"`
		Codes      map[string]int64
		Latency    struct {
			P99 float64 `json:"p99"`
		} `json:"latency_ms"`
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return sample{}, err
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return sample{}, fmt.Errorf("bench report: %w", err)
	}
	if rep.Decisions == 0 || rep.ErrorCount > 0 || rep.Codes["OVER_LIMIT"] > 0 {
		return sample{}, fmt.Errorf("run not all OK: %d decisions, %d errors, %d over limit",
			rep.Decisions, rep.ErrorCount, rep.Codes["OVER_LIMIT"])
	}
	// The server's CPU covers warm-up too; so does the client's: both are
	// divided by the measured decisions, which scales both sides alike.
	client := c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	return sample{
		serverUS:  float64(after-before) / float64(rep.Decisions),
		clientUS:  float64(client.Microseconds()) / float64(rep.Decisions),
		p99MS:     rep.Latency.P99,
		rps:       rep.RPS,
		decisions: rep.Decisions,
	}, nil
}

// start runs a Sluice on the embedded store with cfg (or the defaults).
func start(ctx context.Context, bin, cfg, limits, tmp string, sd *side) error {
	gp, err := freePort()
	if err != nil {
		return err
	}
	hp, err := freePort()
	if err != nil {
		return err
	}
	sd.addr = "127.0.0.1:" + strconv.Itoa(gp)
	args := []string{"serve"}
	if cfg != "" {
		args = append(args, "-config", cfg)
	} else {
		// Without -config, serve reads ./config.yaml when present.
		empty := filepath.Join(tmp, "empty-"+sd.name+".yaml")
		if err := os.WriteFile(empty, []byte("{}\n"), 0o644); err != nil {
			return err
		}
		args = append(args, "-config", empty)
	}
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "SLUICE_GRPC_ADDR="+sd.addr, "SLUICE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(hp),
		"SLUICE_LIMITS="+limits, "SLUICE_LOG_LEVEL=warn")
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Start(); err != nil {
		return fmt.Errorf("start sluice %s: %w", sd.name, err)
	}
	sd.cmd = c
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if conn, err := net.DialTimeout("tcp", sd.addr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("sluice %s: not listening on %s after 10s", sd.name, sd.addr)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func stopProcess(c *exec.Cmd) {
	_ = c.Process.Signal(syscall.SIGTERM) // already gone: Wait returns at once
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.Process.Kill()
		<-done
	}
}

// cpuMicros is the user+system CPU time of a process, from /proc.
func cpuMicros(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	// Clock ticks are 1/100 s on Linux (USER_HZ).
	return (ut + st) * 10000, nil
}

// peakRSS is VmHWM from /proc/PID/status, in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}
