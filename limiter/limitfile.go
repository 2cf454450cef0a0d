package limiter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter/yamlconf"
)

// FileError is one problem in a limit file (or config.yaml's inline
// domains), with where it is: "file:line: path.to.field: problem", the
// path as the file spells it (descriptors[1].rate_limit.unit). Line 0
// means the problem concerns the whole file (it could not be read).
type FileError = yamlconf.Error

// FileErrors is every problem found in one load, one per line; `sluice
// check` prints them all.
type FileErrors = yamlconf.Errors

// The fields of the limit-file format, per mapping.
var (
	domainFields     = []string{"domain", "descriptors", "name"}
	descriptorFields = []string{"key", "value", "rate_limit", "shadow_mode", "quota_mode", "share_threshold", "detailed_metric", "value_to_metric", "metadata", "descriptors"}
	rateLimitFields  = []string{"unit", "unit_multiplier", "requests_per_unit", "burst", "unlimited", "name", "replaces", "charge", "max_debt"}
	replacesFields   = []string{"name"}
)

// ParseLimitFile parses a limit file that holds one domain, in the
// envoyproxy/ratelimit format with Sluice's additions. name is used in
// errors. The error, if any, is a FileErrors listing every problem found,
// each with its line. A file of several domains (YAML documents) is an
// error here; ParseLimitDocuments reads those.
//
// Decoding is strict: unknown fields, duplicate fields and fields of the
// wrong type are errors.
func ParseLimitFile(name string, data []byte) (DomainConfig, error) {
	p := newParser(name)
	ds := p.file(data)
	if len(ds) > 1 {
		p.Errorf(ds[1].Line, "", "a second domain (YAML document) in a file read as one domain")
	}
	if err := p.Err(); err != nil {
		return DomainConfig{}, err
	}
	return ds[0], nil
}

// ParseLimitDocuments parses a limit file of one or more YAML documents
// (separated by ---), one domain each, as Envoy Gateway writes them. Empty
// documents are skipped; a domain given twice in the file is an error. The
// error, if any, is a FileErrors naming each problem's line in the file.
func ParseLimitDocuments(name string, data []byte) ([]DomainConfig, error) {
	p := newParser(name)
	ds := p.file(data)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return ds, nil
}

