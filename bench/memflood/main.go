// Command memflood measures how much a Sluice server's peak RSS grows under
// hostile ShouldRateLimit requests: about 1 MB of empty descriptors each,
// over gRPC (0x12 0x00 repeated) or as a POST /json body ({} repeated).
//
// It starts the given binary with `serve -config FILE` on loopback ports,
// warms it up with valid calls, reads VmHWM from /proc/PID/status, sends
// -rounds rounds of -concurrency hostile calls at once, reads VmHWM again
// and prints both and the growth; it exits 1 when the growth is over -max-mb.
// Linux only. Run it on a binary built without -race:
//
//	go build -o /tmp/sluice ./cmd/sluice
//	go run ./bench/memflood -bin /tmp/sluice -config config.yaml -mode grpc
//	go run ./bench/memflood -bin /tmp/sluice -config config.yaml -mode json
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

func main() {
	bin := flag.String("bin", "", "sluice binary to start (required)")
	cfg := flag.String("config", "config.yaml", "configuration it is started with")
	mode := flag.String("mode", "grpc", "grpc or json")
	size := flag.Int("size", 1_000_000, "bytes of one hostile request")
	conc := flag.Int("concurrency", 4, "hostile calls at once")
	rounds := flag.Int("rounds", 3, "rounds of hostile calls")
	warm := flag.Int("warmup", 2000, "valid calls before the first reading")
	maxMB := flag.Int("max-mb", 64, "largest acceptable VmHWM growth in MB")
	flag.Parse()
	if *bin == "" || (*mode != "grpc" && *mode != "json") {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, *bin, *cfg, *mode, *size, *conc, *rounds, *warm, *maxMB); err != nil {
		fmt.Fprintln(os.Stderr, "memflood:", err)
		os.Exit(1)
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func run(ctx context.Context, bin, cfg, mode string, size, conc, rounds, warm, maxMB int) error {
	grpcAddr, err := freeAddr()
	if err != nil {
		return err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), "SLUICE_GRPC_ADDR="+grpcAddr, "SLUICE_HTTP_ADDR="+httpAddr, "SLUICE_LOG_LEVEL=error")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Kill() // fails only when it has exited already
		_ = cmd.Wait()         // the exit status of a killed server says nothing
	}()
	base := "http://" + httpAddr
	if err := waitReady(ctx, base); err != nil {
		return err
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		return err
	}
	defer conn.Close()

	valid, err := validRequest()
	if err != nil {
		return err
	}
	validJSON := []byte(`{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.1"}]}]}`)
	for i := 0; i < warm; i++ {
		var err error
		if mode == "grpc" {
			err = callGRPC(ctx, conn, valid)
		} else {
			_, err = callJSON(ctx, base, validJSON)
		}
		if err != nil {
			return fmt.Errorf("warm-up call %d: %w", i, err)
		}
	}
	before, err := vmHWM(cmd.Process.Pid)
	if err != nil {
		return err
	}

	hostile := hostileGRPC(size)
	if mode == "json" {
		hostile = hostileJSON(size)
	}
	var refused, accepted int
	var mu sync.Mutex
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for c := 0; c < conc; c++ {
			wg.Go(func() {
				var err error
				if mode == "grpc" {
					err = callGRPC(ctx, conn, hostile)
				} else {
					var code int
					code, err = callJSON(ctx, base, hostile)
					if err == nil && code != http.StatusOK && code != http.StatusTooManyRequests {
						err = fmt.Errorf("HTTP %d", code)
					}
				}
				mu.Lock()
				if err != nil {
					refused++
				} else {
					accepted++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	// The server still decides.
	if mode == "grpc" {
		err = callGRPC(ctx, conn, valid)
	} else {
		_, err = callJSON(ctx, base, validJSON)
	}
	if err != nil {
		return fmt.Errorf("valid call after the flood: %w", err)
	}
	after, err := vmHWM(cmd.Process.Pid)
	if err != nil {
		return err
	}
	rss, _ := procField(cmd.Process.Pid, "VmRSS:")
	growth := (after - before) / 1024
	fmt.Printf("mode=%s request=%d bytes rounds=%d concurrency=%d refused=%d accepted=%d\n",
		mode, len(hostile), rounds, conc, refused, accepted)
	fmt.Printf("VmHWM after warm-up %d MB, after flood %d MB, growth %d MB (bound %d MB); VmRSS now %d MB\n",
		before/1024, after/1024, growth, maxMB, rss/1024)
	if growth > int64(maxMB) {
		return fmt.Errorf("peak RSS grew by %d MB, more than %d MB", growth, maxMB)
	}
	return nil
}

func waitReady(ctx context.Context, base string) error {
	for {
		resp, err := http.Get(base + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("server not ready")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rawCodec sends and receives encoded messages as they are.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

var _ encoding.CodecV2 = rawCodec{}

func callGRPC(ctx context.Context, conn *grpc.ClientConn, req []byte) error {
	var out []byte
	return conn.Invoke(ctx, rlsv3.RateLimitService_ShouldRateLimit_FullMethodName, &req, &out)
}

func callJSON(ctx context.Context, base string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body) // drained for reuse; the status is what counts
	return resp.StatusCode, nil
}

func validRequest() ([]byte, error) {
	var codec = encoding.GetCodecV2("proto")
	in := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "10.0.0.1"}},
	}}}
	b, err := codec.Marshal(in)
	if err != nil {
		return nil, err
	}
	return b.Materialize(), nil
}

// hostileGRPC is a RateLimitRequest of domain "edge" and empty
// descriptors, size bytes long.
func hostileGRPC(size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, 0x0a, 4, 'e', 'd', 'g', 'e')
	for len(b)+2 <= size {
		b = append(b, 0x12, 0x00)
	}
	return b
}

// hostileJSON is a protojson RateLimitRequest of empty descriptors, size
// bytes long at most.
func hostileJSON(size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, `{"domain":"edge","descriptors":[{}`...)
	for len(b)+5 <= size {
		b = append(b, ",{}"...)
	}
	return append(b, "]}"...)
}

// vmHWM is the process's peak resident set size in KiB.
func vmHWM(pid int) (int64, error) { return procField(pid, "VmHWM:") }

func procField(pid int, name string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", name, pid)
}
