package bench

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestComputeAccuracy(t *testing.T) {
	perSecond := Limit{RequestsPerUnit: 100, Unit: "second", Burst: 10}
	// A bucket whose requests were sent from 0 to 0.9 s and answered from
	// 0.1 s to 1 s. With 1 ms slack:
	//   wide   = 10 + 100 x (1.0 x 1.001 + 0.001)           = 110.2  -> 110
	//   narrow = 10 + 100 x ((0.9 - 0.1) x 0.999 - 0.001)   = 89.82  -> 89
	span := func(s bucketSample) bucketSample {
		s.firstSend, s.lastRecv = 0, time.Second
		s.firstRecv, s.lastSend = 100*time.Millisecond, 900*time.Millisecond
		s.decided = true
		return s
	}
	tests := []struct {
		name      string
		limit     Limit
		hits      uint32
		sample    bucketSample
		wantOver  int64
		wantUnder int64
	}{
		{"over the wide allowance", perSecond, 1,
			span(bucketSample{admitted: 112, offered: 200, underOffered: 200}), 2, 0},
		{"exactly the wide allowance", perSecond, 1,
			span(bucketSample{admitted: 110, offered: 200, underOffered: 200}), 0, 0},
		{"under: offered plenty, admitted little", perSecond, 1,
			span(bucketSample{admitted: 50, offered: 200, underOffered: 200}), 0, 89 - 50},
		{"under is capped by what was offered", perSecond, 1,
			span(bucketSample{admitted: 50, offered: 60, underOffered: 60}), 0, 10},
		// 8 of the 10 denied tokens were denied for another descriptor of the
		// same request: only 2 count against this bucket.
		{"denials caused by another bucket are excused", perSecond, 1,
			span(bucketSample{admitted: 50, offered: 60, underOffered: 52}), 0, 2},
		{"everything offered was admitted", perSecond, 1,
			span(bucketSample{admitted: 30, offered: 30, underOffered: 30}), 0, 0},
		// hits 3: the narrow allowance 89.82 holds 29 whole requests = 87 tokens.
		{"whole requests with hits 3", perSecond, 3,
			span(bucketSample{admitted: 81, offered: 300, underOffered: 300}), 0, 6},
		{"hits 3 over", perSecond, 3,
			span(bucketSample{admitted: 111, offered: 300, underOffered: 300}), 1, 0},
		// One request, answered 2 ms after it was sent: the wide allowance is
		// 10 + 100 x (0.002 x 1.001 + 0.001) = 10.3 -> 10; the narrow one is
		// the burst.
		{"single request admitted", perSecond, 1,
			bucketSample{firstSend: 0, lastSend: 0, firstRecv: 2 * time.Millisecond, lastRecv: 2 * time.Millisecond,
				admitted: 1, offered: 1, underOffered: 1, decided: true}, 0, 0},
		{"single request denied with a full bucket", perSecond, 1,
			bucketSample{firstSend: 0, lastSend: 0, firstRecv: 2 * time.Millisecond, lastRecv: 2 * time.Millisecond,
				admitted: 0, offered: 1, underOffered: 1, decided: true}, 0, 1},
		{"burst plus one at once", perSecond, 1,
			bucketSample{firstSend: 0, lastSend: 0, firstRecv: 2 * time.Millisecond, lastRecv: 2 * time.Millisecond,
				admitted: 11, offered: 11, underOffered: 11, decided: true}, 1, 0},
		// 60/minute with burst 5 refills 1 token/s. Over 10 s:
		// 5 + 1 x (10 x 1.001 + 0.001) = 15.011 -> 15.
		{"per minute", Limit{RequestsPerUnit: 60, Unit: "minute", Burst: 5}, 1,
			bucketSample{firstSend: 0, lastSend: 10 * time.Second, firstRecv: time.Millisecond, lastRecv: 10 * time.Second,
				admitted: 16, offered: 40, underOffered: 40, decided: true}, 1, 0},
		{"undecided bucket is skipped", perSecond, 1, bucketSample{admitted: 1000}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.sample.key, tt.sample.value = "k", "v"
			a := computeAccuracy(tt.limit, tt.hits, time.Millisecond, []bucketSample{tt.sample})
			if a.OverAdmission != tt.wantOver || a.UnderAdmission != tt.wantUnder {
				t.Errorf("over %d under %d, want over %d under %d (worst %+v)",
					a.OverAdmission, a.UnderAdmission, tt.wantOver, tt.wantUnder, a.Worst)
			}
		})
	}
}

