package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluice-rl/sluice/bench"
)

// usageRLS is a usage-charging token bucket per descriptor: a check
// (descriptor hits_addend 0) is OK when the bucket holds a whole token, a
// take is charged in full, OK or not, and the balance may go negative. It
// counts what it was charged. With leaky it answers every check OK (it
// overspends); with stingy it grants a check only when the bucket is full
// (it wastes budget).
type usageRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	rate, capacity float64
	leaky, stingy  bool

	mu      sync.Mutex
	buckets map[string]*fakeBucket
	charged int64
	checks  int64 // checks with a descriptor hits_addend of exactly 0
}

func (f *usageRLS) ShouldRateLimit(_ context.Context, in *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buckets == nil {
		f.buckets = map[string]*fakeBucket{}
	}
	now := time.Now()
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	for _, d := range in.GetDescriptors() {
		var k strings.Builder
		for _, e := range d.GetEntries() {
			k.WriteString("\x00" + e.GetKey() + "\x00" + e.GetValue())
		}
		b := f.buckets[k.String()]
		if b == nil {
			b = &fakeBucket{tokens: f.capacity, at: now}
			f.buckets[k.String()] = b
		}
		b.tokens = min(f.capacity, b.tokens+f.rate*now.Sub(b.at).Seconds())
		b.at = now
		code := rlsv3.RateLimitResponse_OK
		if d.GetHitsAddend() != nil && d.GetHitsAddend().GetValue() == 0 {
			f.checks++
			switch {
			case f.leaky:
			case f.stingy && b.tokens < f.capacity, b.tokens < 1:
				code = rlsv3.RateLimitResponse_OVER_LIMIT
			}
		} else {
			cost := float64(d.GetHitsAddend().GetValue())
			if b.tokens < cost {
				code = rlsv3.RateLimitResponse_OVER_LIMIT
			}
			b.tokens -= cost
			f.charged += int64(cost)
		}
		if code != rlsv3.RateLimitResponse_OK {
			resp.OverallCode = code
		}
		resp.Statuses = append(resp.Statuses, &rlsv3.RateLimitResponse_DescriptorStatus{Code: code})
	}
	return resp, nil
}

func usageOptions(addr string) bench.Options {
	o := bench.DefaultOptions()
	o.Addrs = []string{addr}
	o.Workload = bench.WorkloadUsage
	o.Concurrency = 8
	o.Values = 1
	o.CostMin, o.CostMax = 10, 30
	o.Duration, o.Warmup, o.Timeout = time.Second, 0, 5*time.Second
	o.Limit = &bench.Limit{RequestsPerUnit: 200, Unit: "second", Burst: 400}
	return o
}

// TestUsageWorkload runs the usage workload against a correct usage
// bucket: the tokens the harness counts are the tokens the server was
// charged, every report followed a check, and the verdict holds. Against
// a server that grants every check, the used tokens exceed the allowance
// plus the bound and the run fails usage-max; against one that grants a
// check only to a full bucket, it fails usage-min.
func TestUsageWorkload(t *testing.T) {
	srv := &usageRLS{rate: 200, capacity: 400}
	rep, err := bench.Run(t.Context(), usageOptions(serve(t, srv)))
	if err != nil {
		t.Fatal(err)
	}
	u := rep.Usage
	if u == nil || rep.Accuracy != nil {
		t.Fatalf("usage %+v, accuracy %+v: want the usage figures alone", u, rep.Accuracy)
	}
	t.Logf("used %d of allowance %.1f (%.3f), bound %.0f; checks %d (%d OK), reports %d",
		u.UsedTokens, u.AllowanceTokens, u.UsedFraction, u.BoundTokens, u.Checks, u.ChecksOK, u.Reports)
	srv.mu.Lock()
	charged, checks := srv.charged, srv.checks
	srv.mu.Unlock()
	if u.UsedTokens != charged || u.ReportErrors != 0 {
		t.Errorf("harness counts %d used tokens (%d failed reports), the server was charged %d", u.UsedTokens, u.ReportErrors, charged)
	}
	if u.Checks != checks || u.Reports != u.ChecksOK || u.Checks <= u.ChecksOK {
		t.Errorf("checks %d (server saw %d), OK %d, reports %d: every report follows an OK check, and the budget should refuse some",
			u.Checks, checks, u.ChecksOK, u.Reports)
	}
	if u.BoundTokens != 8*30 || u.Buckets != 1 {
		t.Errorf("bound %.0f, buckets %d: want 8 x 30 and 1", u.BoundTokens, u.Buckets)
	}
	if !rep.Pass || !u.WithinBound || !u.UsesAllowance {
		t.Errorf("pass %v (failed %v), within bound %v, uses allowance %v", rep.Pass, rep.Failed, u.WithinBound, u.UsesAllowance)
	}
	// Roughly 1 s of the budget: 400 + 200 x span, so between 500 and
	// 400 + 200 x 5 s even on a slow, shared machine.
	if u.AllowanceTokens < 500 || u.AllowanceTokens > 1400 {
		t.Errorf("allowance %.1f: want burst 400 + 200/s over about a second", u.AllowanceTokens)
	}

	for _, c := range []struct {
		name   string
		srv    *usageRLS
		failed string
	}{
		{"grants every check", &usageRLS{rate: 200, capacity: 400, leaky: true}, "usage-max"},
		{"grants only a full bucket", &usageRLS{rate: 200, capacity: 400, stingy: true}, "usage-min"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := bench.Run(t.Context(), usageOptions(serve(t, c.srv)))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("used %d of allowance %.1f, bound %.0f", rep.Usage.UsedTokens, rep.Usage.AllowanceTokens, rep.Usage.BoundTokens)
			if rep.Pass || strings.Join(rep.Failed, ",") != c.failed {
				t.Errorf("pass %v, failed %v: want %s alone", rep.Pass, rep.Failed, c.failed)
			}
		})
	}
}

