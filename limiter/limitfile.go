package limiter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// FileError is one problem in a limit file (or config.yaml's inline
// domains), with where it is. Line 0 means the problem concerns the whole
// file (it could not be read).
type FileError struct {
	File string
	Line int
	Msg  string
}

func (e FileError) Error() string {
	if e.Line <= 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// FileErrors is every problem found in one load; `sluice check` prints them
// all.
type FileErrors []FileError

func (es FileErrors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// The fields of the limit-file format, per mapping.
var (
	domainFields     = []string{"domain", "descriptors"}
	descriptorFields = []string{"key", "value", "rate_limit", "shadow_mode", "share_threshold", "detailed_metric", "value_to_metric", "descriptors"}
	rateLimitFields  = []string{"unit", "unit_multiplier", "requests_per_unit", "burst", "unlimited", "name", "replaces"}
	replacesFields   = []string{"name"}
)

// unsupportedFields are fields of envoyproxy/ratelimit's format that Sluice
// does not implement. They are rejected by name wherever they appear, so a
// limit file never loads with part of its meaning silently dropped.
var unsupportedFields = map[string]string{
	"quota_mode": "quota mode (limits that only track usage for quota-aware routing)",
	"metadata":   "descriptor metadata (sent to the client in dynamic metadata)",
}

// ParseLimitFile parses one limit file in the envoyproxy/ratelimit format
// with Sluice's additions. name is used in errors. The error, if any, is a
// FileErrors listing every problem found, each with its line.
//
// Decoding is strict: unknown fields, duplicate fields, fields of the wrong
// type, and fields of envoyproxy/ratelimit's format that Sluice does not
// implement are errors. A file holds exactly one domain.
func ParseLimitFile(name string, data []byte) (DomainConfig, error) {
	p := newParser(name)
	d := p.file(data)
	if err := p.err(); err != nil {
		return DomainConfig{}, err
	}
	return d, nil
}

// DecodeDomains decodes config.yaml's inline `domains:` sequence node. file
// names config.yaml in errors; lines are those of the node. A nil or null
// node is no domains. The error, if any, is a FileErrors.
func DecodeDomains(file string, n *yaml.Node) ([]DomainConfig, error) {
	if n == nil {
		return nil, nil
	}
	p := newParser(file)
	p.budget = math.MaxInt
	n = p.deref(n)
	if n != nil {
		p.budget = budgetFor(n)
	}
	if n == nil || isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "domains: must be a list of domains (each with domain and descriptors), not %s", describe(n))
		return nil, p.err()
	}
	var out []DomainConfig
	where := map[string]string{}
	for _, item := range n.Content {
		d, ok := p.domain(item)
		if ok {
			if prev, dup := where[d.Domain]; dup {
				p.errorf(d.Line, "domain %q is already defined at %s", d.Domain, prev)
			} else {
				where[d.Domain] = fmt.Sprintf("%s:%d", d.File, d.Line)
			}
		}
		out = append(out, d)
	}
	if err := p.err(); err != nil {
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
		d, err := ParseLimitFile(f, data)
		if err != nil {
			var fe FileErrors
			if errors.As(err, &fe) {
				errs = append(errs, fe...)
			} else {
				errs = append(errs, FileError{File: f, Msg: err.Error()})
			}
			continue
		}
		if prev, dup := where[d.Domain]; dup {
			errs = append(errs, FileError{File: d.File, Line: d.Line,
				Msg: fmt.Sprintf("domain %q is already defined at %s", d.Domain, prev)})
			continue
		}
		where[d.Domain] = fmt.Sprintf("%s:%d", d.File, d.Line)
		out = append(out, d)
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

// parser walks yaml.Nodes, collecting errors rather than stopping at the
// first, so one run reports everything wrong with a file.
type parser struct {
	name     string
	errs     FileErrors
	seen     map[FileError]bool
	budget   int  // nodes left to visit; bounds alias expansion
	reported bool // the budget ran out, and that was reported

	// Per domain: limit names and the replaces entries that refer to them.
	names    map[string]int
	replaces []replaceRef
}

type replaceRef struct {
	name string
	line int
}

func newParser(name string) *parser {
	return &parser{name: name, seen: map[FileError]bool{}}
}

// budgetFor bounds the nodes a walk of n may visit: generous for any real
// file, yet small enough that aliases nested to expand exponentially (the
// "billion laughs") are refused quickly.
func budgetFor(n *yaml.Node) int {
	count := 0
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		count++
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return 64*count + 1<<12
}

func (p *parser) errorf(line int, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	if p.budget < 0 && p.reported {
		// Past the alias budget the walk sees nothing; what it would
		// report next is noise.
		return
	}
	e := FileError{File: p.name, Line: line, Msg: fmt.Sprintf(format, args...)}
	// A node reached through several aliases is checked each time; report
	// its problems once.
	if p.seen[e] {
		return
	}
	p.seen[e] = true
	p.errs = append(p.errs, e)
}

func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	return p.errs
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
var yamlAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)

// file parses a whole limit file: one YAML document holding one domain.
func (p *parser) file(data []byte) (d DomainConfig) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := p.decode(dec, &doc, data); err != nil {
		if err == io.EOF {
			p.errorf(1, "empty limit file: no domain (a limit file holds `domain:` and `descriptors:`)")
		}
		return d
	}
	p.budget = budgetFor(&doc)
	var extra yaml.Node
	if err := p.decode(dec, &extra, data); err == nil {
		if c := p.deref(&extra); c != nil && !(isNull(c) && c.Value == "") {
			p.errorf(extra.Line, "a limit file holds one YAML document (one domain); found another here: put each domain in its own file")
		}
	}
	n := p.deref(&doc)
	if n == nil || isNull(n) {
		p.errorf(1, "empty limit file: no domain (a limit file holds `domain:` and `descriptors:`)")
		return d
	}
	d, _ = p.domain(n)
	return d
}

