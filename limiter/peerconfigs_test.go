package limiter_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
)

// ratelimitInvalid lists envoyproxy/ratelimit's invalid test configs
// (test/config/, by file name) with the problem Sluice must report and its
// line. src restates each case in a few lines, so the table runs without
// the peer's files; with them (SLUICE_PEER_RATELIMIT_DIR, below) the real
// files are checked against the same table. with names files loaded
// together with it (a domain given twice is a problem of the set).
var ratelimitInvalid = []struct {
	file string
	with []string
	src  string
	line int
	want string
}{
	{file: "bad_limit_unit.yaml", line: 6, want: `descriptors[0].rate_limit.unit: unknown unit "foo"`,
		src: "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit:\n      unit: foo\n      requests_per_unit: 5\n"},
	{file: "bad_yaml.yaml", line: 2, want: "invalid YAML", src: "'''\n"},
	{file: "duplicate_domain.yaml", with: []string{"basic_config.yaml"}, line: 1, want: `domain "test-domain" is already defined at`,
		src: "domain: test-domain\ndescriptors:\n"},
	{file: "duplicate_key.yaml", line: 6, want: `descriptors[1]: duplicate descriptor: key "key1" value "value1" is already given at line 3`,
		src: "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n\n  - key: key1\n    value: value1\n"},
	{file: "empty_domain.yaml", line: 1, want: "domain: missing", src: "descriptors:\n"},
	{file: "empty_key.yaml", line: 3, want: "descriptors[0].key: missing", src: "domain: test-domain\ndescriptors:\n  - value: value1\n"},
	{file: "merge_domain_key2.yaml", with: []string{"merge_domain_key1.yaml"}, line: 2, want: `domain "test-domain" is already defined at`,
		src: "# merged only with MERGE_DOMAIN_CONFIG, which Sluice does not implement\ndomain: test-domain\n"},
	{file: "misspelled_key.yaml", line: 5, want: "descriptors[0].ratelimit: unknown field; did you mean rate_limit?",
		src: "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    ratelimit:\n      unit: day\n      requests_per_unit: 5\n"},
	{file: "misspelled_key2.yaml", line: 7, want: "descriptors[0].rate_limit.requestsperunit: unknown field; did you mean requests_per_unit?",
		src: "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit:\n      unit: day\n      requestsperunit: 5\n"},
	{file: "non_map_list.yaml", line: 3, want: `descriptors[0]: a descriptor must be a mapping`,
		src: "domain: test-domain\ndescriptors:\n  - a\n  - b\n"},
	{file: "non_string_key.yaml", line: 1, want: "0.25: unknown field",
		src: "0.25: test-domain\ndescriptors:\n  - key: key1\n"},
	{file: "replaces_empty.yaml", line: 10, want: "descriptors[0].descriptors[0].rate_limit.replaces[0].name: must be a string, not empty (null)",
		src: "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    descriptors:\n      - key: subkey1\n        rate_limit:\n          name: self\n          replaces:\n            - name:\n          unit: second\n          requests_per_unit: 5\n"},
	{file: "replaces_self.yaml", line: 10, want: `a limit cannot replace itself ("self" is this limit's name)`,
		src: "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    descriptors:\n      - key: subkey1\n        rate_limit:\n          name: self\n          replaces:\n            - name: self\n          unit: second\n          requests_per_unit: 5\n"},
	{file: "unlimited_with_unit.yaml", line: 6, want: "descriptors[0].rate_limit.unit: not allowed with unlimited: true",
		src: "domain: test-domain\ndescriptors:\n  - key: foo\n    rate_limit:\n      unlimited: true\n      unit: day\n"},
}

// loadSet writes files (name to content) to a directory of their own,
// loads them with LoadLimits and compiles the result.
func loadSet(t *testing.T, files map[string][]byte) error {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := limiter.LoadLimits(dir)
	if err != nil {
		return err
	}
	_, err = limiter.Compile(ds, limiter.CompileOptions{})
	return err
}

