// Command image writes Sluice's container image as a tarball that
// `docker load` (or `kind load image-archive`, `crane push`, `skopeo copy
// docker-archive:...`) reads, without a Docker daemon: `make image` runs
// it. It lives under deploy/ rather than cmd/ because it is a build tool,
// not something Sluice ships, and it keeps go-containerregistry out of
// the sluice binary's imports.
//
// The image is built on scratch and holds only:
//
//	/bin/sluice                          static binary (CGO_ENABLED=0, -trimpath)
//	/bin/ratelimit -> sluice             envoyproxy/ratelimit's command name
//	/etc/sluice/config.yaml              the repository's config.yaml (embedded store)
//	/etc/ssl/certs/ca-certificates.crt   CA bundle for TLS to Redis, Postgres, OTLP
//
// It runs as 65532:65532 in /etc/sluice, so `sluice serve` finds the
// config there, and deploy/Dockerfile builds the same layout. The build is
// reproducible: every time in the image is SOURCE_DATE_EPOCH, or the Unix
// epoch when that is unset.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The image's layout and run settings; deploy/Dockerfile repeats them and
// the tests hold both to these values.
const (
	binPath      = "/bin/sluice"
	aliasPath    = "/bin/ratelimit" // Envoy Gateway runs the container with this command
	configPath   = "/etc/sluice/config.yaml"
	caBundlePath = "/etc/ssl/certs/ca-certificates.crt"
	workDir      = "/etc/sluice"
	user         = "65532:65532" // numeric, since there is no /etc/passwd
	source       = "https://github.com/sluice-rl/sluice"
)

// exposedPorts: gRPC (Envoy's RateLimitService, health), HTTP (health,
// /metrics, /json, admin) and 6070, envoyproxy/ratelimit's debug port,
// which platforms that deploy that service expect to find declared.
var exposedPorts = []string{"8080/tcp", "8081/tcp", "6070/tcp"}

// env is the image's environment. Go finds the CA bundle at that path by
// itself; naming it keeps other tools and a reader of the image config from
// guessing.
var env = []string{
	"PATH=/bin",
	"SSL_CERT_FILE=" + caBundlePath,
}

// options are the builder's inputs.
type options struct {
	out      string // tarball to write
	tag      string // name the tarball carries, e.g. sluice:dev
	root     string // module root, where ./cmd/sluice is
	binary   string // a prebuilt linux binary; empty: build one
	config   string // file packed as /etc/sluice/config.yaml
	caBundle string // file packed as the CA bundle
	version  string
	revision string
	arch     string // GOARCH of the binary and the image
	created  time.Time
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	o, err := parseFlags(args, getenv)
	if err != nil {
		return err
	}
	if err := write(ctx, o); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%s, linux/%s)\n", o.out, o.tag, o.arch)
	return nil
}

func parseFlags(args []string, getenv func(string) string) (options, error) {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "bin/sluice-image.tar", "image tarball to write")
	fs.StringVar(&o.tag, "tag", "sluice:dev", "image name and tag recorded in the tarball")
	fs.StringVar(&o.root, "root", ".", "module root (where ./cmd/sluice is)")
	fs.StringVar(&o.binary, "binary", "", "prebuilt static linux binary to pack (default: build ./cmd/sluice)")
	fs.StringVar(&o.config, "config", "config.yaml", "config packed as "+configPath)
	fs.StringVar(&o.caBundle, "ca", caBundlePath, "CA bundle packed as "+caBundlePath)
	fs.StringVar(&o.version, "version", "dev", "version stamped into the binary and the labels")
	fs.StringVar(&o.revision, "revision", "unknown", "source revision, likewise")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "GOARCH of the binary and the image")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	created, err := sourceDate(getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return o, err
	}
	o.created = created
	return o, nil
}

// sourceDate is the time recorded in the image: SOURCE_DATE_EPOCH (seconds
// since the epoch, the reproducible-builds convention), else the epoch
// itself, so that two builds of one commit are byte for byte the same.
func sourceDate(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %q is not a count of seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// write builds (or reads) the binary, assembles the image and writes the
// tarball.
func write(ctx context.Context, o options) error {
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", o.tag, err)
	}
	bin := o.binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "sluice-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "sluice")
		if err := buildBinary(ctx, o, bin); err != nil {
			return err
		}
	}
	files, err := readInputs(bin, o.config, o.caBundle)
	if err != nil {
		return err
	}
	img, err := assemble(files, o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	// Write next to the target and rename, so an interrupted build never
	// leaves a truncated tarball behind under the real name.
	tmp := o.out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	return os.Rename(tmp, o.out)
}