// TestUsageCommandLine runs the workload through the command line and
// reads the JSON and text reports.
func TestUsageCommandLine(t *testing.T) {
	addr := serve(t, &usageRLS{rate: 1000, capacity: 2000})
	file := t.TempDir() + "/usage.json"
	var out, errOut bytes.Buffer
	code := bench.Main(t.Context(), []string{"-addr", addr, "-workload", "usage", "-cost", "100-300",
		"-limit", "1000/second,2000", "-values", "1", "-duration", "500ms", "-warmup", "0", "-q", "-json", file}, &out, &errOut)
	if code != bench.ExitPass {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"workload:    usage:", "cost 100-300", "usage:       budget 1000/second,2000", "usage-max", "usage-min"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Config struct {
			Workload string `json:"workload"`
			Cost     string `json:"cost"`
		} `json:"config"`
		Accuracy *json.RawMessage `json:"accuracy"`
		Usage    *struct {
			Streams         int     `json:"streams"`
			UsedTokens      int64   `json:"used_tokens"`
			AllowanceTokens float64 `json:"allowance_tokens"`
			BoundTokens     float64 `json:"bound_tokens"`
			WithinBound     bool    `json:"within_bound"`
			UsesAllowance   bool    `json:"uses_allowance"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Config.Workload != "usage" || rep.Config.Cost != "100-300" || rep.Accuracy != nil || rep.Usage == nil {
		t.Fatalf("config %+v, accuracy %v, usage %+v", rep.Config, rep.Accuracy, rep.Usage)
	}
	if rep.Usage.Streams != 16 || rep.Usage.BoundTokens != 16*300 || !rep.Usage.WithinBound || !rep.Usage.UsesAllowance {
		t.Errorf("usage %+v", *rep.Usage)
	}
}

// TestUsageFlagErrors: the usage workload's flags are checked, each error
// naming its flag.
func TestUsageFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-workload", "quota"}, "-workload"},
		{[]string{"-workload", "usage"}, "-limit"},
		{[]string{"-workload", "usage", "-limit", "10/second", "-rate", "100"}, "-rate"},
		{[]string{"-workload", "usage", "-limit", "10/second", "-descriptors", "2"}, "-descriptors"},
		{[]string{"-workload", "usage", "-limit", "10/second", "-max-over-admission", "0"}, "-max-over-admission"},
		{[]string{"-workload", "usage", "-limit", "10/second", "-cost", "300-100"}, "-cost"},
		{[]string{"-workload", "usage", "-limit", "10/second", "-cost", "0"}, "-cost"},
		{[]string{"-workload", "usage", "-limit", "10/second", "-cost", "x"}, "-cost"},
	} {
		var errOut bytes.Buffer
		_, _, err := bench.ParseArgs(c.args, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one naming %s", c.args, err, c.want)
		}
	}
	o, _, err := bench.ParseArgs([]string{"-workload", "usage", "-limit", "10/second", "-cost", "50"}, &bytes.Buffer{})
	if err != nil || o.CostMin != 50 || o.CostMax != 50 {
		t.Errorf("-cost 50: %v, cost %d-%d", err, o.CostMin, o.CostMax)
	}
}
