package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Loop modes.
const (
	ModeClosed = "closed" // Concurrency workers, each sends its next request when the last one is answered
	ModeOpen   = "open"   // requests are scheduled at Rate per second whatever the server does
)

// Arrival processes of the open loop.
const (
	ArrivalUniform = "uniform" // evenly spaced, 1/Rate apart
	ArrivalPoisson = "poisson" // exponential gaps with mean 1/Rate
)

// Value distributions.
const (
	DistUniform = "uniform"
	DistZipf    = "zipf"
)

// Bounds that keep one run's memory small.
const (
	maxDescriptors = 16
	maxBuckets     = 2_000_000 // Descriptors x Values, one accuracy record each
	maxWorkers     = 10_000
)

// Limit is the token-bucket limit the server applies to every bucket the
// workload touches, for the accuracy figure: Burst tokens of capacity,
// refilled continuously at Rate tokens per second.
type Limit struct {
	RequestsPerUnit uint64
	Unit            string // second, minute, hour, day, week, month (30 days), year (365 days)
	Burst           uint64 // capacity; RequestsPerUnit when not given
}

var unitSeconds = map[string]float64{
	"second": 1, "minute": 60, "hour": 3600, "day": 86400,
	"week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400,
}

// Rate is the refill rate in tokens per second.
func (l Limit) Rate() float64 { return float64(l.RequestsPerUnit) / unitSeconds[l.Unit] }

// String returns the -limit form, "100/second,200".
func (l Limit) String() string {
	return fmt.Sprintf("%d/%s,%d", l.RequestsPerUnit, l.Unit, l.Burst)
}

// ParseLimit parses "100/second" or "100/second,200" (burst 200). Units are
// second, minute, hour, day, week, month and year, as in limit files.
func ParseLimit(s string) (Limit, error) {
	rest, burst, hasBurst := strings.Cut(strings.TrimSpace(s), ",")
	n, unit, ok := strings.Cut(rest, "/")
	if !ok {
		return Limit{}, fmt.Errorf("limit %q: want REQUESTS/UNIT[,BURST], e.g. 100/second,200", s)
	}
	var l Limit
	var err error
	if l.RequestsPerUnit, err = strconv.ParseUint(strings.TrimSpace(n), 10, 64); err != nil || l.RequestsPerUnit == 0 {
		return Limit{}, fmt.Errorf("limit %q: requests per unit must be a positive integer", s)
	}
	l.Unit = strings.ToLower(strings.TrimSpace(unit))
	if _, ok := unitSeconds[l.Unit]; !ok {
		return Limit{}, fmt.Errorf("limit %q: unknown unit %q (second, minute, hour, day, week, month, year)", s, unit)
	}
	l.Burst = l.RequestsPerUnit
	if hasBurst {
		if l.Burst, err = strconv.ParseUint(strings.TrimSpace(burst), 10, 64); err != nil || l.Burst == 0 {
			return Limit{}, fmt.Errorf("limit %q: burst must be a positive integer", s)
		}
	}
	return l, nil
}

// Targets turn a run into a pass/fail gate. A zero field (or -1 where
// noted) is not checked, except MaxErrorRate.
type Targets struct {
	MaxP99 time.Duration // p99 latency at most this
	// MaxErrorRate: errors / requests at most this, 0 to 1; 1 is not
	// checked. It is checked by default (DefaultMaxErrorRate), so that a
	// run whose calls fail is never reported a pass.
	MaxErrorRate     float64
	MinRPS           float64 // measured throughput at least this
	MaxOverAdmission int64   // over-admitted tokens at most this; -1: not checked; needs Limit
}

// The clients: gRPC-Go, or the lean HTTP/2 client of this package, which
// does one unary method over cleartext HTTP/2 at a fraction of the CPU.
const (
	ClientGRPC = "grpc"
	ClientLean = "lean"
)

