package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// repoRoot is the module root, seen from this package's directory.
const repoRoot = "../.."

// TestImage builds the image as `make image` does, binary included, and
// checks what docker would load: the config, the files, and that the
// binary packed in it runs.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a static binary of cmd/sluice")
	}
	if _, err := os.Stat(caBundlePath); err != nil {
		t.Fatalf("the CA bundle the image packs: %v", err)
	}
	out := filepath.Join(t.TempDir(), "sluice-image.tar")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	err := run(ctx, []string{
		"-out", out, "-tag", "sluice:test", "-root", repoRoot,
		"-config", filepath.Join(repoRoot, "config.yaml"),
		"-version", "v9.9.9-test", "-revision", "0123abc",
	}, func(k string) string {
		if k == "SOURCE_DATE_EPOCH" {
			return "1700000000"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}

	// The tarball names the tag docker load will create.
	if tags := repoTags(t, out); !slices.Equal(tags, []string{"sluice:test"}) {
		t.Errorf("RepoTags = %q, want [sluice:test]", tags)
	}

	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate: %v", err)
	}

	t.Run("config", func(t *testing.T) {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture == "" {
			t.Errorf("platform %s/%s, want linux/<arch>", cf.OS, cf.Architecture)
		}
		created := time.Unix(1700000000, 0).UTC()
		if !cf.Created.Time.Equal(created) {
			t.Errorf("created %v, want SOURCE_DATE_EPOCH %v", cf.Created.Time, created)
		}
		c := cf.Config
		if c.User != "65532:65532" {
			t.Errorf("user %q, want 65532:65532", c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/bin/sluice"}) || !slices.Equal(c.Cmd, []string{"serve"}) {
			t.Errorf("entrypoint %q cmd %q, want [/bin/sluice] [serve]", c.Entrypoint, c.Cmd)
		}
		// serve without -config reads ./config.yaml: the working directory
		// is where the packed config is.
		if c.WorkingDir != filepath.Dir(configPath) {
			t.Errorf("working dir %q, want %q", c.WorkingDir, filepath.Dir(configPath))
		}
		ports := slices.Sorted(maps.Keys(c.ExposedPorts))
		if want := []string{"6070/tcp", "8080/tcp", "8081/tcp"}; !slices.Equal(ports, want) {
			t.Errorf("exposed ports %q, want %q", ports, want)
		}
		if !slices.Contains(c.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") || !slices.Contains(c.Env, "PATH=/bin") {
			t.Errorf("env %q", c.Env)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   "https://github.com/sluice-rl/sluice",
			"org.opencontainers.image.version":  "v9.9.9-test",
			"org.opencontainers.image.revision": "0123abc",
			"org.opencontainers.image.created":  "2023-11-14T22:13:20Z",
		} {
			if got := c.Labels[k]; got != want {
				t.Errorf("label %s = %q, want %q", k, got, want)
			}
		}
	})

	root := unpack(t, img)

	t.Run("files", func(t *testing.T) {
		fi, err := os.Lstat(filepath.Join(root, "bin/sluice"))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o001 == 0 {
			t.Errorf("/bin/sluice mode %v, want a regular file anyone may run", fi.Mode())
		}
		alias := filepath.Join(root, "bin/ratelimit")
		same, err := os.Stat(alias)
		if err != nil {
			t.Fatalf("/bin/ratelimit: %v", err)
		}
		if !os.SameFile(fi, same) {
			t.Errorf("/bin/ratelimit is not /bin/sluice")
		}
		ca, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
			t.Errorf("CA bundle holds no certificate")
		}
		cfg, err := os.ReadFile(filepath.Join(root, "etc/sluice/config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(repoRoot, "config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cfg, want) {
			t.Errorf("/etc/sluice/config.yaml is not the repository's config.yaml")
		}
	})

	t.Run("binary runs", func(t *testing.T) {
		bin := filepath.Join(root, "bin/sluice")
		v := runBin(t, bin, "version")
		line, _, _ := strings.Cut(v, "\n")
		if !regexp.MustCompile(`^sluice v9\.9\.9-test \(revision 0123abc, go[^)]+\)$`).MatchString(line) {
			t.Errorf("sluice version = %q, want the stamped version and revision", line)
		}
		// The packed config starts cleanly: it names no file the image
		// lacks and needs no backend.
		runBin(t, bin, "check", "-config", filepath.Join(root, "etc/sluice/config.yaml"))
		// Through envoyproxy/ratelimit's command name the same binary runs
		// in its compatibility mode, which reads envoyproxy/ratelimit's
		// environment: an unparsable PORT is refused by name, before
		// anything listens.
		cmd := exec.Command(filepath.Join(root, "bin/ratelimit"))
		cmd.Env = []string{"PORT=abc"}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "PORT") {
			t.Errorf("ratelimit with PORT=abc: %v, %q; want a refusal naming PORT", err, out)
		}
	})
}