// DecodeDomains decodes config.yaml's inline `domains:` sequence node. file
// names config.yaml in errors; lines are those of the node, and field
// paths start at limits.domains. A nil or null node is no domains. The
// error, if any, is a FileErrors.
func DecodeDomains(file string, n *yaml.Node) ([]DomainConfig, error) {
	const path = "limits.domains"
	if n == nil {
		return nil, nil
	}
	p := newParser(file)
	p.SetBudget(n)
	n = p.Deref(n)
	if n == nil || yamlconf.IsNull(n) {
		return nil, p.Err()
	}
	if n.Kind != yaml.SequenceNode {
		p.Errorf(n.Line, path, "must be a list of domains (each with domain and descriptors), not %s", yamlconf.Describe(n))
		return nil, p.Err()
	}
	var out []DomainConfig
	where := map[string]string{}
	for i, item := range n.Content {
		d, ok := p.domain(item, yamlconf.Index(path, i))
		if ok {
			if prev, dup := where[d.Domain]; dup {
				p.Errorf(d.Line, yamlconf.Join(yamlconf.Index(path, i), "domain"), "domain %q is already defined at %s", d.Domain, prev)
			} else {
				where[d.Domain] = fmt.Sprintf("%s:%d", d.File, d.Line)
			}
		}
		out = append(out, d)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// LoadLimits reads a limit file, or every *.yaml / *.yml file of a directory
// (sorted by name, not recursive; names starting with '.' are skipped, and
// symbolic links to files are followed, as in a Kubernetes ConfigMap
// mount), and parses each. Problems in all files are collected, as are
// domains defined in more than one file; the error, if any, is a
// FileErrors. An empty directory is no domains.
func LoadLimits(path string) ([]DomainConfig, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, FileErrors{{File: path, Msg: fmt.Sprintf("read limits: %v", unwrapPath(err))}}
	}
	files := []string{path}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, FileErrors{{File: path, Msg: fmt.Sprintf("read limits directory: %v", unwrapPath(err))}}
		}
		files = files[:0]
		for _, e := range entries {
			n := e.Name()
			if strings.HasPrefix(n, ".") {
				continue
			}
			if ext := filepath.Ext(n); ext != ".yaml" && ext != ".yml" {
				continue
			}
			full := filepath.Join(path, n)
			if fi, err := os.Stat(full); err == nil && fi.IsDir() {
				continue
			}
			files = append(files, full)
		}
		sort.Strings(files)
	}
	var (
		out  []DomainConfig
		errs FileErrors
	)
	where := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, FileError{File: f, Msg: fmt.Sprintf("read limit file: %v", unwrapPath(err))})
			continue
		}
		ds, err := ParseLimitDocuments(f, data)
		if err != nil {
			var fe FileErrors
			if errors.As(err, &fe) {
				errs = append(errs, fe...)
			} else {
				errs = append(errs, FileError{File: f, Msg: err.Error()})
			}
			continue
		}
		for _, d := range ds {
			if prev, dup := where[d.Domain]; dup {
				errs = append(errs, FileError{File: d.File, Line: d.Line,
					Msg: fmt.Sprintf("domain %q is already defined at %s", d.Domain, prev)})
				continue
			}
			where[d.Domain] = fmt.Sprintf("%s:%d", d.File, d.Line)
			out = append(out, d)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parser walks a limit file's nodes with a yamlconf.Walker, collecting
// errors rather than stopping at the first, so one run reports everything
// wrong with a file.
type parser struct {
	*yamlconf.Walker

	// Per domain: limit names and the replaces entries that refer to them.
	names    map[string]int
	replaces []replaceRef
}

type replaceRef struct {
	name string
	path string
	line int
}

func newParser(name string) *parser {
	return &parser{Walker: yamlconf.NewWalker(name)}
}

// file parses a whole limit file: YAML documents holding one domain each.
// Without errors, it returns at least one domain.
func (p *parser) file(data []byte) []DomainConfig {
	docs := p.ParseAll(data)
	if len(docs) == 0 {
		if p.Count() == 0 {
			p.Errorf(1, "", "empty limit file: no domain (a limit file holds `domain:` and `descriptors:`)")
		}
		return nil
	}
	var out []DomainConfig
	where := map[string]int{}
	for _, n := range docs {
		if yamlconf.IsNull(n) {
			p.Errorf(n.Line, "", "empty YAML document: no domain (each document holds `domain:` and `descriptors:`)")
			continue
		}
		d, ok := p.domain(n, "")
		if ok {
			if at, dup := where[d.Domain]; dup {
				p.Errorf(d.Line, "domain", "domain %q is already defined at line %d of this file", d.Domain, at)
			} else {
				where[d.Domain] = d.Line
			}
		}
		out = append(out, d)
	}
	return out
}

// unknownField reports a field that does not belong in the mapping `where`
// (whose fields are known), naming a better place or the closest spelling.
func (p *parser) unknownField(f yamlconf.Field, where string, known []string) {
	switch {
	case where == "descriptor" && slices.Contains(rateLimitFields, f.Name):
		p.Errorf(f.Key.Line, f.Path, "unknown field in a descriptor; it belongs inside rate_limit")
		return
	case where == "rate_limit" && slices.Contains(descriptorFields, f.Name):
		p.Errorf(f.Key.Line, f.Path, "unknown field in rate_limit; it belongs on the descriptor, beside rate_limit")
		return
	case where == "domain" && slices.Contains(descriptorFields, f.Name):
		p.Errorf(f.Key.Line, f.Path, "unknown field at the top of a domain; it belongs on a descriptor, inside descriptors")
		return
	}
	p.Unknown(f, known)
}

// domain parses one domain mapping (a limit file's top level, or an item of
// config.yaml's domains) whose path is path. ok reports whether it has a
// usable domain name.
func (p *parser) domain(n *yaml.Node, path string) (d DomainConfig, ok bool) {
	d = DomainConfig{File: p.File}
	p.names = map[string]int{}
	p.replaces = nil
	line := 0
	if n != nil {
		line = n.Line
	}
	n = p.Deref(n)
	if n == nil {
		return d, false
	}
	d.Line = n.Line
	if n.Kind != yaml.MappingNode {
		p.Errorf(line, path, "a domain must be a mapping with domain and descriptors, not %s", yamlconf.Describe(n))
		return d, false
	}
	seen := false
	for _, f := range p.Fields(n, path) {
		switch f.Name {
		case "domain":
			seen = true
			d.Line = f.Key.Line
			if s, isStr := p.String(f, false); isStr {
				if s == "" {
					p.Errorf(f.Key.Line, f.Path, "must not be empty")
				} else {
					d.Domain, ok = s, true
				}
			}
		case "descriptors":
			d.Descriptors = p.descriptors(f)
		case "name":
			// Envoy Gateway writes the RateLimitConfig resource's name
			// beside the domain; envoyproxy/ratelimit ignores it, and so
			// does Sluice, once it is known to be text.
			p.String(f, true)
		default:
			p.unknownField(f, "domain", domainFields)
		}
	}
	if !seen {
		p.Errorf(n.Line, yamlconf.Join(path, "domain"), "missing; every limit file or domains entry names its domain (domain: edge)")
	}
	for _, r := range p.replaces {
		if _, found := p.names[r.name]; !found {
			if d.Domain != "" {
				p.Errorf(r.line, r.path, "no limit in domain %q is named %q", d.Domain, r.name)
			} else {
				p.Errorf(r.line, r.path, "no limit in this domain is named %q", r.name)
			}
		}
	}
	return d, ok
}

// descriptors parses a list of descriptors (one level of the tree) and
// rejects a key/value pair given twice at the level.
func (p *parser) descriptors(f yamlconf.Field) []DescriptorConfig {
	n := p.Deref(f.Val)
	if n == nil || yamlconf.IsNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.Errorf(f.Val.Line, f.Path, "must be a list of descriptors (each starting with - key:), not %s", yamlconf.Describe(n))
		return nil
	}
	type kv struct{ k, v string }
	first := map[kv]int{}
	out := make([]DescriptorConfig, 0, len(n.Content))
	for i, item := range n.Content {
		path := yamlconf.Index(f.Path, i)
		d, ok := p.descriptor(item, path)
		if ok {
			id := kv{d.Key, d.Value}
			if at, dup := first[id]; dup {
				if d.Value == "" {
					p.Errorf(d.Line, path, "duplicate descriptor: key %q with no value is already given at line %d at this level", d.Key, at)
				} else {
					p.Errorf(d.Line, path, "duplicate descriptor: key %q value %q is already given at line %d at this level", d.Key, d.Value, at)
				}
			} else {
				first[id] = d.Line
			}
		}
		out = append(out, d)
	}
	return out
}

