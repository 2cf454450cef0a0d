package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 860, 260
	padL, padR     = 64, 16
	padT, padB     = 28, 40
)

type line struct {
	name  string
	color string
	ys    []float64
}

// svgLineChart draws lines over a shared x axis. With logY the y axis is
// logarithmic (values <= 0 are left out).
func svgLineChart(title, xLabel, yLabel string, xs []float64, lines []line, logY bool) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<title>%s</title>`, template.HTMLEscapeString(title))
	if len(xs) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="empty">no data</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	xmin, xmax := 0.0, xs[len(xs)-1]
	if xmax <= xmin {
		xmax = xmin + 1
	}
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, y := range l.ys {
			if logY && y <= 0 {
				continue
			}
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	if math.IsInf(ymin, 0) { // nothing to draw
		ymin, ymax = 1, 10
	}
	var ticks []float64
	ty := func(y float64) float64 { return y }
	if logY {
		lo, hi := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
		if hi <= lo {
			hi = lo + 1
		}
		lo = max(lo, hi-12) // twelve decades at most
		ymin, ymax = lo, hi
		ty = math.Log10
		for e := lo; e <= hi; e++ {
			ticks = append(ticks, e)
			if hi-lo <= 3 && e < hi { // few decades: 2 and 5 as well
				ticks = append(ticks, e+math.Log10(2), e+math.Log10(5))
			}
		}
	} else {
		ymin = 0
		ymax = niceCeil(ymax)
		for i := 0; i <= 4; i++ {
			ticks = append(ticks, ymax*float64(i)/4)
		}
	}
	px := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*(chartW-padL-padR) }
	py := func(y float64) float64 { return chartH - padB - (y-ymin)/(ymax-ymin)*(chartH-padT-padB) }
	axes(&b, xLabel, yLabel, xmin, xmax, px)
	for _, t := range ticks {
		label := fmtNum(t)
		if logY {
			label = fmtNum(math.Pow(10, t))
		}
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text x="%d" y="%.1f" class="ytick">%s</text>`,
			padL, chartW-padR, py(t), py(t), padL-6, py(t)+4, label)
	}
	for i, l := range lines {
		var pts []string
		for j, y := range l.ys {
			if j >= len(xs) || (logY && y <= 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[j]), py(ty(y))))
		}
		if len(pts) == 1 {
			fmt.Fprintf(&b, `<circle cx="%s" r="3" fill="%s"/>`, strings.Replace(pts[0], ",", `" cy="`, 1), l.color)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, l.color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" class="legend">%s</text>`,
			padL+10+i*110, 8, l.color, padL+24+i*110, 17, template.HTMLEscapeString(l.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// axes draws the frame, x ticks and the axis labels.
func axes(b *strings.Builder, xLabel, yLabel string, xmin, xmax float64, px func(float64) float64) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" class="frame"/>`, padL, padT, chartW-padL-padR, chartH-padT-padB)
	step := niceCeil((xmax - xmin) / 6)
	for x := xmin; x <= xmax+step/1e6; x += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" class="xtick">%s</text>`, px(x), chartH-padB+16, fmtNum(x))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" class="xlabel">%s</text>`, (chartW+padL)/2, chartH-6, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(b, `<text x="14" y="%d" class="ylabel" transform="rotate(-90 14 %d)">%s</text>`,
		chartH/2, chartH/2, template.HTMLEscapeString(yLabel))
}

// svgHistogram draws the latency distribution with a logarithmic x axis
// (ms), the bins regrouped into at most 80 columns, and the percentiles
// marked.
func svgHistogram(bins []Bin, l LatencySummary) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img"><title>latency histogram</title>`, chartW, chartH, chartW, chartH)
	if len(bins) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="empty">no data</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	lo := math.Log10(math.Max(bins[0].LoMS, 1e-4))
	hi := math.Log10(math.Max(bins[len(bins)-1].HiMS, 1e-4))
	lo, hi = math.Floor(lo*4)/4, math.Ceil(hi*4)/4
	if hi <= lo {
		hi = lo + 0.25
	}
	const cols = 80
	var counts [cols]uint64
	var total, top uint64
	for _, bin := range bins {
		mid := math.Log10(math.Max((bin.LoMS+bin.HiMS)/2, 1e-4))
		c := min(cols-1, max(0, int((mid-lo)/(hi-lo)*cols)))
		counts[c] += bin.Count
		total += bin.Count
	}
	for _, c := range counts {
		top = max(top, c)
	}
	px := func(logx float64) float64 { return padL + (logx-lo)/(hi-lo)*(chartW-padL-padR) }
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" class="frame"/>`, padL, padT, chartW-padL-padR, chartH-padT-padB)
	for e := math.Ceil(lo); e <= hi; e++ {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" class="grid"/><text x="%.1f" y="%d" class="xtick">%s</text>`,
			px(e), px(e), padT, chartH-padB, px(e), chartH-padB+16, fmtNum(math.Pow(10, e)))
	}
	colW := float64(chartW-padL-padR) / cols
	plotH := float64(chartH - padT - padB)
	for i, c := range counts {
		if c == 0 {
			continue
		}
		h := float64(c) / float64(top) * plotH
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="bar"><title>%d (%.2f%%)</title></rect>`,
			padL+float64(i)*colW, float64(chartH-padB)-h, colW-1, h, c, 100*float64(c)/float64(total))
	}
	marks := []struct {
		name string
		v    float64
	}{{"p50", l.P50}, {"p99", l.P99}, {"p99.9", l.P999}, {"max", l.Max}}
	for i, m := range marks {
		if m.v <= 0 {
			continue
		}
		x := px(math.Log10(m.v))
		tx, anchor := x+3, "start"
		if x > chartW*0.75 {
			tx, anchor = x-3, "end"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" class="mark"/><text x="%.1f" y="%d" class="marklabel" text-anchor="%s">%s %s</text>`,
			x, x, padT, chartH-padB, tx, padT+12+12*i, anchor, m.name, fmtNum(m.v))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" class="xlabel">latency (ms, log scale)</text>`, (chartW+padL)/2, chartH-6)
	fmt.Fprintf(&b, `<text x="14" y="%d" class="ylabel" transform="rotate(-90 14 %d)">requests</text></svg>`, chartH/2, chartH/2)
	return template.HTML(b.String())
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	case a >= 1:
		return fmt.Sprintf("%.4g", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>sluice bench {{.R.StartedAt.Format "2006-01-02 15:04:05Z"}}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:2px 12px 2px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#555}.pass{color:#17803d;font-weight:600}.fail{color:#c62828;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#444}.frame{fill:none;stroke:#bbb}.grid{stroke:#eee}
.xtick{text-anchor:middle}.ytick{text-anchor:end}.xlabel,.ylabel,.empty{text-anchor:middle}
.bar{fill:#4a78c2}.mark{stroke:#c62828;stroke-dasharray:3 3}.marklabel{fill:#c62828}
</style></head><body>
<h1>sluice bench: <span class="{{if .R.Pass}}pass">PASS{{else}}fail">FAIL ({{range $i, $n := .R.Failed}}{{if $i}}, {{end}}{{$n}}{{end}}){{end}}</span></h1>
<table>
<tr><th>mode</th><td>{{.Mode}}</td></tr>
<tr><th>servers</th><td>{{range $i, $a := .R.Config.Addrs}}{{if $i}}, {{end}}{{$a}}{{end}} ({{.R.Config.ConnsPerAddr}} connection(s) each{{with .R.Config.Client}}, {{.}} client{{end}})</td></tr>
<tr><th>workload</th><td>domain {{.R.Config.Domain}}; keys {{range $i, $k := .R.Config.Keys}}{{if $i}}, {{end}}{{$k}}{{end}}; {{.R.Config.Values}} values ({{.R.Config.Dist}}); hits {{.R.Config.Hits}}</td></tr>
<tr><th>measured</th><td>{{printf "%.2f" .R.ElapsedSeconds}} s after {{.R.Config.WarmupSeconds}} s warmup{{if .R.Interrupted}} (interrupted){{end}}; started {{.R.StartedAt.Format "2006-01-02 15:04:05Z"}}</td></tr>
<tr><th>requests</th><td>{{.R.Requests}}: {{range $k, $v := .R.Codes}}{{$k}} {{$v}}; {{end}}errors {{.R.ErrorCount}} ({{printf "%.3f" .ErrPct}}%){{range $k, $v := .R.Errors}}; {{$k}} {{$v}}{{end}}</td></tr>
<tr><th>throughput</th><td>{{printf "%.1f" .R.ThroughputRPS}} decisions/s</td></tr>
<tr><th>latency (ms)</th><td>p50 {{printf "%.3f" .R.Latency.P50}} · p90 {{printf "%.3f" .R.Latency.P90}} · p99 {{printf "%.3f" .R.Latency.P99}} · p99.9 {{printf "%.3f" .R.Latency.P999}} · max {{printf "%.3f" .R.Latency.Max}} ({{.From}})</td></tr>
{{with .R.Accuracy}}<tr><th>accuracy</th><td>limit {{.Limit}}: {{.Buckets}} buckets, {{.AdmittedTokens}} of {{.OfferedTokens}} tokens admitted;
over-admission <b>{{.OverAdmission}}</b> ({{.OverBuckets}} buckets), under-admission {{.UnderAdmission}} ({{.UnderBuckets}} buckets)</td></tr>{{end}}
{{with .R.Usage}}<tr><th>usage</th><td>budget {{.Limit}}, {{.Streams}} streams, cost {{.CostMin}}-{{.CostMax}}: {{.Checks}} checks ({{.ChecksOK}} OK), {{.Reports}} reports;
used <b>{{.UsedTokens}}</b> tokens = {{printf "%.3f" .UsedFraction}} x allowance {{printf "%.1f" .AllowanceTokens}}; bound allowance + {{printf "%.0f" .BoundTokens}}</td></tr>{{end}}
{{range .R.Targets}}<tr><th>{{.Name}}</th><td class="{{if .Pass}}pass{{else}}fail{{end}}">{{if .Pass}}PASS{{else}}FAIL{{end}}: {{printf "%.4g" .Value}} (limit {{printf "%.4g" .Limit}})</td></tr>{{end}}
</table>
<h2>Latency over time</h2>{{.LatencyChart}}
<h2>Latency histogram</h2>{{.Histogram}}
<h2>Throughput over time</h2>{{.ThroughputChart}}
</body></html>
`))

// WriteHTML writes one self-contained page: the summary, latency over
// time, the latency histogram and throughput over time, as inline SVG.
func (rep *Report) WriteHTML(w io.Writer) error {
	xs := make([]float64, len(rep.Series))
	p50, p99, pmax := make([]float64, len(xs)), make([]float64, len(xs)), make([]float64, len(xs))
	rps, errs := make([]float64, len(xs)), make([]float64, len(xs))
	prev := 0.0
	for i, p := range rep.Series {
		xs[i], p50[i], p99[i], pmax[i], rps[i] = p.T, p.P50MS, p.P99MS, p.MaxMS, p.RPS
		if width := p.T - prev; width > 0 {
			errs[i] = float64(p.Errors) / width
		}
		prev = p.T
	}
	mode, from := "closed loop, "+fmt.Sprint(rep.Config.Concurrency)+" concurrent", "from send"
	if rep.Mode == ModeOpen {
		mode = fmt.Sprintf("open loop, %g req/s %s arrivals, at most %d in flight", rep.Config.Rate, rep.Config.Arrival, rep.Config.Workers)
		from = "from intended send time"
	}
	return pageTmpl.Execute(w, map[string]any{
		"R": rep, "Mode": mode, "From": from, "ErrPct": 100 * rep.ErrorRate,
		"LatencyChart": svgLineChart("latency over time", "seconds into the measured phase", "latency (ms, log scale)", xs,
			[]line{{"p50", "#4a78c2", p50}, {"p99", "#e08a1e", p99}, {"max", "#c62828", pmax}}, true),
		"Histogram": svgHistogram(rep.Histogram, rep.Latency),
		"ThroughputChart": svgLineChart("throughput over time", "seconds into the measured phase", "per second", xs,
			[]line{{"decisions/s", "#17803d", rps}, {"errors/s", "#c62828", errs}}, false),
	})
}
