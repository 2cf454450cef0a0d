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
	"slices"
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
  - key: budget
    rate_limit: {unit: second, requests_per_unit: 1000, burst: 2000, charge: usage}
`

// The usage-budget scenario: usageStreams streams check the budget key
// and report a cost of usageCost each after an OK check (bench's usage
// workload), against Sluice on Redis and on the embedded store.
const (
	usageScenario = "usage-budget"
	usageStreams  = 16
	usageCost     = "100-300"
	usageLimit    = "1000/second,2000"
)

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
	restore := bench.TuneGC()
	err := run(ctx, os.Args[1:])
	restore()
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
	client := fs.String("client", bench.ClientLean, "load generator's client: lean or grpc (gRPC-Go)")
	only := fs.String("scenarios", "", "comma-separated scenario names (default all)")
	cfgFile := fs.String("config", "", "config.yaml for the Sluice under test (default: built-in defaults)")
	compare := fs.Bool("compare", false, "also run a baseline Sluice (batching off, no deny cache) and alternate runs, reporting ratios")
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
	// The Sluice under test, and with -compare the baseline built from the
	// same code: one EVALSHA per request and no deny cache.
	var procs []*sluiceProc
	if *compare {
		base, err := startSluice(ctx, bin, filepath.Join(tmp, "run-baseline"), "baseline", baselineYAML, redisAddr, limits)
		if base != nil {
			defer stopProcess(base.cmd)
		}
		if err != nil {
			return err
		}
		procs = append(procs, base)
	}
	cfgYAML := ""
	if *cfgFile != "" {
		b, err := os.ReadFile(*cfgFile)
		if err != nil {
			return err
		}
		cfgYAML = string(b)
	}
	cur, err := startSluice(ctx, bin, filepath.Join(tmp, "run-sluice"), "sluice", cfgYAML, redisAddr, limits)
	if cur != nil {
		defer stopProcess(cur.cmd)
	}
	if err != nil {
		return err
	}
	procs = append(procs, cur)

	host, _ := os.Hostname()
	fmt.Printf("machine: %s, %d CPUs, %s; %s\n", host, runtime.NumCPU(), runtime.Version(), cpuModel())
	fmt.Printf("each run: closed loop, concurrency %d, %s client, %v measured after %v warm-up; %d runs per scenario\n",
		*concurrency, *client, *duration, *warmup, *runs)
	if *compare {
		fmt.Printf("compare: %q (batching off, no deny cache) and %q (defaults) alternate on one Redis\n", procs[0].name, procs[1].name)
	}
	fmt.Println()

	type stats struct{ rps, p50, p99, cpu, gen, redis []float64 }
	var summary []string
	var failed []string // runs whose targets (no over-admission, at most 1% errors) did not hold
	selected := func(name string) bool {
		return *only == "" || slices.ContainsFunc(strings.Split(*only, ","), func(x string) bool { return strings.TrimSpace(x) == name })
	}
	for _, sc := range scenarios {
		if !selected(sc.name) {
			continue
		}
		st := make([]stats, len(procs))
		var over int64
		for r := 1; r <= *runs; r++ {
			// Alternate the order, so neither process always runs on a
			// warmer (or more tired) machine.
			order := make([]int, len(procs))
			for i := range order {
				order[i] = i
				if r%2 == 0 {
					order[i] = len(procs) - 1 - i
				}
			}
			for _, pi := range order {
				p := procs[pi]
				o := bench.DefaultOptions()
				o.Addrs = []string{p.grpc}
				o.Concurrency = *concurrency
				o.Client = *client
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
				// Each run starts with full buckets, so the runs of both
				// processes see the same workload: every standard limit
				// refills completely within a second.
				select {
				case <-time.After(1200 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
				before, _ := cpuMicros(p.cmd.Process.Pid)
				gen0, _ := cpuMicros(os.Getpid())
				calls0, _ := redisCalls(redisAddr)
				rep, err := bench.Run(ctx, o)
				if err != nil {
					return fmt.Errorf("%s %s run %d: %w", p.name, sc.name, r, err)
				}
				calls1, _ := redisCalls(redisAddr)
				after, _ := cpuMicros(p.cmd.Process.Pid)
				gen1, _ := cpuMicros(os.Getpid())
				if err := writeReports(*out, fmt.Sprintf("%s-%s-%d", sc.name, p.name, r), rep); err != nil {
					return err
				}
				perDecision, genPerDecision, redisPerSec := 0.0, 0.0, 0.0
				if rep.Decisions > 0 {
					// Warm-up decisions used CPU too: divide by all of them.
					total := float64(rep.Decisions) * float64(*duration+*warmup) / float64(*duration)
					perDecision = float64(after-before) / total
					genPerDecision = float64(gen1-gen0) / total
					redisPerSec = float64(calls1-calls0) / (*duration + *warmup).Seconds()
				}
				s := &st[pi]
				s.rps = append(s.rps, rep.ThroughputRPS)
				s.p50 = append(s.p50, rep.Latency.P50)
				s.p99 = append(s.p99, rep.Latency.P99)
				s.cpu = append(s.cpu, perDecision)
				s.gen = append(s.gen, genPerDecision)
				s.redis = append(s.redis, redisPerSec)
				if rep.Accuracy != nil {
					over += rep.Accuracy.OverAdmission
				}
				result := "PASS"
				if !rep.Pass {
					result = "FAIL (" + strings.Join(rep.Failed, ", ") + ")"
					failed = append(failed, fmt.Sprintf("%s %s run %d: %s", sc.name, p.name, r, result))
				}
				fmt.Printf("%-17s %-8s run %d: %8.0f decisions/s  p50 %6.3f ms  p99 %6.3f ms  errors %d  OK %d OVER_LIMIT %d  server CPU %.1f us/decision  load generator %.1f us  Redis scripts %.0f/s  %s\n",
					sc.name, p.name, r, rep.ThroughputRPS, rep.Latency.P50, rep.Latency.P99, rep.ErrorCount,
					rep.Codes["OK"], rep.Codes["OVER_LIMIT"], perDecision, genPerDecision, redisPerSec, result)
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
		for pi, p := range procs {
			s := st[pi]
			line := fmt.Sprintf("%-17s %-8s %10.0f %9.3f %9.3f %12.1f %10.1f %13.0f %14d",
				sc.name, p.name, median(s.rps), median(s.p50), median(s.p99), median(s.cpu), median(s.gen), median(s.redis), over)
			if *compare && pi == len(procs)-1 && median(st[0].rps) > 0 {
				line += fmt.Sprintf("   x%.2f rps, p99 x%.2f; run by run x%s", median(s.rps)/median(st[0].rps),
					median(s.p99)/median(st[0].p99), pairedRatios(st[0].rps, s.rps))
			}
			summary = append(summary, line)
		}
	}
	var usageTable string
	if selected(usageScenario) {
		mem, err := startSluice(ctx, bin, filepath.Join(tmp, "run-memory"), "memory", cfgYAML, "", limits)
		if mem != nil {
			defer stopProcess(mem.cmd)
		}
		if err != nil {
			return err
		}
		stores := []*sluiceProc{{name: "redis", cmd: cur.cmd, grpc: cur.grpc}, mem}
		var fails []string
		if usageTable, fails, err = runUsage(ctx, stores, *runs, *duration, *warmup, *client, *out); err != nil {
			return err
		}
		failed = append(failed, fails...)
	}
	header := fmt.Sprintf("%-17s %-8s %10s %9s %9s %12s %10s %13s %14s", "scenario", "server", "rps", "p50 ms", "p99 ms", "cpu us/dec", "gen us/dec", "redis calls/s", "over-admitted")
	if *compare {
		header += "   ratio (sluice/baseline: of the medians; of each run's pair, median and range)"
	}
	table := header + "\n" + strings.Join(summary, "\n") + "\n" + usageTable
	fmt.Printf("\nmedians of %d runs:\n%s", *runs, table)
	fmt.Printf("reports in %s/\n", *out)
	if len(failed) > 0 {
		table += "\nfailed runs:\n" + strings.Join(failed, "\n") + "\n"
	}
	if err := os.WriteFile(filepath.Join(*out, "summary.txt"), []byte(table), 0o644); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d runs failed their targets: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// runUsage runs the usage-budget scenario runs times on each of stores
// (the Sluice on Redis, the one on the embedded store), writes each run's
// reports, prints a line per run, and returns the table of its medians
// and the runs that failed their verdict.
func runUsage(ctx context.Context, stores []*sluiceProc, runs int, duration, warmup time.Duration, client, out string) (string, []string, error) {
	lim, err := bench.ParseLimit(usageLimit)
	if err != nil {
		return "", nil, err
	}
	lo, hi, err := bench.ParseCost(usageCost)
	if err != nil {
		return "", nil, err
	}
	fmt.Printf("\n%s: %d streams check (hits_addend 0), then report a cost %s, against a charge: usage budget %s\n",
		usageScenario, usageStreams, usageCost, usageLimit)
	var rows, failed []string
	for _, p := range stores {
		var used, frac, checks, allowance []float64
		var bound float64
		for r := 1; r <= runs; r++ {
			o := bench.DefaultOptions()
			o.Addrs = []string{p.grpc}
			o.Workload = bench.WorkloadUsage
			o.Concurrency = usageStreams
			o.Client = client
			o.Duration, o.Warmup = duration, warmup
			o.Domain, o.Key, o.Values = "bench", "budget", 1
			o.Limit = &lim
			o.CostMin, o.CostMax = lo, hi
			rep, err := bench.Run(ctx, o)
			if err != nil {
				return "", nil, fmt.Errorf("%s %s run %d: %w", p.name, usageScenario, r, err)
			}
			if err := writeReports(out, fmt.Sprintf("%s-%s-%d", usageScenario, p.name, r), rep); err != nil {
				return "", nil, err
			}
			u := rep.Usage
			result := "PASS"
			if !rep.Pass {
				result = "FAIL (" + strings.Join(rep.Failed, ", ") + ")"
				failed = append(failed, fmt.Sprintf("%s %s run %d: %s", usageScenario, p.name, r, result))
			}
			fmt.Printf("%-17s %-8s run %d: used %d tokens = %.3f x allowance %.0f (bound +%.0f)  checks %d (%d OK)  reports %d  errors %d  p99 %.3f ms  %s\n",
				usageScenario, p.name, r, u.UsedTokens, u.UsedFraction, u.AllowanceTokens, u.BoundTokens,
				u.Checks, u.ChecksOK, u.Reports, rep.ErrorCount, rep.Latency.P99, result)
			used = append(used, float64(u.UsedTokens))
			frac = append(frac, u.UsedFraction)
			checks = append(checks, float64(u.Checks)/(duration+warmup).Seconds())
			allowance, bound = append(allowance, u.AllowanceTokens), u.BoundTokens
			if ctx.Err() != nil {
				return "", nil, ctx.Err()
			}
		}
		rows = append(rows, fmt.Sprintf("%-17s %-8s %10.0f %10.0f %8.0f %10.3f %10.0f",
			usageScenario, p.name, median(used), median(allowance), bound, median(frac), median(checks)))
	}
	table := fmt.Sprintf("\n%-17s %-8s %10s %10s %8s %10s %10s\n%s\n", "usage scenario", "store", "used", "allowance", "bound", "used/allow", "checks/s",
		strings.Join(rows, "\n"))
	return table, failed, nil
}

// pairedRatios gives the median and range of b[i]/a[i]. The runs of a
// pair are next to each other in time, so on a machine whose speed drifts
// (a shared VM) their ratio is steadier than the ratio of the medians.
func pairedRatios(a, b []float64) string {
	var r []float64
	for i := range min(len(a), len(b)) {
		if a[i] > 0 {
			r = append(r, b[i]/a[i])
		}
	}
	if len(r) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f (%.2f-%.2f)", median(r), slices.Min(r), slices.Max(r))
}

// baselineYAML configures the baseline Sluice of -compare.
const baselineYAML = `redis:
  batching: "off"
  deny_cache_size: 0
