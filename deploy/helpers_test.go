// Package deploy_test checks the files under deploy/: the Envoy example
// against go-control-plane's validation and the shipped limit file, the
// Kubernetes manifests and compose file against the server's real health
// paths and ports, the alert rules with promtool, and the dashboard's
// queries against the metrics Sluice exports.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/server"
)

// readYAML decodes every document of a YAML file into generic values.
func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML documents", path)
	}
	return docs
}

// yamlToJSON converts one YAML document to JSON, for protojson.
func yamlToJSON(t *testing.T, path string) []byte {
	t.Helper()
	docs := readYAML(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", path, len(docs))
	}
	out, err := json.Marshal(docs[0])
	if err != nil {
		t.Fatalf("%s: to JSON: %v", path, err)
	}
	return out
}

// get walks a generic YAML value by map keys and list indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

func itoa(n int) string { return strconv.Itoa(n) }

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// defaultPorts are the server's default gRPC and HTTP ports.
func defaultPorts(t *testing.T) (grpcPort, httpPort int) {
	t.Helper()
	cfg := server.DefaultConfig()
	port := func(addr string) int {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("default address %q: %v", addr, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("default address %q: %v", addr, err)
		}
		return n
	}
	return port(cfg.GRPC.Addr), port(cfg.HTTP.Addr)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// sluiceBinary builds cmd/sluice once per test run.
func sluiceBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-deploy-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sluice")
		// Static and -trimpath, as make check and the image build it, so
		// the three share one build cache.
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./cmd/sluice")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Dir = ".."
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build sluice: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

// sluiceCheck runs `sluice check -config FILE` with no SLUICE_* variables.
func sluiceCheck(t *testing.T, config string) {
	t.Helper()
	cmd := exec.Command(sluiceBinary(t), "check", "-config", config)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sluice check -config %s: %v\n%s", config, err, out)
	}
	t.Logf("sluice check: %s", bytes.TrimSpace(out))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