// descriptor parses one descriptor, whose path is path. ok reports whether
// its key and value are usable (so duplicate checks can rely on them).
func (p *parser) descriptor(item *yaml.Node, path string) (d DescriptorConfig, ok bool) {
	n := p.Deref(item)
	if n == nil {
		return d, false
	}
	d.Line = n.Line
	if n.Kind != yaml.MappingNode {
		p.Errorf(item.Line, path, "a descriptor must be a mapping with key (and value, rate_limit, descriptors), not %s", yamlconf.Describe(n))
		return d, false
	}
	haveKey, keyOK, valueOK := false, false, true
	var share, quota yamlconf.Field
	for _, f := range p.Fields(n, path) {
		switch f.Name {
		case "key":
			haveKey = true
			if s, isStr := p.String(f, false); isStr {
				if s == "" {
					p.Errorf(f.Val.Line, f.Path, "must not be empty")
				} else {
					d.Key, keyOK = s, true
				}
			}
		case "value":
			// envoyproxy/ratelimit reads a value as the text written, and
			// real files carry unquoted numbers (status codes, versions), so
			// numbers and dates are taken as written. true/false and null are
			// refused: whether they mean text differs between YAML versions.
			d.Value, valueOK = p.String(f, true)
		case "rate_limit":
			d.RateLimit = p.rateLimit(f)
		case "shadow_mode":
			d.ShadowMode = p.Bool(f)
		case "quota_mode":
			d.QuotaMode = p.Bool(f)
			quota = f
		case "metadata":
			d.Metadata = p.metadata(f)
		case "share_threshold":
			d.ShareThreshold = p.Bool(f)
			share = f
		case "detailed_metric":
			d.DetailedMetric = p.Bool(f)
		case "value_to_metric":
			d.ValueToMetric = p.Bool(f)
		case "descriptors":
			d.Descriptors = p.descriptors(f)
		default:
			p.unknownField(f, "descriptor", descriptorFields)
		}
	}
	if !haveKey {
		p.Errorf(n.Line, yamlconf.Join(path, "key"), "missing; every descriptor needs a key")
	}
	if d.ShareThreshold && valueOK {
		switch {
		case d.Value == "":
			p.Errorf(share.Key.Line, share.Path, "only applies to a wildcard value (one containing '*'); this descriptor has no value")
		case !strings.Contains(d.Value, "*"):
			p.Errorf(share.Key.Line, share.Path, "only applies to a wildcard value (one containing '*'); value %q is not a wildcard", d.Value)
		}
	}
	if d.QuotaMode && d.RateLimit != nil && d.RateLimit.Charge == ChargeUsage {
		p.Errorf(quota.Key.Line, quota.Path, "not allowed with rate_limit.charge: usage (a quota-mode limit is charged only when it passes)")
	}
	return d, keyOK && valueOK
}