`

// sluiceProc is one Sluice under test.
type sluiceProc struct {
	name string
	cmd  *exec.Cmd
	grpc string
}

// startSluice starts bin serve in dir (with config.yaml holding cfgYAML
// when not empty) on free loopback ports, and waits until it is ready. An
// empty redisAddr leaves it on the embedded memory store.
func startSluice(ctx context.Context, bin, dir, name, cfgYAML, redisAddr, limits string) (*sluiceProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if cfgYAML != "" {
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfgYAML), 0o644); err != nil {
			return nil, err
		}
	}
	grpcPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	grpcAddr := "127.0.0.1:" + strconv.Itoa(grpcPort)
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	srv := exec.Command(bin, "serve")
	srv.Dir = dir // config.yaml there, or built-in defaults, plus the environment
	srv.Env = append(os.Environ(),
		"SLUICE_GRPC_ADDR="+grpcAddr, "SLUICE_HTTP_ADDR="+httpAddr,
		"SLUICE_LIMITS="+limits, "SLUICE_LOG_LEVEL=warn")
	if redisAddr != "" {
		srv.Env = append(srv.Env, "SLUICE_REDIS_URL=redis://"+redisAddr)
	} else {
		// Not inherited from the caller's environment either.
		srv.Env = slices.DeleteFunc(srv.Env, func(e string) bool { return strings.HasPrefix(e, "SLUICE_REDIS_URL=") })
	}
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start sluice: %w", err)
	}
	p := &sluiceProc{name: name, cmd: srv, grpc: grpcAddr}
	if err := waitReady(ctx, "http://"+httpAddr+"/health/ready"); err != nil {
		return p, err
	}
	return p, nil
}

// redisCommand sends one command over a fresh connection and returns the
// raw reply.
func redisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second)) // a failure shows as the read's error
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	if strings.HasPrefix(line, "-") {
		return "", errors.New(strings.TrimSpace(line[1:]))
	}
	return strings.TrimSpace(line), nil
}

// redisCalls is the number of script calls (EVALSHA and EVAL) Redis has
// run, from INFO commandstats.
func redisCalls(addr string) (int64, error) {
	info, err := redisCommand(addr, "INFO", "commandstats")
	if err != nil {
		return 0, err
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") && !strings.HasPrefix(line, "cmdstat_eval:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "calls=")
		n, _, _ := strings.Cut(rest, ",")
		v, _ := strconv.ParseInt(n, 10, 64)
		total += v
	}
	return total, nil
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
			_ = c.SetDeadline(time.Now().Add(time.Second)) // a failure shows as the read's error
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
	_ = c.Process.Signal(syscall.SIGTERM) // fails only when it has exited already
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }() // stopped on purpose: the status says nothing
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.Process.Kill()
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