func TestComputeAccuracyTotals(t *testing.T) {
	l := Limit{RequestsPerUnit: 10, Unit: "second", Burst: 10}
	mk := func(v string, admitted, offered int64) bucketSample {
		// 1 s span: wide 10 + 10 x 1.002 = 20.02 -> 20, narrow 10 + 10 x 0.998 = 19.98 -> 19.
		return bucketSample{key: "k", value: v, firstSend: 0, lastSend: time.Second, firstRecv: 0, lastRecv: time.Second,
			admitted: admitted, offered: offered, underOffered: offered, decided: true}
	}
	a := computeAccuracy(l, 1, time.Millisecond, []bucketSample{
		mk("a", 20, 30), mk("b", 23, 30), mk("c", 25, 30), mk("d", 15, 30), {key: "k", value: "idle"},
	})
	if a.Buckets != 4 || a.AdmittedTokens != 83 || a.OfferedTokens != 120 {
		t.Errorf("buckets %d admitted %d offered %d, want 4, 83, 120", a.Buckets, a.AdmittedTokens, a.OfferedTokens)
	}
	if a.OverAdmission != 3+5 || a.OverBuckets != 2 || a.UnderAdmission != 4 || a.UnderBuckets != 1 {
		t.Errorf("over %d in %d, under %d in %d; want 8 in 2, 4 in 1", a.OverAdmission, a.OverBuckets, a.UnderAdmission, a.UnderBuckets)
	}
	// Worst lists only over-admitting buckets when there are any, largest first.
	if len(a.Worst) != 2 || a.Worst[0].Value != "c" || a.Worst[1].Value != "b" {
		t.Errorf("worst = %+v, want c then b", a.Worst)
	}
	if a.Limit != "10/second,10" || a.RatePerSecond != 10 {
		t.Errorf("limit %q rate %v", a.Limit, a.RatePerSecond)
	}
}

func TestTrackerRecord(t *testing.T) {
	o := DefaultOptions()
	o.Descriptors, o.Values = 2, 3
	w := newWorkload(&o, "p")
	tr := newTracker(2, 3)
	ms := time.Millisecond
	// Bucket (key2, p1): one admitted request, one denied because of it,
	// one denied because of the other descriptor.
	tr.record(1, 1, 10*ms, 12*ms, 2, true, false)
	tr.record(1, 1, 5*ms, 20*ms, 2, false, true)
	tr.record(1, 1, 30*ms, 31*ms, 2, false, false)
	var got bucketSample
	for _, s := range tr.samples(w) {
		if s.decided {
			if got.decided {
				t.Fatalf("more than one bucket decided: %+v", s)
			}
			got = s
		}
	}
	want := bucketSample{key: "remote_address2", value: "p1", firstSend: 5 * ms, lastSend: 30 * ms,
		firstRecv: 12 * ms, lastRecv: 31 * ms, admitted: 2, offered: 6, underOffered: 4, decided: true}
	if got != want {
		t.Errorf("sample = %+v\nwant     %+v", got, want)
	}
}

func TestParseLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    Limit
		wantErr string
	}{
		{"100/second", Limit{100, "second", 100}, ""},
		{"100/second,200", Limit{100, "second", 200}, ""},
		{" 5 / Minute , 7 ", Limit{5, "minute", 7}, ""},
		{"1/year", Limit{1, "year", 1}, ""},
		{"100", Limit{}, "REQUESTS/UNIT"},
		{"0/second", Limit{}, "positive"},
		{"x/second", Limit{}, "positive"},
		{"100/fortnight", Limit{}, "unknown unit"},
		{"100/second,0", Limit{}, "burst"},
		{"100/second,-1", Limit{}, "burst"},
	}
	for _, tt := range tests {
		got, err := ParseLimit(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseLimit(%q) error %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLimit(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	if r := (Limit{RequestsPerUnit: 120, Unit: "minute"}).Rate(); r != 2 {
		t.Errorf("120/minute rate = %v, want 2", r)
	}
}

func TestCheckAddr(t *testing.T) {
	tests := []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:8081", false, true},
		{"127.3.4.5:1", false, true},
		{"[::1]:8081", false, true},
		{"localhost:8081", false, true},
		{"LOCALHOST:8081", false, true},
		{"[::ffff:127.0.0.1]:8081", false, true},
		{"10.0.0.7:8081", false, false},
		{"192.168.1.1:8081", false, false},
		{"example.com:8081", false, false},
		{"[::]:8081", false, false},
		{"0.0.0.0:8081", false, false},
		{":8081", false, false},
		{"10.0.0.7:8081", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:0", false, false},
		{"127.0.0.1:http", false, false},
	}
	for _, tt := range tests {
		err := checkAddr(tt.addr, tt.remote)
		if (err == nil) != tt.ok {
			t.Errorf("checkAddr(%q, %v) = %v, want ok %v", tt.addr, tt.remote, err, tt.ok)
		}
	}
}

func TestZipfSkew(t *testing.T) {
	o := DefaultOptions()
	o.Values, o.Dist, o.ZipfS = 50, DistZipf, 1
	w := newWorkload(&o, "")
	r := newTestRand()
	counts := make([]int, o.Values)
	for range 100000 {
		counts[w.pick(r)]++
	}
	// With s = 1 rank k has weight 1/(k+1): rank 0 about twice rank 1, ten
	// times rank 9; H(50) = 4.499, so rank 0 is about 22%.
	if counts[0] < 20000 || counts[0] > 24500 {
		t.Errorf("rank 0 drawn %d times of 100000, want about 22200", counts[0])
	}
	if ratio := float64(counts[0]) / float64(counts[9]); ratio < 8 || ratio > 12 {
		t.Errorf("rank 0 / rank 9 = %.2f, want about 10", ratio)
	}
	for k, c := range counts {
		if c == 0 {
			t.Errorf("rank %d never drawn", k)
		}
	}
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(7, 8)) }