// decode reads the next YAML document and turns a syntax error into a
// FileError with the line the YAML parser gives (or, when it gives none,
// the line of the offending byte or alias).
func (p *parser) decode(dec *yaml.Decoder, n *yaml.Node, data []byte) (err error) {
	defer func() {
		// The YAML library reports syntax errors as errors; a panic from it
		// would be a bug there, and must not take the service down on a
		// reload.
		if r := recover(); r != nil {
			p.errorf(1, "invalid YAML: %v", r)
			err = errors.New("invalid YAML")
		}
	}()
	err = dec.Decode(n)
	if err == nil || err == io.EOF {
		return err
	}
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errorf(line, "invalid YAML: %s", m[2])
		return err
	}
	line := 1
	if m := yamlAnchorRE.FindStringSubmatch(msg); m != nil {
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			line = 1 + bytes.Count(data[:i], []byte("\n"))
		}
	} else if i := badByte(data); i >= 0 {
		line = 1 + bytes.Count(data[:i], []byte("\n"))
	}
	p.errorf(line, "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
	return err
}

// badByte finds the first byte the YAML reader refuses: invalid UTF-8 or a
// control character.
func badByte(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		if (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || r == 0x7f {
			return i
		}
		i += size
	}
	return -1
}

// deref follows documents and aliases. It returns nil when the alias
// expansion budget is spent (reporting it once).
func (p *parser) deref(n *yaml.Node) *yaml.Node {
	for n != nil {
		p.budget--
		if p.budget < 0 {
			if !p.reported {
				p.errorf(n.Line, "the file expands to too many nodes through aliases")
				p.reported = true
			}
			return nil
		}
		switch {
		case n.Kind == yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case n.Kind == yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names a node's kind for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "empty (null)"
		case "!!bool":
			return "the boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!str":
			return strconv.Quote(n.Value)
		}
		return fmt.Sprintf("%s (tagged %s)", strconv.Quote(n.Value), n.Tag)
	}
	return "an unknown kind of node"
}

