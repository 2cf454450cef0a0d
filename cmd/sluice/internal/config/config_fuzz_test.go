package config

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

// FuzzConfig checks the config.yaml decoder: it never panics, every
// problem names the file, what it accepts decodes the same way again, and
// inline limits reach the limit-file parser without a panic.
func FuzzConfig(f *testing.F) {
	shipped, err := os.ReadFile("../../../../config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped)
	for _, s := range []string{
		"", "redis:\n  url: redis://127.0.0.1:6379\n  pool_sise: 3\n",
		"grpc: {addr: ':1', max_recv_msg_bytes: lots}\nlog: {format: xml}\n",
		"limits:\n  domains:\n    - domain: d\n      descriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 1}}]\n",
		"x: &a [*a]\n", "runtime: {gc_percent: 5}\nhttp: {addr: [a]}\n", "- a\n", "shutdown:\n  timeout: soon\n  timeout: later\n",
	} {
		f.Add([]byte(s))
	}
	const name = "config.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(name, data, env{}.get)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %#v", err)
			}
			for _, e := range es {
				if e.File != name || e.Msg == "" {
					t.Fatalf("problem without the file or a message: %#v", e)
				}
			}
			if c != nil {
				t.Fatalf("config with errors: %+v", c)
			}
			return
		}
		again, err := Parse(name, data, env{}.get)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("decodes differently the second time: %v", err)
		}
		// Inline limits go to the limit-file parser; a limits.path is not
		// followed (the fuzzer would name files such as /dev/zero).
		if c.Limits.Path == "" {
			if _, err := c.LimitsSource().Load(); err != nil && err.Error() == "" {
				t.Fatalf("inline limits refused without a message")
			}
		}
	})
}
