package limiter

// MetricKey is a rule's name in envoyproxy/ratelimit's statistics: the
// stats key its GetLimit (src/config/config_impl.go) builds for a request,
// without the leading domain. A rule has one only when a flag asks for it:
// detailed_metric on the rule's own descriptor, or value_to_metric on any
// descriptor of the path down to it. Other rules are named by Rule.Path.
//
// What each level writes is fixed by the node the rule's path goes
// through, so it is worked out once, at Compile; a request only supplies
// the values of the levels that take one.
type MetricKey struct {
	levels  []metricLevel
	static  string // the key, when no level takes a request value
	dynamic bool
}

// metricLevel is what one entry of the request writes to the key.
type metricLevel struct {
	key   string
	fixed string // levelFixed: the configured value or wildcard pattern
	kind  uint8
}

const (
	levelKey         = iota // "key"
	levelFixed              // "key_fixed"
	levelValue              // "key_value", or "key" for an empty value
	levelValueAlways        // "key_value", "key_" for an empty value
)

// newMetricKey returns the metric key of a rule on the last node of chain
// (the nodes from the domain's root down to the rule), or nil when neither
// flag asks for one. It follows envoyproxy/ratelimit's GetLimit:
//
//   - detailed_metric on the rule: every entry as key_value of the request
//     (key_ for an empty value), except that when a level of the path
//     shares a bucket (share_threshold), shared levels write their wildcard
//     pattern and the others key_value, or key for an empty value;
//   - otherwise, with value_to_metric somewhere on the path: an exact value
//     writes key_value; a shared wildcard its pattern; a wildcard or a
//     key-only node with value_to_metric the request's value (key alone
//     for an empty one); a wildcard without it its pattern; a key-only
//     node without it the key alone.
func newMetricKey(chain []*node, detailed bool) *MetricKey {
	vtm, shared := false, false
	for _, n := range chain {
		vtm = vtm || n.valueToMetric
		shared = shared || (n.share && n.wildcard)
	}
	if !detailed && !vtm {
		return nil
	}
	k := &MetricKey{levels: make([]metricLevel, len(chain))}
	for i, n := range chain {
		lv := metricLevel{key: n.key, kind: levelKey}
		switch {
		case n.wildcard && n.share, !n.wildcard && n.value != "":
			lv.kind, lv.fixed = levelFixed, n.value
		case detailed && shared:
			lv.kind = levelValue
		case detailed:
			lv.kind = levelValueAlways
		case n.valueToMetric:
			lv.kind = levelValue
		case n.wildcard:
			lv.kind, lv.fixed = levelFixed, n.value
		}
		k.levels[i] = lv
		k.dynamic = k.dynamic || lv.kind == levelValue || lv.kind == levelValueAlways
	}
	if !k.dynamic {
		k.static = string(k.Append(nil, nil))
	}
	return k
}

// Static returns the key and true when it takes no request value, so every
// request of the rule has this one key.
func (k *MetricKey) Static() (string, bool) { return k.static, !k.dynamic }

// Append appends the key for a request descriptor's entries (those the
// rule matched) to dst. Levels joined by '.' as envoyproxy/ratelimit joins
// them; the result is not bounded in length: callers that make labels of
// it cut it.
func (k *MetricKey) Append(dst []byte, entries []Entry) []byte {
	for i := range k.levels {
		lv := &k.levels[i]
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = append(dst, lv.key...)
		switch lv.kind {
		case levelKey:
			continue
		case levelFixed:
			dst = append(dst, '_')
			dst = append(dst, lv.fixed...)
			continue
		}
		var v string
		if i < len(entries) {
			v = entries[i].Value
		}
		if v != "" || lv.kind == levelValueAlways {
			dst = append(dst, '_')
			dst = append(dst, v...)
		}
	}
	return dst
}
