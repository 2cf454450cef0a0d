package xds_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/sluice-rl/sluice/limiter/limitertest"
	"github.com/sluice-rl/sluice/limiter/xds"
	"github.com/sluice-rl/sluice/limiter/xds/xdstest"
)

// recorder is an Apply function that keeps what it accepted and refuses
// while refuse is set.
type recorder struct {
	mu      sync.Mutex
	updates []xds.Update
	refuse  error
}

func (r *recorder) apply(u xds.Update) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse != nil {
		return r.refuse
	}
	r.updates = append(r.updates, u)
	return nil
}

func (r *recorder) versions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, u := range r.updates {
		out = append(out, u.Version)
	}
	return out
}

// TestClientOverMutualTLS runs the client against go-control-plane's
// server over mutual TLS: a snapshot is applied and ACKed with the node's
// id and metadata; a bad resource and a refused set are NACKed with their
// error and not applied; the loss of the control plane shows in Check,
// and the client reconnects and gets the snapshot again.
func TestClientOverMutualTLS(t *testing.T) {
	certs := xdstest.WriteCerts(t, t.TempDir())
	cp := xdstest.Start(t, "", certs.ServerTLS(t))
	rec := &recorder{}
	cfg := xds.DefaultConfig()
	cfg.Server, cfg.NodeID, cfg.NodeMetadata = cp.Addr, "envoy-ratelimit", "zone=a,team=edge"
	cfg.TLS = xds.TLSConfig{Enabled: true, CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
	cfg.Backoff = xds.BackoffConfig{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, RandomFactor: 0.5, Jitter: true}
	logs := &limitertest.SyncBuffer{}
	c, err := xds.New(cfg, xds.Options{Apply: rec.apply, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("client log:\n%s", logs.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()

	sec := rlsconfv3.RateLimitUnit_SECOND
	cp.Set(t, "envoy-ratelimit", "v1",
		xdstest.Config("a", xdstest.Match("k", 1, sec)), xdstest.Config("b", xdstest.Match("k", 2, sec)))
	limitertest.Eventually(t, 5*time.Second, "v1 ACKed", func() bool { return slices.Contains(cp.ACKs(), "v1") })
	if got := rec.versions(); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("applied %v, want [v1]", got)
	}
	var files []string
	for _, d := range rec.updates[0].Domains {
		files = append(files, d.File+"="+d.Domain)
	}
	if slices.Sort(files); !slices.Equal(files, []string{"xds:a=a", "xds:b=b"}) {
		t.Fatalf("update's domains %v", files)
	}
	node := cp.LastNode()
	if node.GetId() != "envoy-ratelimit" || node.GetMetadata().GetFields()["zone"].GetStringValue() != "a" ||
		node.GetMetadata().GetFields()["team"].GetStringValue() != "edge" {
		t.Errorf("node = %v", node)
	}
	if st := c.Status(); !st.Connected || st.Version != "v1" || c.Check(context.Background()) != nil {
		t.Errorf("status %+v, check %v", st, c.Check(context.Background()))
	}

	// A descriptor without a key: NACKed with the converter's words.
	cp.Set(t, "envoy-ratelimit", "v2", xdstest.Config("a", &rlsconfv3.RateLimitDescriptor{Value: "x"}))
	limitertest.Eventually(t, 5*time.Second, "v2 NACKed", func() bool { return len(cp.NACKs()) >= 1 })
	if n := cp.NACKs()[0]; !strings.Contains(n, "xds:a: descriptors[0].key: must not be empty") {
		t.Errorf("NACK detail %q", n)
	}
	// Refused by Apply (a domain clash, say): NACKed with its error.
	rec.mu.Lock()
	rec.refuse = errors.New(`domain "a" is already defined by edge.yaml:1`)
	rec.mu.Unlock()
	cp.Set(t, "envoy-ratelimit", "v3", xdstest.Config("a", xdstest.Match("k", 3, sec)))
	limitertest.Eventually(t, 5*time.Second, "v3 NACKed", func() bool {
		n := cp.NACKs()
		return strings.Contains(n[len(n)-1], "already defined by edge.yaml:1")
	})
	if st := c.Status(); st.Version != "v1" || st.Rejected == nil {
		t.Errorf("after NACKs: status %+v, want version v1 and the rejection", st)
	}
	if got := rec.versions(); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("applied %v, want [v1] only", got)
	}
	// The cache answers each NACK with the same snapshot again; the
	// repeats are spaced, not a spin. Over 300ms: at most 100+200 ms
	// apart, so a handful, where a spin makes thousands.
	before := len(cp.NACKs())
	time.Sleep(300 * time.Millisecond)
	if n := len(cp.NACKs()) - before; n > 5 {
		t.Errorf("%d NACKs of one version in 300ms: the client spins", n)
	}
	rec.mu.Lock()
	rec.refuse = nil
	rec.mu.Unlock()

	// The control plane goes away: Check says so; it comes back: the
	// client reconnects and applies the snapshot it serves.
	cp.Stop()
	limitertest.Eventually(t, 5*time.Second, "check failing", func() bool {
		err := c.Check(context.Background())
		return err != nil && strings.Contains(err.Error(), "unreachable since")
	})
	if err := cp.Restart(); err != nil {
		t.Fatal(err)
	}
	limitertest.Eventually(t, 5*time.Second, "v3 applied after reconnect", func() bool {
		return slices.Contains(rec.versions(), "v3")
	})
	if st := c.Status(); !st.Connected || st.Version != "v3" || st.Rejected != nil || st.Attempts < 2 {
		t.Errorf("after reconnect: %+v", st)
	}
}

// TestClientRefusesUntrustedServer: with a CA that did not sign the
// control plane's certificate, nothing is applied and Check names the
// TLS failure.
func TestClientRefusesUntrustedServer(t *testing.T) {
	certs := xdstest.WriteCerts(t, t.TempDir())
	other := xdstest.WriteCerts(t, t.TempDir())
	cp := xdstest.Start(t, "", certs.ServerTLS(t))
	cp.Set(t, "n", "v1", xdstest.Config("a", xdstest.Match("k", 1, rlsconfv3.RateLimitUnit_SECOND)))
	rec := &recorder{}
	cfg := xds.DefaultConfig()
	cfg.Server, cfg.NodeID = cp.Addr, "n"
	cfg.TLS = xds.TLSConfig{Enabled: true, CertFile: certs.Cert, KeyFile: certs.Key, CAFile: other.CA}
	cfg.Backoff.Initial, cfg.Backoff.Max = 20*time.Millisecond, 50*time.Millisecond
	c, err := xds.New(cfg, xds.Options{Apply: rec.apply})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	limitertest.Eventually(t, 5*time.Second, "two failed attempts", func() bool { return c.Status().Attempts >= 2 })
	if err := c.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Check = %v, want a certificate error", err)
	}
	if len(rec.versions()) != 0 || len(cp.ACKs()) != 0 {
		t.Errorf("applied %v, acks %v", rec.versions(), cp.ACKs())
	}
}
