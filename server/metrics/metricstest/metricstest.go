// Package metricstest reads metric values for tests, from a registry or a
// scraped /metrics body.
package metricstest

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families indexes metric families by name.
type Families map[string]*dto.MetricFamily

// Gather collects g.
func Gather(t testing.TB, g prometheus.Gatherer) Families {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := Families{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// Parse reads the Prometheus text format, as /metrics serves it.
func Parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return Families(mfs)
}

// Value is the value of the series of family name whose labels include
// labels ("k=v" pairs); a counter, gauge or untyped value, or a histogram's
// sample count. It is 0 when no series matches, and fails the test when
// several do.
func (f Families) Value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mf := f[name]
	if mf == nil {
		return 0
	}
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		if matches(m, labels) {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return 0
	case 1:
	default:
		t.Fatalf("%s{%s}: %d series match", name, strings.Join(labels, ","), len(found))
	}
	m := found[0]
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	t.Fatalf("%s: unsupported type %v", name, mf.GetType())
	return 0
}

// Sum adds the values of every series of family name whose labels include
// labels.
func (f Families) Sum(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mf := f[name]
	if mf == nil {
		return 0
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// Labels lists the label names of family name's series, sorted.
func (f Families) Labels(name string) []string {
	set := map[string]bool{}
	for _, m := range f[name].GetMetric() {
		for _, l := range m.GetLabel() {
			set[l.GetName()] = true
		}
	}
	var out []string
	for l := range set {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// Series lists family name's series as "k=v,k=v", sorted, for messages.
func (f Families) Series(name string) []string {
	var out []string
	for _, m := range f[name].GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, fmt.Sprintf("%s=%s", l.GetName(), l.GetValue()))
		}
		out = append(out, strings.Join(ls, ","))
	}
	sort.Strings(out)
	return out
}

func matches(m *dto.Metric, labels []string) bool {
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
