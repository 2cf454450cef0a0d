package limiter

import (
	"math"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter/yamlconf"
)

// Bounds on a descriptor's metadata. It is copied into responses (dynamic
// metadata) and hashed on every load, so a file must not be able to make
// it large: aliases can repeat a big value many times over.
const (
	// MaxMetadataSize bounds a descriptor's metadata, measured as its JSON
	// text (what a protobuf Struct prints as).
	MaxMetadataSize = 64 << 10
	// MaxMetadataDepth bounds its nesting: the mapping itself is depth 1.
	MaxMetadataDepth = 16
)

// metadata parses a descriptor's metadata: a mapping of any YAML values,
// decoded as a protobuf Struct holds them (nil, bool, float64, string, []any,
// map[string]any), as envoyproxy/ratelimit converts them. An empty mapping
// is no metadata, as there.
func (p *parser) metadata(f yamlconf.Field) map[string]any {
	n := p.Deref(f.Val)
	if n == nil || yamlconf.IsNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.Errorf(f.Val.Line, f.Path, "must be a mapping (metadata: {name: value}), not %s", yamlconf.Describe(n))
		return nil
	}
	md := metaDecoder{p: p}
	v, ok := md.value(n, f.Path, 1)
	if !ok {
		return nil
	}
	m := v.(map[string]any)
	if len(m) == 0 {
		return nil
	}
	return m
}

type metaDecoder struct {
	p    *parser
	size int  // JSON bytes so far
	over bool // size or depth exceeded, and reported
}

// grow adds n bytes to the size, reporting once when it goes over.
func (md *metaDecoder) grow(n int, line int, path string) bool {
	md.size += n
	if md.size > MaxMetadataSize {
		md.over = true
		md.p.Errorf(line, path, "metadata is too large: over %d bytes as JSON (the most is %d KiB per descriptor)", MaxMetadataSize, MaxMetadataSize>>10)
		return false
	}
	return true
}

// value decodes n (already dereferenced or not) at path, whose nesting is
// depth. ok is false when a problem was reported.
func (md *metaDecoder) value(n *yaml.Node, path string, depth int) (any, bool) {
	if md.over {
		return nil, false
	}
	line := n.Line
	n = md.p.Deref(n)
	if n == nil {
		return nil, false
	}
	switch n.Kind {
	case yaml.MappingNode, yaml.SequenceNode:
		if depth > MaxMetadataDepth {
			md.over = true
			md.p.Errorf(line, path, "metadata is nested too deeply: over %d levels", MaxMetadataDepth)
			return nil, false
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		fields := md.p.Fields(n, path)
		out := make(map[string]any, len(fields))
		ok := md.grow(2, line, path) // {}
		for _, f := range fields {
			if !ok || md.over {
				return nil, false
			}
			k := md.p.Deref(f.Key)
			if k == nil {
				return nil, false
			}
			if yamlconf.IsNull(k) {
				md.p.Errorf(f.Key.Line, path, "metadata keys must be text, not empty (null)")
				ok = false
				continue
			}
			if !md.grow(len(k.Value)+4, f.Key.Line, f.Path) { // "k":,
				return nil, false
			}
			v, vok := md.value(f.Val, f.Path, depth+1)
			ok = ok && vok
			out[k.Value] = v
		}
		return out, ok
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		ok := md.grow(2, line, path) // []
		for i, c := range n.Content {
			if !ok || md.over || !md.grow(1, c.Line, path) {
				return nil, false
			}
			v, vok := md.value(c, yamlconf.Index(path, i), depth+1)
			ok = ok && vok
			out = append(out, v)
		}
		return out, ok
	case yaml.ScalarNode:
		return md.scalar(n, line, path)
	}
	md.p.Errorf(line, path, "metadata values must be text, numbers, true/false, null, lists or mappings, not %s", yamlconf.Describe(n))
	return nil, false
}

func (md *metaDecoder) scalar(n *yaml.Node, line int, path string) (any, bool) {
	switch n.Tag {
	case "!!null":
		return nil, md.grow(4, line, path)
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			md.p.Errorf(line, path, "must be true or false, not %s", yamlconf.Describe(n))
			return nil, false
		}
		return b, md.grow(5, line, path)
	case "!!int", "!!float":
		// A Struct holds every number as a float64, as envoyproxy/ratelimit
		// stores them.
		var f float64
		if err := n.Decode(&f); err != nil {
			md.p.Errorf(line, path, "%s is not a number a Struct can hold", yamlconf.Describe(n))
			return nil, false
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			md.p.Errorf(line, path, "%s cannot be sent in metadata (JSON has no infinity or NaN); quote it for text", yamlconf.Describe(n))
			return nil, false
		}
		return f, md.grow(len(strconv.FormatFloat(f, 'g', -1, 64)), line, path)
	}
	// Text, and what YAML 1.1 readers such as envoyproxy/ratelimit's keep
	// as text (timestamps, binary): the text as written.
	return n.Value, md.grow(len(n.Value)+2, line, path)
}
