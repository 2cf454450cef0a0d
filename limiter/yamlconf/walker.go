package yamlconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Walker walks the nodes of one file, collecting problems. Every node it
// visits through Deref counts against a budget set from the document's
// size, so aliases nested to expand exponentially (the "billion laughs")
// are refused quickly instead of walked.
type Walker struct {
	File string

	errs     Errors
	seen     map[Error]bool
	budget   int  // nodes left to visit
	reported bool // the budget ran out, and that was reported
}

// NewWalker returns a walker reporting problems in file. Its budget is
// unbounded until Parse or SetBudget sets one.
func NewWalker(file string) *Walker {
	return &Walker{File: file, seen: map[Error]bool{}, budget: math.MaxInt}
}

// Errorf records a problem at line with field (its path; "" for none).
// The same problem reported twice, as when a node is reached through
// several aliases, is kept once.
func (w *Walker) Errorf(line int, field, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	if w.budget < 0 && w.reported {
		// Past the alias budget the walk sees nothing; what it would
		// report next is noise.
		return
	}
	e := Error{File: w.File, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
	if w.seen[e] {
		return
	}
	w.seen[e] = true
	w.errs = append(w.errs, e)
}

// Count is the number of problems recorded so far.
func (w *Walker) Count() int { return len(w.errs) }

// Errors returns the problems recorded, ordered by line, or nil.
func (w *Walker) Errors() Errors {
	if len(w.errs) == 0 {
		return nil
	}
	w.errs.SortByLine()
	return w.errs
}

// Err is Errors as an error: nil when there is no problem.
func (w *Walker) Err() error {
	if es := w.Errors(); es != nil {
		return es
	}
	return nil
}

// SetBudget bounds the walk from n: generous for any real file, yet small
// enough that an alias bomb is refused after a few thousand steps per node
// of the text.
func (w *Walker) SetBudget(n *yaml.Node) {
	count := 0
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		count++
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	w.budget = 64*count + 1<<12
}

var (
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	yamlAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// Parse reads data's first YAML document and sets the budget from it. root
// is the document's content, nil when the document is empty or cannot be
// read (a syntax error is recorded, with its line). more is the line of a
// second, non-empty document, 0 when there is none.
func (w *Walker) Parse(data []byte) (root *yaml.Node, more int) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := w.decode(dec, &doc, data); err != nil {
		return nil, 0
	}
	w.SetBudget(&doc)
	var extra yaml.Node
	if err := w.decode(dec, &extra, data); err == nil {
		if c := w.Deref(&extra); c != nil && !(IsNull(c) && c.Value == "") {
			more = max(extra.Line, 1)
		}
	}
	root = w.Deref(&doc)
	if root != nil && IsNull(root) && root.Value == "" {
		root = nil
	}
	return root, more
}

// ParseAll reads every YAML document of data and sets the budget from all
// of them. docs holds each non-empty document's content, in order; empty
// documents (a lone "---", or a trailing one) are left out. A syntax error
// is recorded, with its line, and ends the reading: the documents before
// it are returned.
func (w *Walker) ParseAll(data []byte) (docs []*yaml.Node) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	holder := &yaml.Node{Kind: yaml.SequenceNode}
	for {
		doc := &yaml.Node{}
		if err := w.decode(dec, doc, data); err != nil {
			break
		}
		holder.Content = append(holder.Content, doc)
	}
	// One budget for the file, from all its documents: aliases cannot
	// cross documents, so this only adds headroom.
	w.SetBudget(holder)
	for _, doc := range holder.Content {
		root := w.Deref(doc)
		if root == nil || (IsNull(root) && root.Value == "") {
			continue
		}
		docs = append(docs, root)
	}
	return docs
}

