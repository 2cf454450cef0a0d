// Package adminclient is `sluice overrides`: a command-line client of the
// admin API of a running Sluice, for the overrides it stores in Postgres.
//
// It speaks HTTP and JSON only; it imports nothing of Sluice, so the
// server's checks stay the one place that judges an override.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

const overridesUsage = `usage: sluice overrides <command> [flags]

Calls the admin API of a running Sluice; the token comes from
SLUICE_ADMIN_TOKEN, the address from -addr (default $SLUICE_ADMIN_URL, else
http://127.0.0.1:8080).

commands:
  list                       every override
  get ID                     one override
  set -domain D -descriptor KEY=VALUE [-descriptor ...]
      (-unit U -requests-per-unit N [-burst N] [-unit-multiplier N] | -unlimited)
      [-name N] [-reason TEXT] [-expires 2h|2026-12-01T00:00:00Z]
                             create or replace the override for that path
      (or: set -json FILE, the body as JSON; - reads stdin)
  delete ID                  delete an override
  history ID                 its changes: who, when, old and new

Every command takes -addr URL and -actor NAME (recorded with changes;
default $USER).
`

// The environment variables read: the admin API address the commands
// call, and the token (the one serve reads, SLUICE_ADMIN_TOKEN).
const (
	envAdminURL   = "SLUICE_ADMIN_URL"
	envAdminToken = "SLUICE_ADMIN_TOKEN"
)

// descriptorFlags collects repeated -descriptor KEY=VALUE flags.
type descriptorFlags []map[string]string

func (d *descriptorFlags) String() string { return fmt.Sprint(*d) }

func (d *descriptorFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want KEY=VALUE (KEY= for the key's any-value rule)")
	}
	*d = append(*d, map[string]string{"key": k, "value": v})
	return nil
}

