package config

import (
	"strings"
	"testing"
)

// TestDeprecatedSettings: a setting in the table of deprecated ones is
// accepted and ignored, with one warning per setting at its first line,
// naming it and what to do; a setting not in the table is still refused.
func TestDeprecatedSettings(t *testing.T) {
	table := []Deprecated{
		{Path: "runtime.old_floor", Advice: "remove it; runtime.gc_percent sets the heap target"},
		{Path: "tracing", Advice: "remove the section; Sluice no longer traces"},
		{Path: "redis.pool.old_size", Advice: "use redis.pool_size"},
	}
	for _, c := range []struct {
		name, body string
		warnings   []string // each a full line
		errors     []string // each an error line's prefix
		check      func(*testing.T, *Config)
	}{
		{name: "none given", body: "runtime: {gc_percent: 200}\n"},
		{
			name: "a setting among others",
			body: "log: {level: debug}\nruntime:\n  gc_percent: 200\n  old_floor: 64\n",
			warnings: []string{
				"config.yaml:4: runtime.old_floor: deprecated and ignored: remove it; runtime.gc_percent sets the heap target",
			},
			check: func(t *testing.T, c *Config) {
				if c.Runtime.GCPercent != 200 || c.Log.Level != "debug" {
					t.Errorf("settings around the deprecated one not decoded: %+v %+v", c.Runtime, c.Log)
				}
			},
		},
		{
			name: "a whole section, and the same setting given twice: one warning each",
			body: "tracing:\n  endpoint: x\n  rate: 2\nruntime:\n  old_floor: 1\n  old_floor: 2\n",
			warnings: []string{
				"config.yaml:1: tracing: deprecated and ignored: remove the section; Sluice no longer traces",
				"config.yaml:5: runtime.old_floor: deprecated and ignored: remove it; runtime.gc_percent sets the heap target",
			},
		},
		{
			name:   "a deprecated path under a setting that is not a mapping",
			body:   "redis:\n  pool: 3\n",
			errors: []string{"config.yaml:2: redis.pool: unknown field"},
		},
		{
			name:   "not in the table: still unknown",
			body:   "runtime:\n  old_flor: 64\n",
			errors: []string{"config.yaml:2: runtime.old_flor: unknown field"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parse("config.yaml", []byte(c.body), env{}.get, table, nil)
			if len(c.errors) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				lines := strings.Split(err.Error(), "\n")
				if len(lines) != len(c.errors) {
					t.Fatalf("errors:\n%v\nwant %d", err, len(c.errors))
				}
				for i, w := range c.errors {
					if !strings.HasPrefix(lines[i], w) {
						t.Errorf("error %q, want prefix %q", lines[i], w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range cfg.Warnings() {
				got = append(got, w.Error())
			}
			if strings.Join(got, "\n") != strings.Join(c.warnings, "\n") {
				t.Errorf("warnings:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.warnings, "\n"))
			}
			if c.check != nil {
				c.check(t, cfg)
			}
		})
	}
}

// TestNoDeprecatedSettingIsStillAField: a setting in the table has left
// Config; were it still a field, its value would be silently ignored.
func TestNoDeprecatedSettingIsStillAField(t *testing.T) {
	for _, d := range deprecated {
		body := ""
		parts := strings.Split(d.Path, ".")
		for i, p := range parts {
			body += strings.Repeat("  ", i) + p + ":"
			if i < len(parts)-1 {
				body += "\n"
			}
		}
		body += " 1\n"
		if _, err := parse("config.yaml", []byte(body), env{}.get, nil, nil); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%s is deprecated but still decodes without the table: %v", d.Path, err)
		}
	}
}
