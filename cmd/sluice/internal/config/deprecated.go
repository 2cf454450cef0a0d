package config

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// A Deprecated setting has left Config, but config.yaml may still give it:
// rather than fail every file that names it (the strict decoder refuses
// unknown keys), the setting is taken out before decoding and each load
// warns once, naming it and what to do.
type Deprecated struct {
	// Path is the setting as config.yaml spells it: runtime.min_heap_mb.
	// A section (runtime) takes everything under it.
	Path string
	// Advice says what to do instead, e.g. "remove it; the GC percent
	// alone sets the heap target".
	Advice string
}

// deprecated lists the settings removed from Config that are still
// accepted. A setting goes here when its field leaves Config, and leaves
// the table a release or two later, when it becomes an unknown field.
var deprecated = []Deprecated{
	// Measured against the GC percent alone in alternated runs, the heap
	// floor lowered p99 in too few pairs to pay for doubling peak RSS
	// (docs/performance.md).
	{Path: "runtime.min_heap_mb", Advice: "remove it; runtime.gc_percent (GOGC) and GOMEMLIMIT set the heap target"},
}

// dropDeprecated takes each setting of table out of the mapping root and
// returns one warning per setting given, at its first line, in line order. Only keys
// written out are seen: one that arrives through a merge key (<<) is
// still refused as unknown by the decoder.
func dropDeprecated(file string, root *yaml.Node, table []Deprecated) Errors {
	var warns Errors
	for _, d := range table {
		if line := drop(root, strings.Split(d.Path, ".")); line > 0 {
			warns = append(warns, Error{File: file, Line: line, Field: d.Path,
				Msg: "deprecated and ignored: " + d.Advice})
		}
	}
	warns.SortByLine()
	return warns
}

// drop removes the key at path under the mapping n, every time it is
// given, and returns the line it was first given on, or 0.
func drop(n *yaml.Node, path []string) (line int) {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return 0
	}
	keep := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value != path[0] {
			keep = append(keep, k, v)
			continue
		}
		if len(path) > 1 {
			if l := drop(v, path[1:]); l > 0 && line == 0 {
				line = l
			}
			keep = append(keep, k, v)
			continue
		}
		if line == 0 {
			line = k.Line
		}
	}
	if len(keep) != len(n.Content) {
		n.Content = keep
	}
	return line
}
