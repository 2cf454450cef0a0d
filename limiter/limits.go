package limiter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// DomainConfig is one domain of limits, as a limit file (or config.yaml's
// inline domains) states it.
type DomainConfig struct {
	Domain      string
	Descriptors []DescriptorConfig
	File        string // where it came from, for error messages
	Line        int
}

// DescriptorConfig is one node of a domain's descriptor tree.
type DescriptorConfig struct {
	Key            string
	Value          string // empty: any value; '*' anywhere is a wildcard
	RateLimit      *RateLimit
	ShadowMode     bool
	ShareThreshold bool
	DetailedMetric bool
	ValueToMetric  bool
	// QuotaMode marks a quota-based service selection limit: its own
	// status carries its code, and it denies the request only when every
	// quota-mode descriptor of the request is over.
	QuotaMode bool
	// Metadata is returned, merged with that of the other limits that
	// passed, in the response's dynamic metadata (when enabled). Values are
	// what YAML or a protobuf Struct decode to: nil, bool, float64, string,
	// []any and map[string]any.
	Metadata    map[string]any
	Descriptors []DescriptorConfig
	Line        int
}

// Limits is a compiled, immutable set of domains, safe for concurrent use.
// Replace it as a whole to change limits.
type Limits struct {
	domains map[string]*node
	version string
	shadow  bool
	quota   bool
	count   int
	usage   bool // some rule charges usage
}

// Version identifies the limits by content: "sha256:" and a hex digest.
func (l *Limits) Version() string { return l.version }

// Rules is the number of limits (nodes with a rate_limit).
func (l *Limits) Rules() int { return l.count }