// buildBinary compiles ./cmd/sluice as a static linux binary, with the same
// version stamping as `make build` and the flags of deploy/Dockerfile.
func buildBinary(ctx context.Context, o options, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.revision=%s", o.version, o.revision)
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags", ldflags, "-o", abs, "./cmd/sluice")
	cmd.Dir = o.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.arch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/sluice: %w\n%s", err, stderr.Bytes())
	}
	return nil
}

// goTool is the go command of the toolchain running this program, so a
// test run with one toolchain does not build with another from PATH.
func goTool() string {
	// GOROOT is the toolchain's own root when it runs this program
	// (go run, go test); runtime.GOROOT is deprecated for that.
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// inputs are the contents of the image's files.
type inputs struct {
	binary, config, caBundle []byte
}

func readInputs(bin, config, ca string) (inputs, error) {
	var in inputs
	for _, f := range []struct {
		flag, path string
		dst        *[]byte
	}{
		{"binary", bin, &in.binary},
		{"config", config, &in.config},
		{"ca", ca, &in.caBundle},
	} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return in, fmt.Errorf("-%s: %w", f.flag, err)
		}
		if len(data) == 0 {
			return in, fmt.Errorf("-%s: %s is empty", f.flag, f.path)
		}
		*f.dst = data
	}
	if !bytes.HasPrefix(in.binary, []byte("\x7fELF")) {
		return in, fmt.Errorf("-binary: %s is not an ELF executable", bin)
	}
	return in, nil
}

// assemble makes the image from its files: one layer on scratch.
func assemble(in inputs, o options) (v1.Image, error) {
	if o.arch == "" {
		return nil, errors.New("-arch: empty")
	}
	layerData, err := layerTar(in, o.created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerData)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.created},
			CreatedBy: "deploy/image: " + binPath + ", " + aliasPath + ", " + configPath + ", " + caBundlePath,
			Comment:   "sluice " + o.version,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = o.arch
	cf.Created = v1.Time{Time: o.created}
	cf.Config = imageConfig(o)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// imageConfig is how the container runs.
func imageConfig(o options) v1.Config {
	ports := make(map[string]struct{}, len(exposedPorts))
	for _, p := range exposedPorts {
		ports[p] = struct{}{}
	}
	return v1.Config{
		User:         user,
		WorkingDir:   workDir,
		Entrypoint:   []string{binPath},
		Cmd:          []string{"serve"},
		Env:          append([]string(nil), env...),
		ExposedPorts: ports,
		Labels: map[string]string{
			"org.opencontainers.image.title":       "sluice",
			"org.opencontainers.image.description": "Distributed rate-limit service for Envoy",
			"org.opencontainers.image.source":      source,
			"org.opencontainers.image.version":     o.version,
			"org.opencontainers.image.revision":    o.revision,
			"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
		},
	}
}

// layerTar writes the image's one layer. Entries come in a fixed order
// with fixed times and owners, so the same inputs give the same digest.
// Files are root's and read-only to the container's user.
func layerTar(in inputs, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(p string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755}
	}
	file := func(p string, mode int64, data []byte) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}
	}
	entries := []struct {
		h    *tar.Header
		data []byte
	}{
		{dir("bin"), nil},
		{file(strings.TrimPrefix(binPath, "/"), 0o755, in.binary), in.binary},
		// A relative symlink: it resolves the same inside the container
		// and in a copy of the layer unpacked anywhere else.
		{&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(aliasPath, "/"), Linkname: filepath.Base(binPath), Mode: 0o777}, nil},
		{dir("etc"), nil},
		{dir("etc/sluice"), nil},
		{file(strings.TrimPrefix(configPath, "/"), 0o644, in.config), in.config},
		{dir("etc/ssl"), nil},
		{dir("etc/ssl/certs"), nil},
		{file(strings.TrimPrefix(caBundlePath, "/"), 0o644, in.caBundle), in.caBundle},
	}
	for _, e := range entries {
		e.h.ModTime = mtime
		if err := tw.WriteHeader(e.h); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
