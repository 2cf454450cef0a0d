package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/limitertest"
)

// env is a fake environment for getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckRefusesWhatServeRefuses: every setting serve fails on before
// binding (unreadable TLS files, a Redis port out of range) fails check
// too, naming the field and the line that set it.
func TestCheckRefusesWhatServeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string // config.yaml; "cert.pem" and "key.pem" exist beside it
		env  env
		want string // in the output; FILE stands for the config path
	}{
		{
			name: "grpc key pair missing",
			body: "grpc:\n  tls:\n    cert_file: missing-cert.pem\n    key_file: missing-key.pem\n",
			want: "FILE:3: grpc.tls.cert_file: load key pair",
		},
		{
			name: "grpc client CA missing",
			body: "grpc:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: missing-ca.pem\n",
			want: "FILE:5: grpc.tls.client_ca_file:",
		},
		{
			name: "grpc client CA not PEM",
			body: "grpc:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: config.yaml\n",
			want: "FILE:5: grpc.tls.client_ca_file:",
		},
		{
			name: "redis CA missing",
			body: "redis:\n  url: rediss://127.0.0.1:6380\n  tls:\n    ca_file: missing-ca.pem\n",
			want: "FILE:4: redis.tls.ca_file:",
		},
		{
			name: "redis key pair missing",
			body: "redis:\n  url: rediss://127.0.0.1:6380\n  tls:\n    cert_file: missing-cert.pem\n    key_file: missing-key.pem\n",
			want: "FILE:4: redis.tls.cert_file:",
		},
		{
			name: "redis port out of range in the file",
			body: "log:\n  level: info\nredis:\n  url: redis://h:99999\n",
			want: "FILE:4: redis.url:",
		},
		{
			name: "redis port out of range in the environment",
			body: "log:\n  level: info\n",
			env:  env{"SLUICE_REDIS_URL": "redis://h:99999"},
			want: "SLUICE_REDIS_URL: redis.url:",
		},
		{
			name: "redis sentinel port out of range",
			body: "redis:\n  url: redis+sentinel://h:1,h:70000/m\n",
			want: "FILE:2: redis.url:",
		},
		{
			name: "postgres CA missing",
			body: "postgres:\n  dsn: postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\n",
			want: "FILE:2: postgres.dsn:",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			limitertest.WriteKeyPair(t, filepath.Dir(path))
			var stdout, stderr bytes.Buffer
			err := check(path, tc.env.get, &stdout, &stderr)
			want := strings.ReplaceAll(tc.want, "FILE", path)
			if err == nil {
				t.Fatalf("check passed (%s), want an error %q", stdout.String(), want)
			}
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("check output:\n%s\nwant it to contain %q", stderr.String(), want)
			}
		})
	}
}

