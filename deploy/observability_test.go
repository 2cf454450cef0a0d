package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// promtool finds promtool: $SLUICE_PROMTOOL, then PATH, then where `make
// promtool` unpacks it. Without it the test skips, unless
// SLUICE_REQUIRE_PROMTOOL=1 (set by make test), when it fails.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLUICE_PROMTOOL"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if p, err := filepath.Abs("../.tmp/promtool/root/usr/bin/promtool"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("SLUICE_REQUIRE_PROMTOOL") == "1" {
		t.Fatal("promtool not found (PATH, SLUICE_PROMTOOL, .tmp/promtool); run make promtool")
	}
	t.Skip("promtool not found; run make promtool (make test requires it)")
	return ""
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestAlertRulesPromtool(t *testing.T) {
	runPromtool(t, "check", "rules", "prometheus/alerts.yaml")
	runPromtool(t, "test", "rules", "prometheus/alerts_test.yaml")
	runPromtool(t, "check", "config", "prometheus/prometheus.yml")
}

// metricRef is a metric named in a PromQL expression, with the labels its
// selector matches on.
type metricRef struct {
	name   string
	labels []string
}

var (
	metricName  = regexp.MustCompile(`\b((?:sluice|go|process)_[a-zA-Z0-9_]+)(\{[^}]*\})?`)
	matcherName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupLabels = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// metricRefs finds the metrics an expression names, and the labels it
// groups by.
func metricRefs(expr string) (refs []metricRef, grouping []string) {
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		r := metricRef{name: m[1]}
		for _, l := range matcherName.FindAllStringSubmatch(m[2], -1) {
			r.labels = append(r.labels, l[1])
		}
		refs = append(refs, r)
	}
	for _, g := range groupLabels.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				grouping = append(grouping, l)
			}
		}
	}
	return refs, grouping
}

// checkExpr reports each metric or label expr names that Sluice does not
// export. Target labels (job, instance) and histogram buckets (le) are
// always allowed.
func checkExpr(t *testing.T, where, expr string, exported map[string]family) {
	t.Helper()
	refs, grouping := metricRefs(expr)
	if len(refs) == 0 {
		t.Errorf("%s: %q names no Sluice metric", where, expr)
		return
	}
	known := map[string]bool{"job": true, "instance": true, "le": true}
	for _, r := range refs {
		f, ok := lookupSeries(exported, r.name)
		if !ok {
			t.Errorf("%s: %s is not a metric Sluice exports", where, r.name)
			continue
		}
		for _, l := range f.labels {
			known[l] = true
		}
		for _, l := range r.labels {
			if !known[l] && !slices.Contains(f.labels, l) {
				t.Errorf("%s: %s has no label %q (it has %v)", where, r.name, l, f.labels)
			}
		}
	}
	for _, l := range grouping {
		if !known[l] {
			t.Errorf("%s: groups by %q, which none of its metrics has", where, l)
		}
	}
}

// lookupSeries finds the family of a series name: a histogram's _bucket,
// _sum and _count series belong to it.
func lookupSeries(exported map[string]family, name string) (family, bool) {
	if f, ok := exported[name]; ok {
		return f, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f, ok := exported[base]; ok && (f.typ == "histogram" || f.typ == "summary") {
				return f, true
			}
		}
	}
	return family{}, false
}

func TestAlertRulesContent(t *testing.T) {
	exported := exportedMetrics(t)
	doc := readYAML(t, "prometheus/alerts.yaml")[0]
	var names []string
	for _, g := range list(doc["groups"]) {
		for _, r := range list(get(g, "rules")) {
			name := str(get(r, "alert"))
			names = append(names, name)
			for _, a := range []string{"summary", "runbook"} {
				if str(get(r, "annotations", a)) == "" {
					t.Errorf("alert %s: no %s annotation", name, a)
				}
			}
			if str(get(r, "labels", "severity")) == "" {
				t.Errorf("alert %s: no severity label", name)
			}
			checkExpr(t, "alert "+name, str(get(r, "expr")), exported)
		}
	}
	for _, want := range []string{"SluiceRedisDown", "SluiceBreakerOpen", "SluiceFailureModeDecisions",
		"SluiceConfigReloadFailing", "SluiceDecisionLatencyHigh", "SluiceOverLimitSurge"} {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func TestDashboard(t *testing.T) {
	exported := exportedMetrics(t)
	data, err := os.ReadFile("grafana/sluice.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard has no uid or title")
	}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range all {
		where := "panel " + p.Title
		if ids[p.ID] {
			t.Errorf("%s: duplicate id %d", where, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: grid position %+v", where, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("%s: refId %q missing or repeated", where, tg.RefID)
			}
			refs[tg.RefID] = true
			checkExpr(t, where, tg.Expr, exported)
			r, _ := metricRefs(tg.Expr)
			for _, m := range r {
				if f, ok := lookupSeries(exported, m.name); ok {
					used[f.name] = true
				}
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			checkExpr(t, "variable "+v.Name, v.Definition, exported)
		}
	}
	for _, a := range d.Annotations.List {
		checkExpr(t, "annotation "+a.Name, a.Expr, exported)
	}
	// The panels the dashboard promises.
	for _, m := range []string{"sluice_decisions_total", "sluice_decision_duration_seconds",
		"sluice_store_duration_seconds", "sluice_store_batch_size", "sluice_local_cache_hits_total",
		"sluice_breaker_state", "sluice_backend_up", "sluice_config_reloads_total", "sluice_overrides"} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}
