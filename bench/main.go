package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"
)

// Exit codes of Main.
const (
	ExitPass   = 0 // every target held
	ExitFail   = 1 // a target failed, or the run or its report could not be done
	ExitUsage  = 2 // bad flags
	usageIntro = `usage: sluice bench [flags]

Drives an Envoy rate-limit server (envoy.service.ratelimit.v3 ShouldRateLimit
over gRPC) and reports throughput, latency and, with -limit, accuracy against
an exact token bucket. Closed loop by default (-concurrency); -rate selects
the open loop, whose latency counts from each request's intended send time.

Only loopback addresses (127.0.0.0/8, ::1, localhost) are loaded unless
-allow-remote is given. A run always stops: after -warmup plus -duration,
or plus -requests requests (then capped by -duration, default 1h).
Exit status: 0 targets held, 1 a target failed, 2 usage error. The
error rate is a target by default (-max-error-rate; 1 turns it off).

flags:
`
)

// Main is the sluice bench command: it parses args (without the program
// and subcommand names), runs, writes the text report to stdout and the
// progress lines and problems to stderr, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, files, err := ParseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitPass
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench: %v\n", err)
		return ExitUsage
	}
	defer TuneGC()()
	rep, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench: %v\n", err)
		return ExitFail
	}
	code := ExitPass
	if !rep.Pass {
		code = ExitFail
	}
	if err := rep.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "sluice bench: write report: %v\n", err)
		code = ExitFail
	}
	if files.JSON != "" {
		if err := writeFile(files.JSON, rep.WriteJSON); err != nil {
			fmt.Fprintf(stderr, "sluice bench: %v\n", err)
			code = ExitFail
		}
	}
	if files.HTML != "" {
		if err := writeFile(files.HTML, rep.WriteHTML); err != nil {
			fmt.Fprintf(stderr, "sluice bench: %v\n", err)
			code = ExitFail
		}
	}
	return code
}

// LoadGCPercent is the garbage collector's target while a load generator
// runs: it allocates per request and shares the machine with the server
// under test, so fewer collections leave more CPU to what is measured.
const LoadGCPercent = 400

// TuneGC sets the collector's target to LoadGCPercent unless GOGC is set,
// and returns the function that restores it.
func TuneGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(LoadGCPercent)
	return func() { debug.SetGCPercent(prev) }
}

func writeFile(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write report %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", name, err)
	}
	return nil
}

// Outputs names the report files to write; empty means none.
type Outputs struct{ JSON, HTML string }

// ParseArgs turns the command line into Options (validated) and the report
// files to write. Usage and flag errors go to stderr; -h returns
// flag.ErrHelp.
func ParseArgs(args []string, stderr io.Writer) (Options, Outputs, error) {
	o := DefaultOptions()
	var out Outputs
	fs := flag.NewFlagSet("sluice bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageIntro)
		fs.PrintDefaults()
	}

	addrs := fs.String("addr", strings.Join(o.Addrs, ","), "server `host:port`s, comma-separated; requests go round-robin across them")
	fs.IntVar(&o.Conns, "conns", o.Conns, "gRPC connections per address")
	fs.StringVar(&o.Client, "client", o.Client, "client: lean (cleartext HTTP/2 written directly, a fraction of gRPC-Go's CPU per call) or grpc (gRPC-Go)")
	fs.BoolVar(&o.AllowRemote, "allow-remote", false, "allow addresses that are not loopback")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "closed loop: concurrent requests")
	fs.Float64Var(&o.Rate, "rate", 0, "open loop: requests per second (0: closed loop)")
	fs.StringVar(&o.Arrival, "arrival", o.Arrival, "open loop arrivals: poisson or uniform")
	fs.IntVar(&o.Workers, "workers", o.Workers, "open loop: most requests in flight; later ones wait, and the wait counts")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "length of the measured phase; with -requests, its cap (default then 1h)")
	fs.Int64Var(&o.Requests, "requests", 0, "length of the measured phase in requests")
	fs.DurationVar(&o.Warmup, "warmup", o.Warmup, "traffic before the measured phase, left out of the figures")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "per request (open loop: from the intended send time)")
	fs.StringVar(&o.Domain, "domain", o.Domain, "rate-limit domain")
	fs.StringVar(&o.Key, "key", o.Key, "descriptor key; with -descriptors K the keys are KEY, KEY2 … KEYK")
	fs.IntVar(&o.Values, "values", o.Values, "distinct values per descriptor key")
	fs.StringVar(&o.ValuePrefix, "value-prefix", "", "values are PREFIX0, PREFIX1, …; default a random prefix, so buckets start full")
	fs.StringVar(&o.Dist, "dist", o.Dist, "value distribution: uniform or zipf")
	fs.Float64Var(&o.ZipfS, "zipf-s", o.ZipfS, "zipf exponent (> 0)")
	hits := fs.Uint("hits", uint(o.Hits), "the request's hits_addend (tokens per descriptor)")
	fs.StringVar(&o.Workload, "workload", o.Workload, "admission (each request pays -hits) or usage (-concurrency streams: a check with hits_addend 0, then when OK a report of a -cost; needs -limit)")
	cost := fs.String("cost", "100-300", "usage workload: each report's cost, `MIN-MAX` (uniform) or N")
	fs.IntVar(&o.Descriptors, "descriptors", o.Descriptors, "descriptors per request, each with its own key and value")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed (0: random)")
	limit := fs.String("limit", "", "the server's limit per bucket, `REQUESTS/UNIT[,BURST]` (e.g. 100/second,200), for the accuracy figure")
	fs.DurationVar(&o.ClockSlack, "clock-slack", o.ClockSlack, "accuracy: time added to each bucket's span for coarse server clocks")
	fs.DurationVar(&o.Targets.MaxP99, "max-p99", 0, "target: p99 latency at most this")
	fs.Float64Var(&o.Targets.MaxErrorRate, "max-error-rate", o.Targets.MaxErrorRate, "target: errors/requests at most this, 0 to 1 (1: not checked)")
	fs.Float64Var(&o.Targets.MinRPS, "min-rps", 0, "target: decisions per second at least this")
	fs.Int64Var(&o.Targets.MaxOverAdmission, "max-over-admission", -1, "target: over-admitted tokens at most this, needs -limit (-1: none)")
	fs.StringVar(&out.JSON, "json", "", "write the JSON report to `FILE`")
	fs.StringVar(&out.HTML, "html", "", "write the HTML report to `FILE`")
	quiet := fs.Bool("q", false, "no progress lines")

	err := fs.Parse(args)
	if err != nil {
		return o, out, err
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if o.Requests > 0 && !durationSet {
		o.Duration = time.Hour
	}
	if fs.NArg() > 0 {
		return o, out, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.Addrs = nil
	for _, a := range strings.Split(*addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.Addrs = append(o.Addrs, a)
		}
	}
	if *hits > 1<<32-1 {
		return o, out, fmt.Errorf("-hits %d: too large", *hits)
	}
	o.Hits = uint32(*hits)
	if o.CostMin, o.CostMax, err = ParseCost(*cost); err != nil {
		return o, out, fmt.Errorf("-cost: %w", err)
	}
	if *limit != "" {
		l, err := ParseLimit(*limit)
		if err != nil {
			return o, out, fmt.Errorf("-limit: %w", err)
		}
		o.Limit = &l
	}
	if !*quiet {
		o.Progress = stderr
	}
	return o, out, o.Validate()
}