// expectProblem asserts err names file, line and want.
func expectProblem(t *testing.T, err error, file string, line int, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s loaded; want %s:%d: ...%s", file, file, line, want)
	}
	for _, e := range fileErrors(t, err) {
		if filepath.Base(e.File) == file && e.Line == line && strings.Contains(fieldAndMsg(e), want) {
			return
		}
	}
	t.Fatalf("no error %s:%d: ...%s...; got:\n%v", file, line, want, err)
}

func TestEnvoyRatelimitInvalidConfigs(t *testing.T) {
	srcs := map[string]string{}
	for _, c := range ratelimitInvalid {
		srcs[c.file] = c.src
	}
	// The good partners of the sets.
	srcs["basic_config.yaml"] = "domain: test-domain\ndescriptors:\n  - key: key1\n    rate_limit: {unit: second, requests_per_unit: 5}\n"
	srcs["merge_domain_key1.yaml"] = "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit: {unit: minute, requests_per_unit: 10}\n"
	for _, c := range ratelimitInvalid {
		t.Run(c.file, func(t *testing.T) {
			files := map[string][]byte{c.file: []byte(c.src)}
			for _, w := range c.with {
				files[w] = []byte(srcs[w])
			}
			expectProblem(t, loadSet(t, files), c.file, c.line, c.want)
		})
	}
}

// TestPeerConfigs loads the limit configs of envoyproxy/ratelimit (its
// examples/ratelimit/config, test/config and test/integration runtime
// files) and of Envoy Gateway (the ratelimit-config outputs of its xDS
// translator tests), when a checkout of each is named:
//
//	SLUICE_PEER_RATELIMIT_DIR=/path/to/envoyproxy/ratelimit
//	SLUICE_PEER_GATEWAY_DIR=/path/to/envoyproxy/gateway
//
// Every file must load on its own, except ratelimitInvalid's, which must
// be refused with their line. The peers' files are not kept in this
// repository; docs/testing.md says how to run this.
func TestPeerConfigs(t *testing.T) {
	rl, gw := os.Getenv("SLUICE_PEER_RATELIMIT_DIR"), os.Getenv("SLUICE_PEER_GATEWAY_DIR")
	if rl == "" && gw == "" {
		t.Skip("SLUICE_PEER_RATELIMIT_DIR and SLUICE_PEER_GATEWAY_DIR not set")
	}
	read := func(t *testing.T, f string) []byte {
		t.Helper()
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var good []string
	if rl != "" {
		for _, pat := range []string{"examples/ratelimit/config/*.yaml", "test/config/*.yaml", "test/integration/runtime/current/ratelimit/*.yaml", "test/integration/runtime/current/ratelimit/config/*.yaml"} {
			fs, _ := filepath.Glob(filepath.Join(rl, pat))
			good = append(good, fs...)
		}
		invalid := map[string]bool{}
		for _, c := range ratelimitInvalid {
			// A file refused only with others is valid alone.
			invalid[c.file] = len(c.with) == 0
			t.Run("ratelimit/invalid/"+c.file, func(t *testing.T) {
				files := map[string][]byte{c.file: read(t, filepath.Join(rl, "test/config", c.file))}
				for _, w := range c.with {
					files[w] = read(t, filepath.Join(rl, "test/config", w))
				}
				expectProblem(t, loadSet(t, files), c.file, c.line, c.want)
			})
		}
		good = slices.DeleteFunc(good, func(f string) bool {
			return invalid[filepath.Base(f)] && strings.HasSuffix(filepath.Dir(f), filepath.Join("test", "config"))
		})
		if len(good) < 12 {
			t.Fatalf("found %d valid envoyproxy/ratelimit configs under %s; is it a checkout?", len(good), rl)
		}
	}
	if gw != "" {
		fs, _ := filepath.Glob(filepath.Join(gw, "internal/xds/translator/testdata/out/ratelimit-config/*.yaml"))
		fs = slices.DeleteFunc(fs, func(f string) bool { return strings.HasSuffix(f, ".routes.yaml") })
		if len(fs) < 20 {
			t.Fatalf("found %d Envoy Gateway ratelimit configs under %s; is it a checkout?", len(fs), gw)
		}
		good = append(good, fs...)
	}
	for _, f := range good {
		t.Run("valid/"+filepath.Base(f), func(t *testing.T) {
			if err := loadSet(t, map[string][]byte{filepath.Base(f): read(t, f)}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
