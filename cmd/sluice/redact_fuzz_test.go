package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/config"
	"github.com/sluice-rl/sluice/server"
	"github.com/sluice-rl/sluice/server/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// secretForms are the places a password can sit in a Redis URL or a
// Postgres DSN; %s is the password as written (raw or percent-encoded).
var secretForms = []struct{ env, form string }{
	{config.EnvRedisURL, "redis://app:%s@127.0.0.1:6379/0"},
	{config.EnvRedisURL, "rediss://app:%s@127.0.0.1:6380/1"},
	{config.EnvRedisURL, "redis://:%s@127.0.0.1:6379"},
	{config.EnvRedisURL, "redis://127.0.0.1:6379?password=%s"},
	{config.EnvRedisURL, "redis+sentinel://app:%s@127.0.0.1:26379,127.0.0.1:26380/mymaster/2"},
	{config.EnvRedisURL, "redis+sentinel://127.0.0.1:26379/mymaster?sentinel_password=%s"},
	{config.EnvRedisURL, "redis-sentinel://127.0.0.1:26379/mymaster?sentinel_username=s&sentinel_password=%s"},
	{config.EnvRedisURL, "redis+cluster://app:%s@127.0.0.1:7000,127.0.0.1:7001"},
	{config.EnvRedisURL, "rediss+cluster://app:%s@127.0.0.1:7000"},
	{config.EnvRedisURL, "redis://app:%s@127.0.0.1:99999"},
	{config.EnvPostgresDSN, "postgres://app:%s@127.0.0.1:5432/sluice?sslmode=disable"},
	{config.EnvPostgresDSN, "postgresql://app:%s@127.0.0.1,127.0.0.2:5433/sluice?sslmode=disable"},
	{config.EnvPostgresDSN, "postgres://app@127.0.0.1/sluice?sslmode=disable&password=%s"},
	{config.EnvPostgresDSN, "host=127.0.0.1 user=app password=%s dbname=sluice sslmode=disable"},
	{config.EnvPostgresDSN, "host=127.0.0.1 user=app password='%s' dbname=sluice sslmode=disable"},
}

// FuzzSecretsNeverShown: a password in any form of Redis URL or Postgres
// DSN never appears in what check prints, in serve's log lines, in a
// backend check's error or in /health/detailed, whether the URL parses
// or not. The password has at least 8 characters, may hold / : @ ? #, and
// is no substring of the rest of the URL.
func FuzzSecretsNeverShown(f *testing.F) {
	for i := range secretForms {
		for _, pw := range []string{"pa/ssSECRET", "hunter22", "p@ss:w?rd#1", "ab/cd?ef#gh@ij", "1234/5678", "q%2Fsecret9"} {
			f.Add(uint8(i), pw, false)
			f.Add(uint8(i), pw, true)
		}
	}
	f.Fuzz(func(t *testing.T, form uint8, pw string, encode bool) {
		sf := secretForms[int(form)%len(secretForms)]
		if len(pw) < 8 || len(pw) > 64 || strings.ContainsAny(pw, " \t\r\n\v\f'\\\x00") || strings.Contains(pw, "%s") {
			t.Skip()
		}
		for _, r := range pw {
			if r < 0x21 || r > 0x7e {
				t.Skip()
			}
		}
		written := pw
		if encode {
			written = pathEscapeAll(pw)
		}
		// The password must not be a substring of the rest of the URL.
		u := fmt.Sprintf(sf.form, written)
		if strings.Contains(strings.Replace(u, written, "", 1), pw) {
			t.Skip()
		}
		secrets := []string{pw}
		if encode {
			secrets = append(secrets, written)
		}

		cfg := writeConfig(t, "health: {check_interval: 1s, check_timeout: 100ms}\n")
		e := env{sf.env: u}
		var out, errOut bytes.Buffer
		_ = check(cfg, e.get, &out, &errOut)
		shown := out.String() + errOut.String()

		// What serve logs and shows while the backends are down, without
		// binding: the store and the Postgres pool are built as serve
		// builds them, their checks run once with a cancelled context.
		c, err := config.Load(cfg, e.get)
		if err == nil {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			m := metrics.New(prometheus.NewRegistry(), metrics.Options{Logger: log})
			var checks []server.Check
			if st, err := openStore(c, log, m, nil); err != nil {
				shown += err.Error()
			} else {
				checks = append(checks, st.checks...)
				defer func() { _ = st.close() }() // closing what was opened; its errors are not under test
			}
			if c.Postgres.Enabled() {
				if pg, err := openPostgres(c, log, m); err != nil {
					shown += err.Error()
				} else {
					checks = append(checks, pg.check)
					defer pg.close()
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			health := map[string]server.CheckHealth{}
			for _, ch := range checks {
				h := server.CheckHealth{Address: ch.Address, Mode: ch.Mode}
				if err := ch.Fn(ctx); err != nil {
					s := err.Error()
					h.LastError = &s
				}
				health[ch.Name] = h
			}
			js, _ := json.Marshal(health)
			shown += logs.String() + string(js)
		}
		for _, s := range secrets {
			if strings.Contains(shown, s) {
				t.Fatalf("%s=%q: output shows the password %q:\n%s", sf.env, u, s, shown)
			}
		}
	})
}

// pathEscapeAll percent-encodes every character but letters and digits.
func pathEscapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