// Options describe one run. Start from DefaultOptions.
type Options struct {
	Addrs       []string      // servers, host:port; requests go round-robin across them
	Conns       int           // gRPC connections per address
	Client      string        // ClientGRPC or ClientLean
	AllowRemote bool          // permit addresses that are not loopback
	Concurrency int           // closed loop: workers; used when Rate is 0
	Rate        float64       // open loop: requests per second; 0 selects the closed loop
	Arrival     string        // open loop: ArrivalPoisson or ArrivalUniform
	Workers     int           // open loop: most requests in flight; further ones wait (and their wait counts)
	Duration    time.Duration // measured phase length; with Requests, its cap (0: none)
	Requests    int64         // measured phase length in requests (0: Duration alone)
	Warmup      time.Duration // traffic before the measured phase, excluded from every figure
	Timeout     time.Duration // per request; in the open loop counted from the intended send time

	Domain      string
	Key         string  // descriptor i (from 0) has the single entry Key for i = 0, Key+(i+1) after: key, key2, key3
	Values      int     // distinct values per descriptor
	ValuePrefix string  // values are ValuePrefix + index; empty: a random prefix, so each run starts with fresh buckets
	Dist        string  // DistUniform or DistZipf
	ZipfS       float64 // Zipf exponent (> 0); rank k is chosen with weight 1/(k+1)^s
	Hits        uint32  // the request's hits_addend: tokens each descriptor costs
	Workload    string  // WorkloadAdmission or WorkloadUsage
	CostMin     uint64  // usage workload: each report's cost is drawn uniformly from [CostMin, CostMax]
	CostMax     uint64
	Descriptors int    // descriptors per request, each drawn independently
	Seed        uint64 // 0: random

	Limit      *Limit        // the server's limit per bucket; nil: no accuracy figure
	ClockSlack time.Duration // accuracy: added to each bucket's time span (see Accuracy)

	Targets Targets

	// Progress, when not nil, receives a line a second while the run goes.
	Progress io.Writer
}

// DefaultOptions returns the defaults of the sluice bench command line.
func DefaultOptions() Options {
	return Options{
		Addrs:       []string{"127.0.0.1:8081"},
		Conns:       1,
		Client:      ClientLean,
		Concurrency: 16,
		Arrival:     ArrivalPoisson,
		Workers:     256,
		Duration:    10 * time.Second,
		Warmup:      time.Second,
		Timeout:     time.Second,
		Domain:      "edge",
		Key:         "remote_address",
		Values:      100,
		Dist:        DistUniform,
		ZipfS:       1.1,
		Hits:        1,
		Workload:    WorkloadAdmission,
		CostMin:     100,
		CostMax:     300,
		Descriptors: 1,
		ClockSlack:  time.Millisecond,
		Targets:     Targets{MaxErrorRate: DefaultMaxErrorRate, MaxOverAdmission: -1},
	}
}

// DefaultMaxErrorRate is the error rate above which a run fails unless
// -max-error-rate says otherwise.
const DefaultMaxErrorRate = 0.01

// Mode is ModeOpen when Rate is set, else ModeClosed.
func (o *Options) Mode() string {
	if o.Rate > 0 {
		return ModeOpen
	}
	return ModeClosed
}

// DescriptorKey is the key of descriptor i (from 0): Key, Key2, Key3, …
func (o *Options) DescriptorKey(i int) string {
	if i == 0 {
		return o.Key
	}
	return o.Key + strconv.Itoa(i+1)
}