// field is one key: value pair of a mapping.
type field struct {
	name string
	key  *yaml.Node
	val  *yaml.Node
}

// fields lists a mapping's fields in order, with YAML merge keys (<<)
// expanded; a field given twice is reported, and only the first kept.
func (p *parser) fields(m *yaml.Node) []field {
	var out []field
	at := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		kd := p.deref(k)
		if kd == nil {
			continue
		}
		if kd.Kind == yaml.ScalarNode && kd.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if kd.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "field names must be plain words, not %s", describe(kd))
			continue
		}
		if first, dup := at[kd.Value]; dup {
			p.errorf(k.Line, "duplicate field %q (first given at line %d)", kd.Value, first)
			continue
		}
		at[kd.Value] = k.Line
		out = append(out, field{name: kd.Value, key: k, val: v})
	}
	for _, mv := range merges {
		srcs := []*yaml.Node{mv}
		if d := p.deref(mv); d != nil && d.Kind == yaml.SequenceNode {
			srcs = d.Content
		}
		for _, s := range srcs {
			sd := p.deref(s)
			if sd == nil {
				continue
			}
			if sd.Kind != yaml.MappingNode {
				p.errorf(s.Line, "a merge (<<) must name a mapping, not %s", describe(sd))
				continue
			}
			for _, f := range p.fields(sd) {
				if _, dup := at[f.name]; dup {
					continue
				}
				at[f.name] = f.key.Line
				out = append(out, f)
			}
		}
	}
	return out
}

// unknownField reports a field that does not belong in the mapping `where`
// (whose fields are known), naming a better place or the closest spelling.
func (p *parser) unknownField(f field, where string, known []string) {
	if what, ok := unsupportedFields[f.name]; ok {
		p.errorf(f.key.Line, "%s: Sluice does not support envoyproxy/ratelimit's %s; remove the field", f.name, what)
		return
	}
	switch {
	case where == "descriptor" && slices.Contains(rateLimitFields, f.name):
		p.errorf(f.key.Line, "unknown field %q in descriptor; it belongs inside rate_limit", f.name)
		return
	case where == "rate_limit" && slices.Contains(descriptorFields, f.name):
		p.errorf(f.key.Line, "unknown field %q in rate_limit; it belongs on the descriptor, beside rate_limit", f.name)
		return
	case where == "the top level" && slices.Contains(descriptorFields, f.name):
		p.errorf(f.key.Line, "unknown field %q at the top level; it belongs on a descriptor, inside descriptors", f.name)
		return
	}
	if s := Closest(f.name, known); s != "" {
		p.errorf(f.key.Line, "unknown field %q in %s; did you mean %q?", f.name, where, s)
		return
	}
	p.errorf(f.key.Line, "unknown field %q in %s; known fields: %s", f.name, where, strings.Join(known, ", "))
}