// Main is `sluice overrides ARGS...`. It returns the process's exit code:
// 0 done, 1 the call failed or the server refused it, 2 a usage error;
// the reason is already printed on stderr.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprint(stderr, overridesUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	fs := flag.NewFlagSet("sluice overrides "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defAddr := getenv(envAdminURL)
	if defAddr == "" {
		defAddr = "http://127.0.0.1:8080"
	}
	addr := fs.String("addr", defAddr, "admin API `URL` (or host:port)")
	actorName := fs.String("actor", getenv("USER"), "`name` recorded with changes (X-Sluice-Actor)")
	var (
		domain, unit, name, reason, expires, rpu, burst, mult, jsonFile *string
		unlimited                                                       *bool
		descs                                                           descriptorFlags
	)
	wantID := true
	switch cmd {
	case "list":
		wantID = false
	case "get", "delete", "history":
	case "set":
		wantID = false
		domain = fs.String("domain", "", "the `domain`")
		fs.Var(&descs, "descriptor", "a level of the path, `KEY=VALUE` (repeat for nested levels; KEY= for any value)")
		unit = fs.String("unit", "", "`unit`: second, minute, hour, day, week, month or year")
		rpu = fs.String("requests-per-unit", "", "requests per unit (`N`; 0 is a ban)")
		burst = fs.String("burst", "", "bucket capacity (`N`; default requests-per-unit)")
		mult = fs.String("unit-multiplier", "", "unit multiplier (`N`; default 1)")
		unlimited = fs.Bool("unlimited", false, "no limit at all")
		name = fs.String("name", "", "limit `name` (default: that of the limit it replaces)")
		reason = fs.String("reason", "", "why, for the history (`text`)")
		expires = fs.String("expires", "", "when it stops applying: a `duration` from now (2h) or an RFC 3339 time")
		jsonFile = fs.String("json", "", "send this `file` as the body instead (- for stdin)")
	default:
		fmt.Fprintf(stderr, "sluice overrides: unknown command %q\n\n%s", cmd, overridesUsage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var id string
	if wantID {
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "sluice overrides %s: want one override ID\n", cmd)
			return 2
		}
		id = fs.Arg(0)
		if n, err := strconv.ParseInt(id, 10, 64); err != nil || n <= 0 {
			fmt.Fprintf(stderr, "sluice overrides %s: ID must be a positive whole number, not %q\n", cmd, id)
			return 2
		}
	} else if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice overrides %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	token := getenv(envAdminToken)
	if token == "" {
		fmt.Fprintf(stderr, "sluice overrides: set %s to the admin token\n", envAdminToken)
		return 2
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	if _, err := url.Parse(base); err != nil {
		fmt.Fprintf(stderr, "sluice overrides: -addr: %v\n", err)
		return 2
	}
	base = strings.TrimRight(base, "/")

	var (
		method = http.MethodGet
		path   = "/admin/overrides"
		body   []byte
	)
	switch cmd {
	case "get":
		path += "/" + id
	case "history":
		path += "/" + id + "/history"
	case "delete":
		method, path = http.MethodDelete, path+"/"+id
	case "set":
		method = http.MethodPut
		var err error
		if *jsonFile != "" {
			body, err = readBody(*jsonFile)
		} else {
			body, err = setBody(*domain, descs, *unit, *rpu, *burst, *mult, *unlimited, *name, *reason, *expires, time.Now())
		}
		if err != nil {
			fmt.Fprintf(stderr, "sluice overrides set: %v\n", err)
			return 2
		}
	}

	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "sluice overrides %s: %v\n", cmd, err)
		return 1
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if *actorName != "" {
		req.Header.Set("X-Sluice-Actor", *actorName)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "sluice overrides %s: %v\n", cmd, err)
		return 1
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		fmt.Fprintf(stderr, "sluice overrides %s: read the answer: %v\n", cmd, err)
		return 1
	}
	if resp.StatusCode >= 300 {
		msg := strings.TrimSpace(string(out))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		fmt.Fprintf(stderr, "sluice overrides %s: %s: %s\n", cmd, resp.Status, msg)
		return 1
	}
	if resp.StatusCode == http.StatusNoContent {
		fmt.Fprintf(stdout, "override %s deleted\n", id)
		return 0
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") != nil {
		stdout.Write(out)
		return 0
	}
	pretty.WriteByte('\n')
	stdout.Write(bytes.TrimRight(pretty.Bytes(), "\n"))
	_, _ = io.WriteString(stdout, "\n") // as the write above: nothing to tell a gone terminal
	return 0
}

func readBody(file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(file)
}

// setBody builds the PUT body from the set flags. The server checks it;
// only what flags cannot say is checked here.
func setBody(domain string, descs descriptorFlags, unit, rpu, burst, mult string, unlimited bool, name, reason, expires string, now time.Time) ([]byte, error) {
	rl := map[string]any{}
	num := func(flagName, s string) (any, error) {
		if s == "" {
			return nil, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("-%s: %q is not a whole number", flagName, s)
		}
		return n, nil
	}
	if unlimited {
		rl["unlimited"] = true
	}
	if unit != "" {
		rl["unit"] = unit
	}
	for _, f := range []struct{ flag, field, v string }{
		{"requests-per-unit", "requests_per_unit", rpu}, {"burst", "burst", burst}, {"unit-multiplier", "unit_multiplier", mult},
	} {
		n, err := num(f.flag, f.v)
		if err != nil {
			return nil, err
		}
		if n != nil {
			rl[f.field] = n
		}
	}
	if name != "" {
		rl["name"] = name
	}
	b := map[string]any{"domain": domain, "descriptors": descs, "rate_limit": rl}
	if len(descs) == 0 {
		b["descriptors"] = []any{}
	}
	if reason != "" {
		b["reason"] = reason
	}
	if expires != "" {
		if d, err := time.ParseDuration(expires); err == nil {
			b["expires_at"] = now.Add(d).UTC().Format(time.RFC3339Nano)
		} else if t, err := time.Parse(time.RFC3339, expires); err == nil {
			b["expires_at"] = t.UTC().Format(time.RFC3339Nano)
		} else {
			return nil, fmt.Errorf("-expires: %q is neither a duration (2h) nor an RFC 3339 time", expires)
		}
	}
	return json.Marshal(b)
}
