package limiter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter/yamlconf"
)

// Override is a limit set at run time for one descriptor path of a domain,
// replacing or adding to what the limit files say (see MergeOverrides). Its
// JSON form is the admin API's: rate_limit is in the limit-file form.
type Override struct {
	ID     int64  `json:"id,omitempty"`
	Domain string `json:"domain"`
	// Descriptors is the path: one entry per level of the tree. A value is
	// matched as written: an exact value, a wildcard pattern naming the
	// wildcard node with that pattern, or empty for the key's any-value
	// node.
	Descriptors []OverrideEntry `json:"descriptors"`
	RateLimit   RateLimit       `json:"rate_limit"`
	Reason      string          `json:"reason"`
	UpdatedBy   string          `json:"updated_by,omitempty"`
	CreatedAt   time.Time       `json:"created_at,omitzero"`
	UpdatedAt   time.Time       `json:"updated_at,omitzero"`
	// ExpiresAt, when set, is when the override stops applying.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// OverrideEntry is one level of an override's descriptor path.
type OverrideEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// MaxReasonLen bounds an override's reason, in bytes.
const MaxReasonLen = 1024

// OverrideError is an invalid override. Field names what is wrong as the
// JSON body spells it ("rate_limit.unit", "descriptors[1].key").
type OverrideError struct {
	Field string
	Msg   string
}

func (e *OverrideError) Error() string { return e.Field + ": " + e.Msg }

func overrideErr(field, format string, args ...any) error {
	return &OverrideError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// PathString shows the override's path as key=value pairs, for logs.
func (o *Override) PathString() string {
	var b strings.Builder
	for i, e := range o.Descriptors {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(e.Value)
	}
	return b.String()
}

// Validate checks an override against the request bounds b (zero fields
// take DefaultBounds): a path no request could reach is refused, as are a
// missing domain or key, an empty or missing rate_limit, a rate too coarse
// to keep exactly, and an expiry not after now. The error is an
// *OverrideError naming the field.
func (o *Override) Validate(b Bounds, now time.Time) error {
	if b.MaxEntries <= 0 {
		b.MaxEntries = DefaultBounds.MaxEntries
	}
	if b.MaxKeyLen <= 0 {
		b.MaxKeyLen = DefaultBounds.MaxKeyLen
	}
	if b.MaxValueLen <= 0 {
		b.MaxValueLen = DefaultBounds.MaxValueLen
	}
	switch {
	case o.Domain == "":
		return overrideErr("domain", "required: the domain the override applies to")
	case len(o.Domain) > b.MaxValueLen:
		return overrideErr("domain", "%d bytes, longer than the bound of %d", len(o.Domain), b.MaxValueLen)
	case len(o.Descriptors) == 0:
		return overrideErr("descriptors", "required: the descriptor path, at least one {\"key\": ..., \"value\": ...}")
	case len(o.Descriptors) > b.MaxEntries:
		return overrideErr("descriptors", "path of %d entries is too long; the bound is %d", len(o.Descriptors), b.MaxEntries)
	}
	for i, e := range o.Descriptors {
		switch {
		case e.Key == "":
			return overrideErr(fmt.Sprintf("descriptors[%d].key", i), "required")
		case len(e.Key) > b.MaxKeyLen:
			return overrideErr(fmt.Sprintf("descriptors[%d].key", i), "%d bytes, longer than the bound of %d", len(e.Key), b.MaxKeyLen)
		case len(e.Value) > b.MaxValueLen:
			return overrideErr(fmt.Sprintf("descriptors[%d].value", i), "%d bytes, longer than the bound of %d", len(e.Value), b.MaxValueLen)
		}
	}
	if err := validateOverrideLimit(&o.RateLimit); err != nil {
		return err
	}
	if len(o.Reason) > MaxReasonLen {
		return overrideErr("reason", "%d bytes, longer than the bound of %d", len(o.Reason), MaxReasonLen)
	}
	if !o.ExpiresAt.IsZero() && !o.ExpiresAt.After(now) {
		return overrideErr("expires_at", "%s is not in the future", o.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// validateOverrideLimit checks a limit built in Go as the limit-file parser
// checks one read from text.
func validateOverrideLimit(r *RateLimit) error {
	if r.Charge > ChargeUsage {
		return overrideErr("rate_limit.charge", "unknown charging mode %s; valid modes are admission, usage", r.Charge)
	}
	if r.MaxDebt != 0 && r.Charge != ChargeUsage {
		return overrideErr("rate_limit.max_debt", "applies only to charge: usage")
	}
	if r.Charge == ChargeUsage {
		switch {
		case r.Unlimited:
			return overrideErr("rate_limit.charge", "usage does not apply to an unlimited limit")
		case r.RequestsPerUnit == 0:
			return overrideErr("rate_limit.charge", "usage does not apply to a ban (requests_per_unit: 0), which has no bucket to charge")
		}
	}
	if r.Unlimited {
		if r.Unit != UnitUnknown || r.RequestsPerUnit != 0 || r.Burst != 0 || r.UnitMultiplier > 1 {
			return overrideErr("rate_limit.unlimited", "unit, requests_per_unit, unit_multiplier and burst are not allowed with unlimited: true")
		}
		return nil
	}
	if r.Unit == UnitUnknown || r.Unit.Seconds() == 0 {
		return overrideErr("rate_limit", "required: unit and requests_per_unit (requests_per_unit 0 is a ban), or unlimited: true")
	}
	if r.RequestsPerUnit == 0 {
		if r.Burst != 0 {
			return overrideErr("rate_limit.burst", "has no effect on a ban (requests_per_unit: 0); remove it")
		}
		return nil
	}
	if _, err := r.Rate(); err != nil {
		return overrideErr("rate_limit", "%v", err)
	}
	for i, n := range r.Replaces {
		if n == "" {
			return overrideErr(fmt.Sprintf("rate_limit.replaces[%d].name", i), "must not be empty")
		}
		if r.Name != "" && n == r.Name {
			return overrideErr(fmt.Sprintf("rate_limit.replaces[%d].name", i), "a limit cannot replace itself")
		}
	}
	return nil
}

// rateLimitJSON is a RateLimit in the limit-file form.
type rateLimitJSON struct {
	Unit            string         `json:"unit,omitempty"`
	UnitMultiplier  uint32         `json:"unit_multiplier,omitempty"`
	RequestsPerUnit *uint32        `json:"requests_per_unit,omitempty"`
	Burst           uint32         `json:"burst,omitempty"`
	Unlimited       bool           `json:"unlimited,omitempty"`
	Name            string         `json:"name,omitempty"`
	Replaces        []replacesJSON `json:"replaces,omitempty"`
	Charge          string         `json:"charge,omitempty"`
	MaxDebt         uint64         `json:"max_debt,omitempty"`
}

type replacesJSON struct {
	Name string `json:"name" yaml:"name"`
}

func (r *RateLimit) doc() rateLimitJSON {
	d := rateLimitJSON{Unlimited: r.Unlimited, Name: r.Name}
	for _, n := range r.Replaces {
		d.Replaces = append(d.Replaces, replacesJSON{Name: n})
	}
	if r.Unlimited {
		return d
	}
	rpu := r.RequestsPerUnit
	d.Unit, d.RequestsPerUnit = r.Unit.String(), &rpu
	if r.UnitMultiplier > 1 {
		d.UnitMultiplier = r.UnitMultiplier
	}
	if r.RequestsPerUnit > 0 && r.Burst != 0 {
		d.Burst = r.Burst
	}
	if r.Charge != ChargeAdmission || r.ChargeSet {
		d.Charge = r.Charge.String()
	}
	d.MaxDebt = r.MaxDebt
	return d
}

// MarshalJSON writes the limit in the limit-file form:
// {"unit":"second","requests_per_unit":10,"burst":20}, {"unlimited":true}.
func (r RateLimit) MarshalJSON() ([]byte, error) { return json.Marshal(r.doc()) }

// UnmarshalJSON reads a limit in the limit-file form, checked as strictly
// as a limit file: unknown fields, unknown units, negative or fractional
// numbers, unlimited with a rate, and burst on a ban are refused. The
// error is an *OverrideError naming the field under "rate_limit".
func (r *RateLimit) UnmarshalJSON(data []byte) error {
	rl, err := ParseRateLimitJSON(data)
	if err != nil {
		return err
	}
	*r = *rl
	return nil
}

// ParseRateLimitJSON parses a rate_limit object with the limit-file rules.
// See RateLimit.UnmarshalJSON.
func ParseRateLimitJSON(data []byte) (*RateLimit, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, overrideErr("rate_limit", "must be an object such as {\"unit\": \"second\", \"requests_per_unit\": 10}, or {\"unlimited\": true}")
	}
	// JSON is YAML: the limit-file parser does the checking. Compacted
	// first, since YAML refuses some whitespace JSON allows (tabs).
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return nil, overrideErr("rate_limit", "invalid JSON: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(compact.Bytes(), &doc); err != nil {
		return nil, overrideErr("rate_limit", "invalid JSON: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	p := newParser("rate_limit")
	p.names = map[string]int{}
	p.SetBudget(&doc)
	n := p.Deref(&doc)
	if n == nil {
		return nil, overrideErr("rate_limit", "required")
	}
	rl := p.rateLimit(yamlconf.Field{Name: "rate_limit", Path: "rate_limit", Key: n, Val: n})
	if errs := p.Errors(); len(errs) > 0 {
		return nil, rateLimitError(errs)
	}
	if rl == nil {
		return nil, overrideErr("rate_limit", "required")
	}
	return rl, nil
}

// rateLimitError turns the parser's problems into one error naming the
// first one's field (rate_limit.unit); the others follow with their own.
func rateLimitError(errs FileErrors) error {
	msgs := make([]string, 0, len(errs))
	for i, e := range errs {
		if i > 0 && e.Field != "" {
			msgs = append(msgs, e.Field+": "+e.Msg)
		} else {
			msgs = append(msgs, e.Msg)
		}
	}
	fieldName := errs[0].Field
	if fieldName == "" {
		fieldName = "rate_limit"
	}
	return &OverrideError{Field: fieldName, Msg: strings.Join(msgs, "; ")}
}

// MergeOverrides returns the effective domains: domains with overrides
// merged in. domains and its trees are not modified; the result shares
// the parts no override touches.
//
// For each override, the domain's tree is walked along the path, taking at
// each level the node with the same key and value as written (an exact
// value, a wildcard pattern, or no value):
//   - an override reaching an existing node replaces its limit (its name
//     and replaces carry over unless the override gives its own);
//   - a level with no such node gets a new one, placed beside its
//     siblings; matching prefers exact values, then wildcards in order,
//     then the any-value node, so a new exact value wins over the
//     wildcard beside it;
//   - a new node starts as a copy of the node that matched its value
//     before (for an exact value the first wildcard matching it, else the
//     any-value node; for a wildcard the any-value node), so requests for
//     that value that the override does not name keep the limits they had
//     (a copy of a share_threshold wildcard gets its own buckets);
//   - an override for a domain the files do not configure adds the domain.
//
// Overrides are applied so that the result does not depend on their
// order. The result compiles whenever domains does and every override
// passes Validate.
func MergeOverrides(domains []DomainConfig, overrides []Override) []DomainConfig {
	if len(overrides) == 0 {
		return domains
	}
	sorted := make([]*Override, len(overrides))
	for i := range overrides {
		sorted[i] = &overrides[i]
	}
	sort.SliceStable(sorted, func(i, j int) bool { return lessOverride(sorted[i], sorted[j]) })
	byDomain := map[string][]*Override{}
	for _, o := range sorted {
		if len(o.Descriptors) > 0 {
			byDomain[o.Domain] = append(byDomain[o.Domain], o)
		}
	}
	out := make([]DomainConfig, 0, len(domains)+len(byDomain))
	for _, d := range domains {
		if os, ok := byDomain[d.Domain]; ok {
			delete(byDomain, d.Domain)
			d.Descriptors = mergeLevel(d.Descriptors, os, 0)
		}
		out = append(out, d)
	}
	added := make([]string, 0, len(byDomain))
	for name := range byDomain {
		added = append(added, name)
	}
	sort.Strings(added)
	for _, name := range added {
		out = append(out, DomainConfig{Domain: name, File: "overrides", Descriptors: mergeLevel(nil, byDomain[name], 0)})
	}
	return out
}

func lessOverride(a, b *Override) bool {
	if a.Domain != b.Domain {
		return a.Domain < b.Domain
	}
	for i := 0; i < len(a.Descriptors) && i < len(b.Descriptors); i++ {
		x, y := a.Descriptors[i], b.Descriptors[i]
		if x.Key != y.Key {
			return x.Key < y.Key
		}
		if x.Value != y.Value {
			return x.Value < y.Value
		}
	}
	return len(a.Descriptors) < len(b.Descriptors)
}

// overrideGroup is the overrides passing through one node of a level.
type overrideGroup struct {
	key, value string
	here       *Override   // the override that ends at this node
	deeper     []*Override // those that continue below it
}

// mergeLevel merges overrides, whose paths all reach this level (depth),
// into one level of a tree. It never modifies level: it returns a new
// slice, and changed nodes are new values.
func mergeLevel(level []DescriptorConfig, overrides []*Override, depth int) []DescriptorConfig {
	var groups []*overrideGroup
	index := map[OverrideEntry]*overrideGroup{}
	for _, o := range overrides {
		e := o.Descriptors[depth]
		g := index[e]
		if g == nil {
			g = &overrideGroup{key: e.Key, value: e.Value}
			index[e] = g
			groups = append(groups, g)
		}
		if depth == len(o.Descriptors)-1 {
			g.here = o
		} else {
			g.deeper = append(g.deeper, o)
		}
	}
	out := append([]DescriptorConfig(nil), level...)
	find := func(key, value string) int {
		for i := range out {
			if out[i].Key == key && out[i].Value == value {
				return i
			}
		}
		return -1
	}
	apply := func(n *DescriptorConfig, g *overrideGroup) {
		if g.here != nil {
			n.RateLimit = overrideLimit(n.RateLimit, g.here.RateLimit)
		}
		if len(g.deeper) > 0 {
			n.Descriptors = mergeLevel(n.Descriptors, g.deeper, depth+1)
		}
	}
	// Existing nodes first, then new any-value nodes, new wildcards and new
	// exact values: each new node copies the node that matched its value
	// before, which by then holds its own overrides.
	var fresh []*overrideGroup
	for _, g := range groups {
		if i := find(g.key, g.value); i >= 0 {
			apply(&out[i], g)
		} else {
			fresh = append(fresh, g)
		}
	}
	kind := func(v string) int {
		switch {
		case v == "":
			return 0
		case strings.Contains(v, "*"):
			return 1
		}
		return 2
	}
	for pass := 0; pass < 3; pass++ {
		for _, g := range fresh {
			if kind(g.value) != pass {
				continue
			}
			n := DescriptorConfig{Key: g.key, Value: g.value}
			if from := fallback(out, g.key, g.value); from != nil {
				n = *from
				n.Value = g.value
				n.Line = 0
				if pass == 2 {
					n.ShareThreshold = false
				}
			}
			apply(&n, g)
			out = append(out, n)
		}
	}
	return out
}

// fallback is the node of level that a request value matches when level
// has no node with exactly this value: for an exact value the first
// wildcard matching it, else the any-value node; for a wildcard pattern
// the any-value node; for no value nothing.
func fallback(level []DescriptorConfig, key, value string) *DescriptorConfig {
	if value == "" {
		return nil
	}
	if !strings.Contains(value, "*") {
		for i := range level {
			d := &level[i]
			if d.Key == key && strings.Contains(d.Value, "*") && globMatch(d.Value, value) {
				return d
			}
		}
	}
	for i := range level {
		if level[i].Key == key && level[i].Value == "" {
			return &level[i]
		}
	}
	return nil
}

// overrideLimit is the limit an override puts on a node whose limit was
// old (nil for none): the override's, with old's name, replaces and stated
// charging mode kept unless the override gives its own (an override of a
// usage budget's rate stays a usage budget; a ban or unlimited override
// takes no charging mode).
func overrideLimit(old *RateLimit, o RateLimit) *RateLimit {
	r := o
	if old != nil {
		if r.Name == "" {
			r.Name = old.Name
		}
		if len(r.Replaces) == 0 {
			r.Replaces = old.Replaces
		}
		if !r.chargeStated() && old.chargeStated() && !r.Unlimited && r.RequestsPerUnit > 0 {
			r.Charge, r.ChargeSet, r.MaxDebt = old.Charge, old.ChargeSet, old.MaxDebt
		}
	}
	return &r
}

// ErrUnknownFormat is returned by MarshalDomains for a format other than
// "yaml" or "json".
var ErrUnknownFormat = errors.New("unknown format; use yaml or json")

type domainsDoc struct {
	Domains []domainDoc `json:"domains" yaml:"domains"`
}

type domainDoc struct {
	Domain      string          `json:"domain" yaml:"domain"`
	Descriptors []descriptorDoc `json:"descriptors,omitempty" yaml:"descriptors,omitempty"`
}

type descriptorDoc struct {
	Key            string          `json:"key" yaml:"key"`
	Value          string          `json:"value,omitempty" yaml:"value,omitempty"`
	RateLimit      *rateLimitDoc   `json:"rate_limit,omitempty" yaml:"rate_limit,omitempty"`
	ShadowMode     bool            `json:"shadow_mode,omitempty" yaml:"shadow_mode,omitempty"`
	ShareThreshold bool            `json:"share_threshold,omitempty" yaml:"share_threshold,omitempty"`
	DetailedMetric bool            `json:"detailed_metric,omitempty" yaml:"detailed_metric,omitempty"`
	ValueToMetric  bool            `json:"value_to_metric,omitempty" yaml:"value_to_metric,omitempty"`
	QuotaMode      bool            `json:"quota_mode,omitempty" yaml:"quota_mode,omitempty"`
	Metadata       map[string]any  `json:"metadata,omitempty" yaml:"metadata,omitempty"`
	Descriptors    []descriptorDoc `json:"descriptors,omitempty" yaml:"descriptors,omitempty"`
}

// rateLimitDoc is rateLimitJSON with YAML tags.
type rateLimitDoc struct {
	Unit            string         `json:"unit,omitempty" yaml:"unit,omitempty"`
	UnitMultiplier  uint32         `json:"unit_multiplier,omitempty" yaml:"unit_multiplier,omitempty"`
	RequestsPerUnit *uint32        `json:"requests_per_unit,omitempty" yaml:"requests_per_unit,omitempty"`
	Burst           uint32         `json:"burst,omitempty" yaml:"burst,omitempty"`
	Unlimited       bool           `json:"unlimited,omitempty" yaml:"unlimited,omitempty"`
	Name            string         `json:"name,omitempty" yaml:"name,omitempty"`
	Replaces        []replacesJSON `json:"replaces,omitempty" yaml:"replaces,omitempty"`
	Charge          string         `json:"charge,omitempty" yaml:"charge,omitempty"`
	MaxDebt         uint64         `json:"max_debt,omitempty" yaml:"max_debt,omitempty"`
}

func descriptorDocs(ds []DescriptorConfig) []descriptorDoc {
	if len(ds) == 0 {
		return nil
	}
	out := make([]descriptorDoc, len(ds))
	for i, d := range ds {
		out[i] = descriptorDoc{
			Key: d.Key, Value: d.Value,
			ShadowMode: d.ShadowMode, ShareThreshold: d.ShareThreshold,
			DetailedMetric: d.DetailedMetric, ValueToMetric: d.ValueToMetric,
			QuotaMode: d.QuotaMode, Metadata: d.Metadata,
			Descriptors: descriptorDocs(d.Descriptors),
		}
		if d.RateLimit != nil {
			rd := rateLimitDoc(d.RateLimit.doc())
			out[i].RateLimit = &rd
		}
	}
	return out
}

// MarshalDomains writes domains in the limit-file form, as config.yaml's
// inline `domains:` list: format "yaml", or "json" for the same document
// as JSON. The YAML reads back with DecodeDomains.
func MarshalDomains(domains []DomainConfig, format string) ([]byte, error) {
	doc := domainsDoc{Domains: make([]domainDoc, len(domains))}
	for i, d := range domains {
		doc.Domains[i] = domainDoc{Domain: d.Domain, Descriptors: descriptorDocs(d.Descriptors)}
	}
	switch format {
	case "yaml":
		var b bytes.Buffer
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	case "json":
		return json.MarshalIndent(doc, "", "  ")
	}
	return nil, ErrUnknownFormat
}