// Closest returns the known name nearest to s in edit distance (the first
// of equals, in the order given), if it is near enough to be a likely
// misspelling, else "". Config decoding uses it to suggest field names.
func Closest(s string, known []string) string {
	best, bestD := "", math.MaxInt
	for _, k := range known {
		if d := editDistance(strings.ToLower(s), k); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= 2 || bestD*3 <= len(best) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// domain parses one domain mapping (a limit file's top level, or an item of
// config.yaml's domains). ok reports whether it has a usable domain name.
func (p *parser) domain(n *yaml.Node) (d DomainConfig, ok bool) {
	d = DomainConfig{File: p.name}
	p.names = map[string]int{}
	p.replaces = nil
	line := 0
	if n != nil {
		line = n.Line
	}
	n = p.deref(n)
	if n == nil {
		return d, false
	}
	d.Line = n.Line
	if n.Kind != yaml.MappingNode {
		p.errorf(line, "a domain must be a mapping with domain and descriptors, not %s", describe(n))
		return d, false
	}
	seen := false
	for _, f := range p.fields(n) {
		switch f.name {
		case "domain":
			seen = true
			d.Line = f.key.Line
			if s, isStr := p.str(f, false); isStr {
				if s == "" {
					p.errorf(f.key.Line, "domain: must not be empty")
				} else {
					d.Domain, ok = s, true
				}
			}
		case "descriptors":
			d.Descriptors = p.descriptors(f)
		default:
			p.unknownField(f, "the top level", domainFields)
		}
	}
	if !seen {
		p.errorf(n.Line, "domain: missing; every limit file or domains entry names its domain (domain: edge)")
	}
	for _, r := range p.replaces {
		if _, found := p.names[r.name]; !found {
			if d.Domain != "" {
				p.errorf(r.line, "replaces: no limit in domain %q is named %q", d.Domain, r.name)
			} else {
				p.errorf(r.line, "replaces: no limit in this domain is named %q", r.name)
			}
		}
	}
	return d, ok
}

// descriptors parses a list of descriptors (one level of the tree) and
// rejects a key/value pair given twice at the level.
func (p *parser) descriptors(f field) []DescriptorConfig {
	n := p.deref(f.val)
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(f.val.Line, "descriptors: must be a list of descriptors (each starting with - key:), not %s", describe(n))
		return nil
	}
	type kv struct{ k, v string }
	first := map[kv]int{}
	out := make([]DescriptorConfig, 0, len(n.Content))
	for _, item := range n.Content {
		d, ok := p.descriptor(item)
		if ok {
			id := kv{d.Key, d.Value}
			if at, dup := first[id]; dup {
				if d.Value == "" {
					p.errorf(d.Line, "duplicate descriptor: key %q with no value is already given at line %d at this level", d.Key, at)
				} else {
					p.errorf(d.Line, "duplicate descriptor: key %q value %q is already given at line %d at this level", d.Key, d.Value, at)
				}
			} else {
				first[id] = d.Line
			}
		}
		out = append(out, d)
	}
	return out
}

// descriptor parses one descriptor. ok reports whether its key and value are
// usable (so duplicate checks can rely on them).
func (p *parser) descriptor(item *yaml.Node) (d DescriptorConfig, ok bool) {
	n := p.deref(item)
	if n == nil {
		return d, false
	}
	d.Line = n.Line
	if n.Kind != yaml.MappingNode {
		p.errorf(item.Line, "a descriptor must be a mapping with key (and value, rate_limit, descriptors), not %s", describe(n))
		return d, false
	}
	haveKey, keyOK, valueOK := false, false, true
	shareLine := 0
	for _, f := range p.fields(n) {
		switch f.name {
		case "key":
			haveKey = true
			if s, isStr := p.str(f, false); isStr {
				if s == "" {
					p.errorf(f.val.Line, "key: must not be empty")
				} else {
					d.Key, keyOK = s, true
				}
			}
		case "value":
			// envoyproxy/ratelimit reads a value as the text written, and
			// real files carry unquoted numbers (status codes, versions), so
			// numbers and dates are taken as written. true/false and null are
			// refused: whether they mean text differs between YAML versions.
			d.Value, valueOK = p.str(f, true)
		case "rate_limit":
			d.RateLimit = p.rateLimit(f)
		case "shadow_mode":
			d.ShadowMode = p.bool(f)
		case "share_threshold":
			d.ShareThreshold = p.bool(f)
			shareLine = f.key.Line
		case "detailed_metric":
			d.DetailedMetric = p.bool(f)
		case "value_to_metric":
			d.ValueToMetric = p.bool(f)
		case "descriptors":
			d.Descriptors = p.descriptors(f)
		default:
			p.unknownField(f, "descriptor", descriptorFields)
		}
	}
	if !haveKey {
		p.errorf(n.Line, "key: missing; every descriptor needs a key")
	}
	if d.ShareThreshold && valueOK {
		switch {
		case d.Value == "":
			p.errorf(shareLine, "share_threshold: only applies to a wildcard value (one containing '*'); this descriptor has no value")
		case !strings.Contains(d.Value, "*"):
			p.errorf(shareLine, "share_threshold: only applies to a wildcard value (one containing '*'); value %q is not a wildcard", d.Value)
		}
	}
	return d, keyOK && valueOK
}

// rateLimit parses a rate_limit mapping; nil when it is absent or unusable.
func (p *parser) rateLimit(f field) *RateLimit {
	n := p.deref(f.val)
	if n == nil {
		return nil
	}
	hint := "give unit and requests_per_unit (rate_limit: {unit: second, requests_per_unit: 10}), or unlimited: true"
	if isNull(n) {
		p.errorf(f.key.Line, "rate_limit: is empty; %s", hint)
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(f.val.Line, "rate_limit: must be a mapping, not %s; %s", describe(n), hint)
		return nil
	}
	before := len(p.errs)
	rl := &RateLimit{}
	unknown := false
	var unitF, rpuF, burstF, multF *field
	var selfRefs []replaceRef
	for _, rf := range p.fields(n) {
		rf := rf
		switch rf.name {
		case "unit":
			unitF = &rf
			if s, isStr := p.str(rf, false); isStr {
				u, ok := ParseUnit(s)
				if !ok {
					p.errorf(rf.val.Line, "unit: unknown unit %q; valid units are %s", s, strings.Join(UnitNames(), ", "))
				}
				rl.Unit = u
			}
		case "unit_multiplier":
			multF = &rf
			if v, ok := p.uint32(rf); ok {
				if v == 0 {
					p.errorf(rf.val.Line, "unit_multiplier: must be at least 1 (leave it out for 1)")
				}
				rl.UnitMultiplier = v
			}
		case "requests_per_unit":
			rpuF = &rf
			if v, ok := p.uint32(rf); ok {
				rl.RequestsPerUnit = v
			}
		case "burst":
			burstF = &rf
			if v, ok := p.uint32(rf); ok {
				if v == 0 {
					p.errorf(rf.val.Line, "burst: must be at least 1 (leave it out to use requests_per_unit)")
				}
				rl.Burst = v
			}
		case "unlimited":
			rl.Unlimited = p.bool(rf)
		case "name":
			if s, isStr := p.str(rf, false); isStr {
				if s == "" {
					p.errorf(rf.val.Line, "name: must not be empty (leave it out for no name)")
				} else {
					rl.Name = s
					if at, dup := p.names[s]; dup {
						p.errorf(rf.val.Line, "name: limit name %q is already used at line %d; names must be unique within a domain", s, at)
					} else {
						p.names[s] = rf.val.Line
					}
				}
			}
		case "replaces":
			selfRefs = p.replacesList(rf, rl)
		default:
			unknown = true
			p.unknownField(rf, "rate_limit", rateLimitFields)
		}
	}
	for _, r := range selfRefs {
		if rl.Name != "" && r.name == rl.Name {
			p.errorf(r.line, "replaces: a limit cannot replace itself (%q is this limit's name)", r.name)
			continue
		}
		p.replaces = append(p.replaces, r)
	}
	if rl.Unlimited {
		for _, g := range []*field{unitF, rpuF, burstF, multF} {
			if g != nil {
				p.errorf(g.key.Line, "%s: not allowed with unlimited: true (an unlimited limit has no rate)", g.name)
			}
		}
	} else if !unknown {
		// With an unknown (likely misspelled) field, a missing one is
		// probably that field: report the spelling only.
		switch {
		case unitF == nil:
			p.errorf(f.key.Line, "rate_limit: needs a unit, or unlimited: true; %s", hint)
		case rpuF == nil:
			p.errorf(f.key.Line, "rate_limit: requests_per_unit is missing (write requests_per_unit: 0 for a ban)")
		case burstF != nil && rl.RequestsPerUnit == 0:
			p.errorf(burstF.key.Line, "burst: has no effect on a ban (requests_per_unit: 0); remove it")
		}
	}
	if len(p.errs) == before && !rl.Unlimited && rl.RequestsPerUnit > 0 {
		if _, err := rl.Rate(); err != nil {
			p.errorf(f.key.Line, "rate_limit: %v", err)
		}
	}
	return rl
}

// replacesList parses replaces: [{name: x}, ...] into rl.Replaces and
// returns the references for checking once the domain's names are known.
func (p *parser) replacesList(f field, rl *RateLimit) []replaceRef {
	n := p.deref(f.val)
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(f.val.Line, "replaces: must be a list of {name: ...} entries, not %s", describe(n))
		return nil
	}
	var refs []replaceRef
	for _, item := range n.Content {
		e := p.deref(item)
		if e == nil {
			continue
		}
		if e.Kind != yaml.MappingNode {
			p.errorf(item.Line, "replaces: each entry must be a mapping {name: ...}, not %s", describe(e))
			continue
		}
		named := false
		for _, ef := range p.fields(e) {
			if ef.name != "name" {
				p.unknownField(ef, "replaces entry", replacesFields)
				continue
			}
			named = true
			s, isStr := p.str(ef, false)
			switch {
			case !isStr:
			case s == "":
				p.errorf(ef.val.Line, "replaces: name must not be empty")
			case slices.Contains(rl.Replaces, s):
				p.errorf(ef.val.Line, "replaces: %q is listed twice", s)
			default:
				rl.Replaces = append(rl.Replaces, s)
				refs = append(refs, replaceRef{name: s, line: ef.val.Line})
			}
		}
		if !named {
			p.errorf(e.Line, "replaces: entry has no name; each entry names the limit it replaces ({name: ...})")
		}
	}
	return refs
}