// TestTLSPathsRelativeToConfig: TLS files named in config.yaml are found
// beside it, whatever the working directory, as limits.path is.
func TestTLSPathsRelativeToConfig(t *testing.T) {
	path := writeConfig(t, "grpc:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: cert.pem\n"+
		"redis:\n  url: rediss://127.0.0.1:6380\n  tls:\n    ca_file: cert.pem\n    cert_file: cert.pem\n    key_file: key.pem\n")
	dir := filepath.Dir(path)
	limitertest.WriteKeyPair(t, dir)
	var stdout, stderr bytes.Buffer
	if err := check(path, env{}.get, &stdout, &stderr); err != nil {
		t.Fatalf("check: %v\n%s", err, stderr.String())
	}
	c, err := config.Load(path, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, got := range map[string]string{
		"grpc.tls.cert_file": c.GRPC.TLS.CertFile, "grpc.tls.key_file": c.GRPC.TLS.KeyFile,
		"grpc.tls.client_ca_file": c.GRPC.TLS.ClientCAFile,
		"redis.tls.ca_file":       c.Redis.TLS.CAFile, "redis.tls.cert_file": c.Redis.TLS.CertFile,
		"redis.tls.key_file": c.Redis.TLS.KeyFile,
	} {
		want := cert
		if strings.HasSuffix(name, "key_file") {
			want = key
		}
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

var wantRe = regexp.MustCompile(`(?m)^# want: (\d+): (.*)$`)

type wantLine struct {
	line int
	msg  string
}

func readWants(t *testing.T, file string) []wantLine {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []wantLine
	for _, m := range wantRe.FindAllStringSubmatch(string(data), -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, wantLine{n, strings.TrimSpace(m[2])})
	}
	if len(out) == 0 {
		t.Fatalf("%s has no # want: line", file)
	}
	return out
}

// assertReported checks that output has a line for file:line holding msg
// (line 0: any line holding msg).
func assertReported(t *testing.T, output, file string, w wantLine) {
	t.Helper()
	for _, l := range strings.Split(output, "\n") {
		if !strings.Contains(l, w.msg) {
			continue
		}
		if w.line == 0 || strings.HasPrefix(l, file+":"+strconv.Itoa(w.line)+":") {
			return
		}
	}
	t.Errorf("output does not report %s:%d: ...%s...; got:\n%s", file, w.line, w.msg, output)
}

func TestCheckConfigTestdata(t *testing.T) {
	good, _ := filepath.Glob("testdata/good/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(good) < 4 || len(bad) < 15 {
		t.Fatalf("found %d good and %d bad config files", len(good), len(bad))
	}
	for _, f := range good {
		t.Run("good/"+filepath.Base(f), func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := check(f, env{}.get, &out, &errb); err != nil {
				t.Fatalf("check: %v\n%s", err, errb.String())
			}
			if !regexp.MustCompile(`^.*: ok: \d+ domains?, \d+ rules?, version sha256:[0-9a-f]{64}\n$`).MatchString(out.String()) {
				t.Errorf("summary = %q", out.String())
			}
		})
	}
	for _, f := range bad {
		t.Run("bad/"+filepath.Base(f), func(t *testing.T) {
			var out, errb bytes.Buffer
			err := check(f, env{}.get, &out, &errb)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != 1 {
				t.Fatalf("check = %v, want exit 1; stdout %q", err, out.String())
			}
			for _, w := range readWants(t, f) {
				assertReported(t, errb.String(), f, w)
			}
		})
	}
}

func TestCheckWithPathSummary(t *testing.T) {
	var out, errb bytes.Buffer
	if err := check("testdata/good/with-path.yaml", env{}.get, &out, &errb); err != nil {
		t.Fatalf("check: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), ": ok: 3 domains, 4 rules, version sha256:") {
		t.Errorf("summary = %q", out.String())
	}
}

// TestCheckLimitTestdata runs check over the limit files of the limiter's
// test suite, one at a time through SLUICE_LIMITS.
func TestCheckLimitTestdata(t *testing.T) {
	good, _ := filepath.Glob("../../limiter/testdata/limits/good/*.yaml")
	bad, _ := filepath.Glob("../../limiter/testdata/limits/bad/*.yaml")
	if len(good) == 0 || len(bad) == 0 {
		t.Fatalf("found %d good and %d bad limit files", len(good), len(bad))
	}
	for _, f := range good {
		t.Run("good/"+filepath.Base(f), func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := check("", env{"SLUICE_LIMITS": f}.get, &out, &errb); err != nil {
				t.Fatalf("check: %v\n%s", err, errb.String())
			}
			// A file may hold several domains (YAML documents).
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ds, err := limiter.ParseLimitDocuments(f, data)
			if err != nil {
				t.Fatal(err)
			}
			n := len(ds)
			if want := fmt.Sprintf("ok: %d %s, ", n, plural(n, "domain")); !strings.Contains(out.String(), want) {
				t.Errorf("summary = %q, want %q", out.String(), want)
			}
		})
	}
	for _, f := range bad {
		t.Run("bad/"+filepath.Base(f), func(t *testing.T) {
			var out, errb bytes.Buffer
			err := check("", env{"SLUICE_LIMITS": f}.get, &out, &errb)
			if err == nil {
				t.Fatalf("check passed; stdout %q", out.String())
			}
			for _, w := range readWants(t, f) {
				assertReported(t, errb.String(), f, w)
			}
		})
	}
	// The whole bad directory: every file's problems in one run.
	var out, errb bytes.Buffer
	if err := check("", env{"SLUICE_LIMITS": "../../limiter/testdata/limits/bad"}.get, &out, &errb); err == nil {
		t.Fatal("check of the bad directory passed")
	}
	for _, f := range bad {
		if !strings.Contains(errb.String(), f+":") {
			t.Errorf("no error reported for %s", f)
		}
	}
}

func TestCheckReportsConfigAndLimitErrors(t *testing.T) {
	p := writeConfig(t, "grpc:\n  adr: x\nlimits:\n  domains:\n    - domain: a\n      descriptors:\n        - key: k\n          rate_limit: {unit: eon, requests_per_unit: 1}\n")
	var out, errb bytes.Buffer
	if err := check(p, env{}.get, &out, &errb); err == nil {
		t.Fatal("check passed")
	}
	got := strings.ReplaceAll(errb.String(), p, "config.yaml")
	for _, w := range []string{"config.yaml:2: grpc.adr: unknown field", "config.yaml:8: "} {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
}

// TestAdminTokenTooShort: a token under 32 characters stops check and
// serve with an error that names the variable and never shows the token.
func TestAdminTokenTooShort(t *testing.T) {
	const short = "only-twenty-six-characters"
	e := env{"SLUICE_ADMIN_TOKEN": short}
	var out, errb bytes.Buffer
	if err := check("", e.get, &out, &errb); err == nil {
		t.Fatalf("check passed with a %d-character admin token: %s", len(short), out.String())
	}
	if msg := errb.String(); !strings.Contains(msg, "SLUICE_ADMIN_TOKEN: admin_token: too short: 26 characters, want at least 32") ||
		strings.Contains(msg, short) {
		t.Errorf("check output %q: want the variable named and the token not shown", msg)
	}
	var stderr limitertest.SyncBuffer
	if err := serve(context.Background(), "", options{getenv: e.get, stderr: &stderr}); err == nil {
		t.Fatal("serve started with a short admin token")
	}
	if msg := stderr.String(); !strings.Contains(msg, "SLUICE_ADMIN_TOKEN") || strings.Contains(msg, short) {
		t.Errorf("serve output %q: want the variable named and the token not shown", msg)
	}
	if _, err := config.Load("", env{"SLUICE_ADMIN_TOKEN": strings.Repeat("x", 32)}.get); err != nil {
		t.Errorf("a 32-character token: %v", err)
	}
	if _, err := config.Load("", env{}.get); err != nil {
		t.Errorf("no token (admin API off): %v", err)
	}
}

// TestCheckWarnsOfDeprecatedSettings: a removed setting still loads;
// check passes and prints one warning naming it and its line.
func TestCheckWarnsOfDeprecatedSettings(t *testing.T) {
	path := writeConfig(t, "runtime:\n  gc_percent: 200\n  min_heap_mb: 64\n")
	var stdout, stderr bytes.Buffer
	if err := check(path, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("check refused a config with a deprecated setting: %v\n%s", err, stderr.String())
	}
	want := path + ":3: runtime.min_heap_mb: deprecated and ignored"
	if got := stderr.String(); strings.Count(got, "warning: ") != 1 || !strings.Contains(got, want) {
		t.Errorf("check printed %q; want one warning with %q", got, want)
	}
}