// runBin runs a binary unpacked from the image, bounded in time (no server
// may be left running), and returns its output; a failure fails the test.
func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{} // what the image sets is all it would have
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// repoTags reads the tags docker load gives the image.
func repoTags(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("manifest.json: %v", err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			t.Fatal(err)
		}
		if len(m) != 1 {
			t.Fatalf("manifest.json: %d images, want 1", len(m))
		}
		return m[0].RepoTags
	}
}

// unpack writes the image's flattened filesystem to a temporary
// directory: regular files, directories and symlinks, which is all the
// image may hold.
func unpack(t *testing.T, img v1.Image) string {
	t.Helper()
	root := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return root
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root's (read-only to the container's user)", h.Name, h.Uid, h.Gid)
		}
		p := filepath.Join(root, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Fatalf("entry %q leaves the image root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var data []byte
			if data, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, data, os.FileMode(h.Mode).Perm())
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		default:
			t.Fatalf("entry %q: type %q, want a file, directory or symlink", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fakeInputs stand in for the binary and files where the test is about
// assembly, not the binary.
func fakeInputs() inputs {
	return inputs{
		binary:   []byte("\x7fELF fake"),
		config:   []byte("log:\n  level: info\n"),
		caBundle: []byte("-----BEGIN CERTIFICATE-----\n"),
	}
}

// TestReproducible: the same inputs give the same image digest, and the
// digest follows the inputs and the recorded time.
func TestReproducible(t *testing.T) {
	o := options{version: "v1", revision: "r", arch: "amd64", created: time.Unix(0, 0).UTC()}
	digest := func(in inputs, o options) v1.Hash {
		t.Helper()
		img, err := assemble(in, o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := digest(fakeInputs(), o), digest(fakeInputs(), o)
	if a != b {
		t.Fatalf("two builds of the same inputs: %s and %s", a, b)
	}
	changed := fakeInputs()
	changed.config = []byte("log:\n  level: debug\n")
	if digest(changed, o) == a {
		t.Errorf("a different config gave the same digest")
	}
	later := o
	later.created = time.Unix(1, 0).UTC()
	if digest(fakeInputs(), later) == a {
		t.Errorf("a different SOURCE_DATE_EPOCH gave the same digest")
	}
}

// TestBadInput: each mistake is an error naming what was wrong, and no
// tarball is left behind.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "sluice")
	notELF := filepath.Join(dir, "script")
	ca := filepath.Join(dir, "ca.crt")
	cfg := filepath.Join(dir, "config.yaml")
	in := fakeInputs()
	for p, data := range map[string][]byte{fake: in.binary, notELF: []byte("#!/bin/sh\n"), ca: in.caBundle, cfg: in.config} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		name   string
		args   []string
		getenv func(string) string
		want   string
	}{
		{"missing config", []string{"-binary", fake, "-ca", ca, "-config", filepath.Join(dir, "nope.yaml")}, noEnv, "-config: "},
		{"missing CA bundle", []string{"-binary", fake, "-config", cfg, "-ca", filepath.Join(dir, "nope.crt")}, noEnv, "-ca: "},
		{"not a binary", []string{"-binary", notELF, "-config", cfg, "-ca", ca}, noEnv, "-binary: " + notELF + " is not an ELF executable"},
		{"bad tag", []string{"-binary", fake, "-config", cfg, "-ca", ca, "-tag", "Sluice:dev!"}, noEnv, `tag "Sluice:dev!"`},
		{"bad SOURCE_DATE_EPOCH", []string{"-binary", fake, "-config", cfg, "-ca", ca}, func(k string) string {
			if k == "SOURCE_DATE_EPOCH" {
				return "yesterday"
			}
			return ""
		}, `SOURCE_DATE_EPOCH: "yesterday"`},
		{"stray argument", []string{"-binary", fake, "-config", cfg, "-ca", ca, "extra"}, noEnv, `unexpected arguments ["extra"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "img.tar")
			err := run(t.Context(), append([]string{"-out", out}, tc.args...), tc.getenv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind (%v)", out, err)
			}
		})
	}
}

// TestDockerfileMatches holds deploy/Dockerfile, which cannot be built
// here, to the layout this builder makes: its final stage's user, ports,
// working directory, entrypoint, command and environment, and the paths
// its build stage fills.
func TestDockerfileMatches(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	stages := regexp.MustCompile(`(?m)^FROM `).Split(text, -1)
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final, "scratch") {
		t.Errorf("final stage FROM %q, want scratch", strings.SplitN(final, "\n", 2)[0])
	}
	directive := func(name string) []string {
		var vals []string
		for _, line := range strings.Split(final, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				vals = append(vals, strings.TrimSpace(v))
			}
		}
		return vals
	}
	o := options{}
	want := imageConfig(o)
	if got := directive("USER"); !slices.Equal(got, []string{want.User}) {
		t.Errorf("USER %q, want %q", got, want.User)
	}
	if got := directive("WORKDIR"); !slices.Equal(got, []string{want.WorkingDir}) {
		t.Errorf("WORKDIR %q, want %q", got, want.WorkingDir)
	}
	var ports []string
	for _, v := range directive("EXPOSE") {
		for _, p := range strings.Fields(v) {
			ports = append(ports, p+"/tcp")
		}
	}
	slices.Sort(ports)
	if wantPorts := slices.Sorted(maps.Keys(want.ExposedPorts)); !slices.Equal(ports, wantPorts) {
		t.Errorf("EXPOSE %q, want %q", ports, wantPorts)
	}
	jsonList := func(name string) []string {
		got := directive(name)
		if len(got) != 1 {
			t.Fatalf("%s appears %d times in the final stage, want once", name, len(got))
		}
		var l []string
		if err := json.Unmarshal([]byte(got[0]), &l); err != nil {
			t.Fatalf("%s %s: %v", name, got[0], err)
		}
		return l
	}
	if got := jsonList("ENTRYPOINT"); !slices.Equal(got, want.Entrypoint) {
		t.Errorf("ENTRYPOINT %q, want %q", got, want.Entrypoint)
	}
	if got := jsonList("CMD"); !slices.Equal(got, want.Cmd) {
		t.Errorf("CMD %q, want %q", got, want.Cmd)
	}
	envLine := directive("ENV")
	for _, kv := range want.Env {
		if len(envLine) != 1 || !slices.Contains(strings.Fields(envLine[0]), kv) {
			t.Errorf("ENV %q lacks %s", envLine, kv)
		}
	}
	for _, label := range []string{"org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision"} {
		if !strings.Contains(final, label+"=") {
			t.Errorf("final stage does not set label %s", label)
		}
	}
	// The build stage puts each file where the builder does.
	build := strings.Join(stages[:len(stages)-1], "")
	for _, p := range []string{"-o /rootfs" + binPath, "ln -s sluice /rootfs" + aliasPath, "/rootfs" + configPath, "/rootfs" + caBundlePath} {
		if !strings.Contains(build, p) {
			t.Errorf("build stage lacks %q", p)
		}
	}
	if !strings.Contains(build, "CGO_ENABLED=0 go build -trimpath") {
		t.Errorf("build stage does not build a static, trimmed binary")
	}
}