// str reads a text field. Only values given as text are accepted, except
// that lenient allows numbers and dates (taken as written).
func (p *parser) str(f field, lenient bool) (string, bool) {
	n := p.deref(f.val)
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(f.val.Line, "%s: must be a string, not %s", f.name, describe(n))
		return "", false
	}
	switch n.Tag {
	case "!!str":
		return n.Value, true
	case "!!int", "!!float", "!!timestamp":
		if lenient {
			return n.Value, true
		}
	}
	p.errorf(f.val.Line, "%s: must be a string, not %s; quote it (%s: \"%s\")", f.name, describe(n), f.name, n.Value)
	return "", false
}

// bool reads a true/false field.
func (p *parser) bool(f field) bool {
	n := p.deref(f.val)
	if n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		return strings.EqualFold(n.Value, "true")
	}
	p.errorf(f.val.Line, "%s: must be true or false, not %s", f.name, describe(n))
	return false
}

var decimalRE = regexp.MustCompile(`^[0-9]+$`)

// uint32 reads a whole number from 0 to 4294967295.
func (p *parser) uint32(f field) (uint32, bool) {
	n := p.deref(f.val)
	if n == nil {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && !(n.Tag == "!!float" && decimalRE.MatchString(n.Value))) {
		p.errorf(f.val.Line, "%s: must be a whole number, not %s", f.name, describe(n))
		return 0, false
	}
	s := n.Value
	var v uint64
	var err error
	if decimalRE.MatchString(s) {
		// Plain digits are decimal even with a leading zero.
		v, err = strconv.ParseUint(s, 10, 64)
	} else {
		var iv int64
		iv, err = strconv.ParseInt(s, 0, 64)
		if err == nil && iv < 0 {
			p.errorf(f.val.Line, "%s: must not be negative, not %s", f.name, s)
			return 0, false
		}
		v = uint64(iv)
	}
	if err != nil && strings.HasPrefix(s, "-") {
		p.errorf(f.val.Line, "%s: must not be negative, not %s", f.name, s)
		return 0, false
	}
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		p.errorf(f.val.Line, "%s: must be a whole number, not %s", f.name, describe(n))
		return 0, false
	}
	if err != nil || v > math.MaxUint32 {
		p.errorf(f.val.Line, "%s: %s is too large; the most is %d", f.name, s, uint32(math.MaxUint32))
		return 0, false
	}
	return uint32(v), true
}
