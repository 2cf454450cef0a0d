package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type env map[string]string

func (e env) get(k string) string { return e[k] }

// request is what the fake admin API received.
type request struct {
	method, path, auth, actor, ctype string
	body                             map[string]any
}

// fakeAdmin answers every request with status and body, recording it.
func fakeAdmin(t *testing.T, status int, answer string) (string, func() []request) {
	t.Helper()
	var (
		mu   sync.Mutex
		reqs []request
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rq := request{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization"),
			actor: r.Header.Get("X-Sluice-Actor"), ctype: r.Header.Get("Content-Type")}
		if len(b) > 0 {
			if err := json.Unmarshal(b, &rq.body); err != nil {
				t.Errorf("body %q: %v", b, err)
			}
		}
		mu.Lock()
		reqs = append(reqs, rq)
		mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), reqs...)
	}
}

// TestMainRequests: each command sends its method and path with the
// token and actor, set sends the flags as the JSON body, and the answer
// is printed indented.
func TestMainRequests(t *testing.T) {
	for _, c := range []struct {
		name      string
		args      []string
		status    int
		method    string
		path      string
		wantOut   string
		wantBody  string // a fragment of the JSON sent, "" for none
		wantActor string
	}{
		{"list", []string{"list"}, 200, "GET", "/admin/overrides", "[\n  1\n]\n", "", "operator"},
		{"get", []string{"get", "7"}, 200, "GET", "/admin/overrides/7", "[\n  1\n]\n", "", "operator"},
		{"history", []string{"history", "-actor", "oncall", "7"}, 200, "GET", "/admin/overrides/7/history", "[\n  1\n]\n", "", "oncall"},
		{"delete", []string{"delete", "7"}, 204, "DELETE", "/admin/overrides/7", "override 7 deleted\n", "", "operator"},
		{"set", []string{"set", "-domain", "api", "-descriptor", "tenant=acme", "-descriptor", "plan=",
			"-unit", "second", "-requests-per-unit", "40", "-burst", "80", "-reason", "load test"}, 200, "PUT", "/admin/overrides", "[\n  1\n]\n",
			`{"descriptors":[{"key":"tenant","value":"acme"},{"key":"plan","value":""}],"domain":"api","rate_limit":{"burst":80,"requests_per_unit":40,"unit":"second"},"reason":"load test"}`,
			"operator"},
	} {
		t.Run(c.name, func(t *testing.T) {
			answer := "[1]"
			if c.status == 204 {
				answer = ""
			}
			url, got := fakeAdmin(t, c.status, answer)
			var stdout, stderr bytes.Buffer
			e := env{"SLUICE_ADMIN_TOKEN": "tok", "SLUICE_ADMIN_URL": url + "/", "USER": "operator"}
			if code := Main(context.Background(), c.args, e.get, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if stdout.String() != c.wantOut {
				t.Errorf("stdout = %q, want %q", stdout.String(), c.wantOut)
			}
			reqs := got()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != c.method || r.path != c.path || r.auth != "Bearer tok" || r.actor != c.wantActor {
				t.Errorf("request %+v, want %s %s with the token and actor %q", r, c.method, c.path, c.wantActor)
			}
			if c.wantBody != "" {
				b, _ := json.Marshal(r.body)
				if string(b) != c.wantBody || r.ctype != "application/json" {
					t.Errorf("body %s (%s)\nwant %s", b, r.ctype, c.wantBody)
				}
			}
		})
	}
}

// TestMainErrors: usage errors exit 2 before any request; a refusal by
// the server exits 1 with its error message.
func TestMainErrors(t *testing.T) {
	url, got := fakeAdmin(t, 400, `{"error":"rate_limit.unit: \"fortnight\" is not a unit"}`)
	e := env{"SLUICE_ADMIN_TOKEN": "tok", "SLUICE_ADMIN_URL": url}
	for _, c := range []struct {
		name   string
		env    env
		args   []string
		code   int
		stderr string
	}{
		{"no command", e, nil, 2, "usage: sluice overrides"},
		{"help", e, []string{"-h"}, 0, "usage: sluice overrides"},
		{"unknown command", e, []string{"frob"}, 2, "unknown command"},
		{"bad descriptor", e, []string{"set", "-descriptor", "tenant"}, 2, "KEY=VALUE"},
		{"bad number", e, []string{"set", "-domain", "d", "-requests-per-unit", "ten"}, 2, `-requests-per-unit: "ten" is not a whole number`},
		{"bad expiry", e, []string{"set", "-domain", "d", "-expires", "soon"}, 2, "-expires"},
		{"bad id", e, []string{"delete", "abc"}, 2, "positive whole number"},
		{"no id", e, []string{"get"}, 2, "want one override ID"},
		{"extra argument", e, []string{"list", "x"}, 2, "unexpected argument"},
		{"no token", env{"SLUICE_ADMIN_URL": url}, []string{"list"}, 2, "SLUICE_ADMIN_TOKEN"},
		{"refused", e, []string{"set", "-domain", "d", "-unit", "fortnight"}, 1, `400 Bad Request: rate_limit.unit: "fortnight" is not a unit`},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(got())
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), c.args, c.env.get, &stdout, &stderr)
			if code != c.code || !strings.Contains(stderr.String(), c.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr.String(), c.code, c.stderr)
			}
			if sent := len(got()) - before; c.code == 2 && sent != 0 {
				t.Errorf("a usage error sent %d requests", sent)
			}
		})
	}
}

// TestSetBodyExpires: -expires takes a duration from now or an RFC 3339
// time, sent in UTC.
func TestSetBodyExpires(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.FixedZone("x", 3600))
	for _, c := range []struct{ in, want string }{
		{"2h", "2026-12-01T11:00:00Z"},
		{"2026-12-02T00:00:00+01:00", "2026-12-01T23:00:00Z"},
	} {
		b, err := setBody("d", nil, "", "", "", "", true, "", "", c.in, now)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m) // a bad body leaves m empty, which the test reports
		if m["expires_at"] != c.want || m["rate_limit"].(map[string]any)["unlimited"] != true {
			t.Errorf("-expires %s: body %s, want expires_at %s", c.in, b, c.want)
		}
	}
}