// rateLimit parses a rate_limit mapping; nil when it is absent or unusable.
func (p *parser) rateLimit(f yamlconf.Field) *RateLimit {
	n := p.Deref(f.Val)
	if n == nil {
		return nil
	}
	hint := "give unit and requests_per_unit (rate_limit: {unit: second, requests_per_unit: 10}), or unlimited: true"
	if yamlconf.IsNull(n) {
		// rate_limit: null is no limit, as in envoyproxy/ratelimit; Envoy
		// Gateway writes it on every inner node.
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.Errorf(f.Val.Line, f.Path, "must be a mapping, not %s; %s", yamlconf.Describe(n), hint)
		return nil
	}
	before := p.Count()
	rl := &RateLimit{}
	unknown := false
	var unitF, rpuF, burstF, multF, chargeF, maxDebtF *yamlconf.Field
	var selfRefs []replaceRef
	for _, rf := range p.Fields(n, f.Path) {
		rf := rf
		switch rf.Name {
		case "unit":
			unitF = &rf
			if s, isStr := p.String(rf, false); isStr {
				u, ok := ParseUnit(s)
				if !ok {
					p.Errorf(rf.Val.Line, rf.Path, "unknown unit %q; valid units are %s", s, strings.Join(UnitNames(), ", "))
				}
				rl.Unit = u
			}
		case "unit_multiplier":
			multF = &rf
			if v, ok := p.Uint32(rf); ok {
				if v == 0 {
					p.Errorf(rf.Val.Line, rf.Path, "must be at least 1 (leave it out for 1)")
				}
				rl.UnitMultiplier = v
			}
		case "requests_per_unit":
			rpuF = &rf
			if v, ok := p.Uint32(rf); ok {
				rl.RequestsPerUnit = v
			}
		case "burst":
			burstF = &rf
			if v, ok := p.Uint32(rf); ok {
				if v == 0 {
					p.Errorf(rf.Val.Line, rf.Path, "must be at least 1 (leave it out to use requests_per_unit)")
				}
				rl.Burst = v
			}
		case "unlimited":
			rl.Unlimited = p.Bool(rf)
		case "name":
			if s, isStr := p.String(rf, false); isStr {
				// An empty name is no name (Envoy Gateway writes name: "").
				if s != "" {
					rl.Name = s
					if at, dup := p.names[s]; dup {
						p.Errorf(rf.Val.Line, rf.Path, "limit name %q is already used at line %d; names must be unique within a domain", s, at)
					} else {
						p.names[s] = rf.Val.Line
					}
				}
			}
		case "replaces":
			selfRefs = p.replacesList(rf, rl)
		case "charge":
			chargeF = &rf
			if s, isStr := p.String(rf, false); isStr {
				c, ok := ParseCharge(s)
				if !ok {
					p.Errorf(rf.Val.Line, rf.Path, "unknown charging mode %q; valid modes are admission, usage", s)
				}
				rl.Charge, rl.ChargeSet = c, ok
			}
		case "max_debt":
			maxDebtF = &rf
			if v, ok := p.Uint32(rf); ok {
				if v == 0 {
					p.Errorf(rf.Val.Line, rf.Path, "must be at least 1 (leave it out for %d times the burst)", DefaultDebtFactor)
				}
				rl.MaxDebt = uint64(v)
			}
		default:
			unknown = true
			p.unknownField(rf, "rate_limit", rateLimitFields)
		}
	}
	for _, r := range selfRefs {
		if rl.Name != "" && r.name == rl.Name {
			p.Errorf(r.line, r.path, "a limit cannot replace itself (%q is this limit's name)", r.name)
			continue
		}
		p.replaces = append(p.replaces, r)
	}
	if rl.Unlimited {
		for _, g := range []*yamlconf.Field{unitF, rpuF, burstF, multF, chargeF, maxDebtF} {
			if g != nil {
				p.Errorf(g.Key.Line, g.Path, "not allowed with unlimited: true (an unlimited limit has no rate)")
			}
		}
	} else if !unknown {
		// With an unknown (likely misspelled) field, a missing one is
		// probably that field: report the spelling only.
		switch {
		case unitF == nil:
			p.Errorf(f.Key.Line, f.Path, "needs a unit, or unlimited: true; %s", hint)
		case rpuF == nil:
			p.Errorf(f.Key.Line, yamlconf.Join(f.Path, "requests_per_unit"), "missing (write requests_per_unit: 0 for a ban)")
		case burstF != nil && rl.RequestsPerUnit == 0:
			p.Errorf(burstF.Key.Line, burstF.Path, "has no effect on a ban (requests_per_unit: 0); remove it")
		case rl.Charge == ChargeUsage && rl.RequestsPerUnit == 0:
			p.Errorf(chargeF.Val.Line, chargeF.Path, "usage does not apply to a ban (requests_per_unit: 0), which has no bucket to charge")
		case maxDebtF != nil && rl.Charge != ChargeUsage && rl.MaxDebt != 0:
			p.Errorf(maxDebtF.Key.Line, maxDebtF.Path, "applies only to charge: usage")
		}
	}
	if p.Count() == before && !rl.Unlimited && rl.RequestsPerUnit > 0 {
		if _, err := rl.Rate(); err != nil {
			p.Errorf(f.Key.Line, f.Path, "%v", err)
		}
	}
	return rl
}

