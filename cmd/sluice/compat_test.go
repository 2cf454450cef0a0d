package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/compat"
)

// freeAddr is a loopback address free a moment ago, for a listener whose
// bound address serve does not report.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCompatModeRefuses: run as ratelimit, an unparsable value or a
// setting that would change decisions stops the start with an error
// naming the variable, before anything listens.
func TestCompatModeRefuses(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PORT": "abc"}, `PORT: "abc" is not a port number`},
		{map[string]string{"USE_PROMETHEUS": "maybe"}, `USE_PROMETHEUS: "maybe" is not a boolean`},
		{map[string]string{"QUOTA_MODE": "maybe"}, `QUOTA_MODE: "maybe" is not a boolean`},
		{map[string]string{"CONFIG_TYPE": "ETCD"}, `CONFIG_TYPE: "ETCD" is not one of FILE, GRPC_XDS_SOTW`},
		{map[string]string{"CONFIG_TYPE": "GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_URL": "envoy-gateway"},
			`CONFIG_GRPC_XDS_SERVER_URL: limits.xds.server: "envoy-gateway" is not host:port`},
	} {
		var stderr bytes.Buffer
		o := options{getenv: func(k string) string { return tc.env[k] }, stdout: io.Discard, stderr: &stderr,
			onListen: func(_, _, _ net.Addr) { t.Errorf("%v: listened", tc.env) }}
		err := run(context.Background(), compat.Args([]string{"ratelimit"}), o)
		var ee exitError
		if !errors.As(err, &ee) || ee.code != 1 {
			t.Errorf("%v: %v, want exit status 1", tc.env, err)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.env, stderr.String(), tc.want)
		}
	}
}

// TestCompatFlag: -compat takes only the one mode.
func TestCompatFlag(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "-compat", "gubernator"},
		options{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: &stderr})
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(stderr.String(), "the only mode is envoy-ratelimit") {
		t.Errorf("%v: %s", err, stderr.String())
	}
}