// Domains lists the configured domain names, sorted.
func (l *Limits) Domains() []string {
	out := make([]string, 0, len(l.domains))
	for d := range l.domains {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// Rule is a limit attached to a tree node.
type Rule struct {
	Limit  RateLimit
	Rate   Rate // zero for unlimited and banned limits
	Shadow bool
	// Path names the rule for metrics and logs: its name, else the key
	// path ("tenant.plan"); never a request value.
	Path           string
	DetailedMetric bool
	ValueToMetric  bool
	// MetricKey, when not nil, names the rule's decisions in metrics as
	// envoyproxy/ratelimit names its stats (detailed_metric on the rule,
	// or value_to_metric on its path); nil: by Path.
	MetricKey *MetricKey
	QuotaMode bool
	Metadata  map[string]any // never modified after Compile
}

type node struct {
	key      string
	value    string // pattern; "" for any value
	wildcard bool
	share    bool
	// valueToMetric: the node's value_to_metric, kept for the metric keys
	// of the rules at and below it.
	valueToMetric bool
	rule          *Rule
	children      map[string]*group
}

type group struct {
	exact     map[string]*node
	wildcards []*node
	any       *node
}

// CompileOptions tune Compile.
type CompileOptions struct {
	// ShadowMode puts every limit in shadow mode.
	ShadowMode bool
	// QuotaMode puts every admission limit in quota mode (never a usage
	// limit, which stays usage).
	QuotaMode bool
	// DefaultCharge is the charging mode of the limits that do not state
	// one (RateLimit.ChargeSet unset): limits delivered over xDS, whose
	// format cannot say, and files that leave it out. It never applies to
	// a ban, an unlimited limit or a quota-mode rule, which stay
	// admission; the zero value is admission.
	DefaultCharge Charge
	// DomainCharge is DefaultCharge for the named domains, in place of
	// the global one.
	DomainCharge map[string]Charge
}

// chargeFor is the default charging mode of domain's limits. Under the
// global quota mode every limit that states no charge is a quota-mode
// rule, which a default never makes usage.
func (o *CompileOptions) chargeFor(domain string) Charge {
	if o.QuotaMode {
		return ChargeAdmission
	}
	if c, ok := o.DomainCharge[domain]; ok {
		return c
	}
	return o.DefaultCharge
}

// effectiveCharge is the charging mode of d's limit under the default
// def: its own when it states one, else def where a default may apply.
func effectiveCharge(d *DescriptorConfig, def Charge) Charge {
	r := d.RateLimit
	if r.chargeStated() || r.Unlimited || r.RequestsPerUnit == 0 || d.QuotaMode {
		return r.Charge
	}
	return def
}

// hashOptions writes the options that change decisions into the version
// hash; the defaults write nothing, so limits compiled without them keep
// their versions.
func (o *CompileOptions) hashOptions(h interface{ Write([]byte) (int, error) }) {
	fmt.Fprintf(h, "shadow=%v\n", o.ShadowMode)
	if o.DefaultCharge != ChargeAdmission || len(o.DomainCharge) > 0 {
		ds := make([]string, 0, len(o.DomainCharge))
		for d := range o.DomainCharge {
			ds = append(ds, d)
		}
		sort.Strings(ds)
		fmt.Fprintf(h, "charge=%v", o.DefaultCharge)
		for _, d := range ds {
			fmt.Fprintf(h, " %q=%v", d, o.DomainCharge[d])
		}
		fmt.Fprintln(h)
	}
}

// Compile builds Limits from validated domain configs. It checks what a
// single file cannot: a domain defined twice, and rates too coarse to keep
// exactly; errors name the file and line.
func Compile(domains []DomainConfig, opts CompileOptions) (*Limits, error) {
	l := &Limits{domains: make(map[string]*node, len(domains)), shadow: opts.ShadowMode, quota: opts.QuotaMode}
	h := sha256.New()
	opts.hashOptions(h)
	if opts.QuotaMode {
		fmt.Fprintf(h, "quota=true\n") // only then: versions without it stay
	}
	where := map[string]string{}
	sorted := append([]DomainConfig(nil), domains...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Domain < sorted[j].Domain })
	for _, d := range sorted {
		if d.Domain == "" {
			return nil, fmt.Errorf("%s:%d: domain: must not be empty", d.File, d.Line)
		}
		if prev, ok := where[d.Domain]; ok {
			return nil, fmt.Errorf("%s:%d: domain %q is already defined at %s", d.File, d.Line, d.Domain, prev)
		}
		where[d.Domain] = fmt.Sprintf("%s:%d", d.File, d.Line)
		root := &node{}
		def := opts.chargeFor(d.Domain)
		if err := l.build(root, d.Descriptors, d.File, nil, opts.ShadowMode, def); err != nil {
			return nil, err
		}
		l.domains[d.Domain] = root
		fmt.Fprintf(h, "domain %q\n", d.Domain)
		hashTree(h, d.Descriptors, 1, def)
	}
	l.version = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return l, nil
}

func hashTree(h interface{ Write([]byte) (int, error) }, ds []DescriptorConfig, depth int, def Charge) {
	for i := range ds {
		d := &ds[i]
		fmt.Fprintf(h, "%d %q %q %v %v %v %v", depth, d.Key, d.Value, d.ShadowMode, d.ShareThreshold, d.DetailedMetric, d.ValueToMetric)
		if d.QuotaMode || len(d.Metadata) > 0 {
			// Only then, so that files without them keep their versions.
			// JSON orders map keys, so equal metadata hashes equally; the
			// parser bounded its size.
			md, err := json.Marshal(d.Metadata)
			if err != nil {
				md = []byte(fmt.Sprintf("%#v", d.Metadata))
			}
			fmt.Fprintf(h, " quota=%v md=%s", d.QuotaMode, md)
		}
		if r := d.RateLimit; r != nil {
			fmt.Fprintf(h, " rl{%q %d %d %d %d %v %q}", r.Name, r.RequestsPerUnit, r.Unit, r.multiplier(), r.Capacity(), r.Unlimited, r.Replaces)
			if c := effectiveCharge(d, def); c != ChargeAdmission || r.MaxDebt != 0 {
				// Only then, so that admission limits keep their versions.
				fmt.Fprintf(h, " charge{%v %d}", c, r.MaxDebt)
			}
		}
		fmt.Fprintln(h)
		hashTree(h, d.Descriptors, depth+1, def)
	}
}

// build adds ds below parent; chain holds the nodes from the domain's root
// down to parent.
func (l *Limits) build(parent *node, ds []DescriptorConfig, file string, chain []*node, shadow bool, def Charge) error {
	for i := range ds {
		d := &ds[i]
		if d.Key == "" {
			return fmt.Errorf("%s:%d: key: must not be empty", file, d.Line)
		}
		if parent.children == nil {
			parent.children = map[string]*group{}
		}
		g := parent.children[d.Key]
		if g == nil {
			g = &group{exact: map[string]*node{}}
			parent.children[d.Key] = g
		}
		n := &node{key: d.Key, value: d.Value, share: d.ShareThreshold, valueToMetric: d.ValueToMetric}
		switch {
		case d.Value == "":
			if g.any != nil {
				return fmt.Errorf("%s:%d: duplicate descriptor key %q with no value at this level", file, d.Line, d.Key)
			}
			g.any = n
		case strings.Contains(d.Value, "*"):
			for _, w := range g.wildcards {
				if w.value == d.Value {
					return fmt.Errorf("%s:%d: duplicate descriptor %s=%s at this level", file, d.Line, d.Key, d.Value)
				}
			}
			n.wildcard = true
			g.wildcards = append(g.wildcards, n)
		default:
			if g.exact[d.Value] != nil {
				return fmt.Errorf("%s:%d: duplicate descriptor %s=%s at this level", file, d.Line, d.Key, d.Value)
			}
			g.exact[d.Value] = n
		}
		c := append(chain[:len(chain):len(chain)], n)
		if d.RateLimit != nil {
			rl := *d.RateLimit
			rl.Charge = effectiveCharge(d, def)
			if rl.UnitMultiplier == 0 {
				rl.UnitMultiplier = 1
			}
			if !rl.Unlimited && rl.Burst == 0 {
				rl.Burst = rl.RequestsPerUnit
			}
			r := &Rule{Limit: rl, Shadow: shadow || d.ShadowMode, DetailedMetric: d.DetailedMetric, ValueToMetric: d.ValueToMetric,
				// envoyproxy/ratelimit answers an unlimited descriptor OK
				// before counting quota descriptors: quota_mode on an
				// unlimited limit does nothing.
				QuotaMode: d.QuotaMode && !rl.Unlimited,
				Metadata:  d.Metadata,
			}
			r.Path = rl.Name
			if r.Path == "" {
				r.Path = keyPath(c)
			}
			r.MetricKey = newMetricKey(c, d.DetailedMetric)
			if rl.Charge == ChargeUsage {
				switch {
				case d.QuotaMode:
					return fmt.Errorf("%s:%d: quota_mode: rule %s: not allowed with rate_limit.charge: usage (a quota-mode limit is charged only when it passes)", file, d.Line, r.Path)
				case rl.Unlimited:
					return fmt.Errorf("%s:%d: rate_limit.charge: rule %s: usage does not apply to an unlimited limit", file, d.Line, r.Path)
				case rl.RequestsPerUnit == 0:
					return fmt.Errorf("%s:%d: rate_limit.charge: rule %s: usage does not apply to a ban (requests_per_unit: 0), which has no bucket to charge", file, d.Line, r.Path)
				}
				l.usage = true
			} else if rl.MaxDebt != 0 {
				return fmt.Errorf("%s:%d: rate_limit.max_debt: rule %s: applies only to charge: usage", file, d.Line, r.Path)
			}
			if !rl.Unlimited && rl.RequestsPerUnit > 0 {
				rt, err := rl.Rate()
				if err != nil {
					return fmt.Errorf("%s:%d: rate_limit: %w", file, d.Line, err)
				}
				r.Rate = rt
			}
			n.rule = r
			l.count++
		}
		if err := l.build(n, d.Descriptors, file, c, shadow, def); err != nil {
			return err
		}
	}
	return nil
}

// keyPath joins the keys of chain with '.' ("tenant.plan").
func keyPath(chain []*node) string {
	var b strings.Builder
	for i, n := range chain {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(n.key)
	}
	return b.String()
}

// HasLimitName reports whether a limit of the domain is called name
// (rate_limit.name), the names a replaces entry may refer to.
func (l *Limits) HasLimitName(domain, name string) bool {
	if l == nil || name == "" {
		return false
	}
	var walk func(n *node) bool
	walk = func(n *node) bool {
		if n.rule != nil && n.rule.Limit.Name == name {
			return true
		}
		for _, g := range n.children {
			for _, c := range g.exact {
				if walk(c) {
					return true
				}
			}
			for _, c := range g.wildcards {
				if walk(c) {
					return true
				}
			}
			if g.any != nil && walk(g.any) {
				return true
			}
		}
		return false
	}
	root, ok := l.domains[domain]
	return ok && walk(root)
}

// HasDomain reports whether the domain is configured.
func (l *Limits) HasDomain(domain string) bool {
	_, ok := l.domains[domain]
	return ok
}

// Match finds the rule for one request descriptor in domain and appends the
// bucket's key parts to parts. It returns nil when the descriptor has no
// limit (unknown domain, an entry with no matching child, or no limit on
// the node reached by the last entry).
func (l *Limits) Match(domain string, entries []Entry, parts []KeyPart) (*Rule, []KeyPart) {
	n := l.domains[domain]
	if n == nil || len(entries) == 0 {
		return nil, parts
	}
	for _, e := range entries {
		g := n.children[e.Key]
		if g == nil {
			return nil, parts
		}
		next := g.exact[e.Value]
		if next == nil {
			for _, w := range g.wildcards {
				if globMatch(w.value, e.Value) {
					next = w
					break
				}
			}
		}
		if next == nil {
			next = g.any
		}
		if next == nil {
			return nil, parts
		}
		if next.share && next.value != "" {
			parts = append(parts, KeyPart{Key: e.Key, Value: next.value, Shared: true})
		} else {
			parts = append(parts, KeyPart{Key: e.Key, Value: e.Value})
		}
		n = next
	}
	return n.rule, parts
}

// globMatch reports whether s matches pattern, where '*' matches any run of
// bytes (including none) and every other byte matches itself.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && pattern[px] == '*':
			starPx, starSx = px, sx
			px++
		case px < len(pattern) && pattern[px] == s[sx]:
			px++
			sx++
		case starPx >= 0:
			px = starPx + 1
			starSx++
			sx = starSx
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}