// decode reads the next document, recording a syntax error with the line
// the YAML parser gives (or, when it gives none, the line of the offending
// byte or alias). It returns io.EOF at the end of the input.
func (w *Walker) decode(dec *yaml.Decoder, n *yaml.Node, data []byte) (err error) {
	defer func() {
		// The YAML library reports syntax errors as errors; a panic from it
		// would be a bug there, and must not take the service down on a
		// reload.
		if r := recover(); r != nil {
			w.Errorf(1, "", "invalid YAML: %v", r)
			err = errors.New("invalid YAML")
		}
	}()
	err = dec.Decode(n)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		w.Errorf(line, "", "invalid YAML: %s", m[2])
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
	w.Errorf(line, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
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

// Deref follows documents and aliases to the node they stand for, counting
// each step against the budget. It returns nil when the budget is spent
// (reporting that once) or for an empty document.
func (w *Walker) Deref(n *yaml.Node) *yaml.Node {
	for n != nil {
		w.budget--
		if w.budget < 0 {
			if !w.reported {
				w.Errorf(n.Line, "", "the file expands to too many nodes through aliases")
				w.reported = true
			}
			return nil
		}
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

// IsNull reports whether n is a null scalar (written as null, ~ or
// nothing).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// Describe names a node's kind and value for messages: "a mapping", "the
// number 3", "\"text\"".
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
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

// Field is one key: value pair of a mapping.
type Field struct {
	Name string
	Path string // the mapping's path joined with Name
	Key  *yaml.Node
	Val  *yaml.Node
}

// Fields lists the fields of mapping m (whose path is path) in order, with
// YAML merge keys (<<: a mapping or a list of mappings) expanded: a field
// given in m wins over a merged one, and an earlier merged mapping over a
// later one. A field given twice in m is reported and only the first kept.
func (w *Walker) Fields(m *yaml.Node, path string) []Field {
	var out []Field
	at := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		kd := w.Deref(k)
		if kd == nil {
			continue
		}
		if kd.Kind == yaml.ScalarNode && kd.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if kd.Kind != yaml.ScalarNode {
			w.Errorf(k.Line, path, "field names must be plain words, not %s", Describe(kd))
			continue
		}
		if first, dup := at[kd.Value]; dup {
			w.Errorf(k.Line, Join(path, kd.Value), "given twice; first given on line %d", first)
			continue
		}
		at[kd.Value] = k.Line
		out = append(out, Field{Name: kd.Value, Path: Join(path, kd.Value), Key: k, Val: v})
	}
	for _, mv := range merges {
		srcs := []*yaml.Node{mv}
		if d := w.Deref(mv); d != nil && d.Kind == yaml.SequenceNode {
			srcs = d.Content
		}
		for _, s := range srcs {
			sd := w.Deref(s)
			if sd == nil {
				continue
			}
			if sd.Kind != yaml.MappingNode {
				w.Errorf(s.Line, path, "a merge (<<) must name a mapping, not %s", Describe(sd))
				continue
			}
			for _, f := range w.Fields(sd, path) {
				if _, dup := at[f.Name]; dup {
					continue
				}
				at[f.Name] = f.Key.Line
				out = append(out, f)
			}
		}
	}
	return out
}

// Unknown reports f as a field its mapping does not have, suggesting the
// known field meant.
func (w *Walker) Unknown(f Field, known []string) {
	w.Errorf(f.Key.Line, f.Path, "unknown field%s", Suggest(f.Name, known))
}

// Suggest is the hint after "unknown field": "; did you mean NAME?" when a
// known name contains name ("ca_file" in "client_ca_file"; that says more
// than a near spelling of another field) or is a likely misspelling of it,
// else the list of known names.
func Suggest(name string, known []string) string {
	if len(name) >= 3 {
		for _, k := range known {
			if strings.Contains(k, name) {
				return "; did you mean " + k + "?"
			}
		}
	}
	if best := Closest(name, known); best != "" {
		return "; did you mean " + best + "?"
	}
	return "; known fields: " + strings.Join(known, ", ")
}

// Closest returns the known name nearest to s in edit distance (the first
// of equals, in the order given), if it is near enough to be a likely
// misspelling, else "".
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

// SortedKeys is the keys of m in order, for a list of known fields.
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