// replacesList parses replaces: [{name: x}, ...] into rl.Replaces and
// returns the references for checking once the domain's names are known.
func (p *parser) replacesList(f yamlconf.Field, rl *RateLimit) []replaceRef {
	n := p.Deref(f.Val)
	if n == nil || yamlconf.IsNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.Errorf(f.Val.Line, f.Path, "must be a list of {name: ...} entries, not %s", yamlconf.Describe(n))
		return nil
	}
	var refs []replaceRef
	for i, item := range n.Content {
		path := yamlconf.Index(f.Path, i)
		e := p.Deref(item)
		if e == nil {
			continue
		}
		if e.Kind != yaml.MappingNode {
			p.Errorf(item.Line, path, "each entry must be a mapping {name: ...}, not %s", yamlconf.Describe(e))
			continue
		}
		named := false
		for _, ef := range p.Fields(e, path) {
			if ef.Name != "name" {
				p.unknownField(ef, "replaces entry", replacesFields)
				continue
			}
			named = true
			s, isStr := p.String(ef, false)
			switch {
			case !isStr:
			case s == "":
				p.Errorf(ef.Val.Line, ef.Path, "must not be empty")
			case slices.Contains(rl.Replaces, s):
				p.Errorf(ef.Val.Line, ef.Path, "%q is listed twice", s)
			default:
				rl.Replaces = append(rl.Replaces, s)
				refs = append(refs, replaceRef{name: s, path: ef.Path, line: ef.Val.Line})
			}
		}
		if !named {
			p.Errorf(e.Line, path, "entry has no name; each entry names the limit it replaces ({name: ...})")
		}
	}
	return refs
}