// Validate reports the first bad field, named as its flag.
func (o *Options) Validate() error {
	if len(o.Addrs) == 0 {
		return errors.New("-addr: at least one address is needed")
	}
	for _, a := range o.Addrs {
		if err := checkAddr(a, o.AllowRemote); err != nil {
			return err
		}
	}
	switch {
	case o.Conns < 1 || o.Conns > 64:
		return fmt.Errorf("-conns %d: must be 1 to 64", o.Conns)
	case o.Client != ClientGRPC && o.Client != ClientLean:
		return fmt.Errorf("-client %q: must be grpc or lean", o.Client)
	case o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return fmt.Errorf("-rate %v: must be a positive number (open loop) or 0 (closed loop)", o.Rate)
	case o.Rate == 0 && (o.Concurrency < 1 || o.Concurrency > maxWorkers):
		return fmt.Errorf("-concurrency %d: must be 1 to %d", o.Concurrency, maxWorkers)
	case o.Rate > 0 && (o.Workers < 1 || o.Workers > maxWorkers):
		return fmt.Errorf("-workers %d: must be 1 to %d", o.Workers, maxWorkers)
	case o.Rate > 0 && o.Arrival != ArrivalPoisson && o.Arrival != ArrivalUniform:
		return fmt.Errorf("-arrival %q: must be poisson or uniform", o.Arrival)
	case o.Requests < 0:
		return fmt.Errorf("-requests %d: must not be negative", o.Requests)
	case o.Requests == 0 && o.Duration <= 0:
		return errors.New("-duration: must be positive (or give -requests)")
	case o.Warmup < 0:
		return fmt.Errorf("-warmup %v: must not be negative", o.Warmup)
	case o.Timeout <= 0:
		return fmt.Errorf("-timeout %v: must be positive", o.Timeout)
	case o.Domain == "":
		return errors.New("-domain: must not be empty")
	case o.Key == "":
		return errors.New("-key: must not be empty")
	case o.Values < 1:
		return fmt.Errorf("-values %d: must be at least 1", o.Values)
	case o.Descriptors < 1 || o.Descriptors > maxDescriptors:
		return fmt.Errorf("-descriptors %d: must be 1 to %d", o.Descriptors, maxDescriptors)
	case o.Values*o.Descriptors > maxBuckets:
		return fmt.Errorf("-values x -descriptors = %d buckets: at most %d", o.Values*o.Descriptors, maxBuckets)
	case o.Dist != DistUniform && o.Dist != DistZipf:
		return fmt.Errorf("-dist %q: must be uniform or zipf", o.Dist)
	case o.Dist == DistZipf && (!(o.ZipfS > 0) || math.IsInf(o.ZipfS, 0)):
		return fmt.Errorf("-zipf-s %v: must be positive", o.ZipfS)
	case o.Hits < 1:
		return fmt.Errorf("-hits %d: must be at least 1", o.Hits)
	case o.ClockSlack < 0:
		return fmt.Errorf("-clock-slack %v: must not be negative", o.ClockSlack)
	case o.Workload != WorkloadAdmission && o.Workload != WorkloadUsage:
		return fmt.Errorf("-workload %q: must be admission or usage", o.Workload)
	case o.Workload == WorkloadUsage && o.Rate > 0:
		return errors.New("-workload usage: runs -concurrency streams in the closed loop; -rate does not apply")
	case o.Workload == WorkloadUsage && o.Limit == nil:
		return errors.New("-workload usage: needs -limit, the budget the server applies, for the allowance")
	case o.Workload == WorkloadUsage && o.Descriptors != 1:
		return fmt.Errorf("-descriptors %d: the usage workload sends one descriptor", o.Descriptors)
	case o.Workload == WorkloadUsage && o.Targets.MaxOverAdmission >= 0:
		return errors.New("-max-over-admission: not for the usage workload, whose verdict is used tokens against allowance plus bound")
	case o.Workload == WorkloadUsage && (o.CostMin < 1 || o.CostMax < o.CostMin || o.CostMax > math.MaxUint32):
		return fmt.Errorf("-cost %d-%d: must be MIN-MAX with 1 <= MIN <= MAX <= %d", o.CostMin, o.CostMax, uint64(math.MaxUint32))
	case o.Targets.MaxOverAdmission >= 0 && o.Limit == nil:
		return errors.New("-max-over-admission: needs -limit, the limit the server applies")
	case !(o.Targets.MaxErrorRate >= 0 && o.Targets.MaxErrorRate <= 1):
		return fmt.Errorf("-max-error-rate %v: must be 0 to 1 (1: not checked)", o.Targets.MaxErrorRate)
	case o.Targets.MaxP99 < 0:
		return fmt.Errorf("-max-p99 %v: must not be negative", o.Targets.MaxP99)
	case o.Targets.MinRPS < 0:
		return fmt.Errorf("-min-rps %v: must not be negative", o.Targets.MinRPS)
	}
	return nil
}

// checkAddr accepts host:port where host is a loopback address or
// "localhost"; any other host needs allowRemote.
func checkAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("-addr %q: bad port %q", addr, port)
	}
	if allowRemote {
		return nil
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("-addr %q: not a loopback address; pass -allow-remote to load a server elsewhere", addr)
}
