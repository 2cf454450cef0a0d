package limiter

// PassedMetadata merges the metadata of the limits that passed in resp
// (code OK, a configured limit applied: not unlimited, not replaced, not a
// request-side limit) into a fresh map, in descriptor order. It returns nil
// when none has metadata. The rules' own maps are never written: every map
// in the result is a copy, so a later merge cannot reach the configuration
// (envoyproxy/ratelimit merges into the first limit's metadata itself, so
// one request's merge leaks into the next).
func PassedMetadata(resp *Response) map[string]any {
	var out map[string]any
	for i := range resp.Statuses {
		st := &resp.Statuses[i]
		if st.Code != OK || st.Rule == nil || st.Limit == nil || len(st.Rule.Metadata) == 0 {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(st.Rule.Metadata))
		}
		MergeMetadata(out, st.Rule.Metadata)
	}
	return out
}

// MergeMetadata merges src into dst as envoyproxy/ratelimit does: a key
// dst lacks is added, two maps under one key are merged recursively, and
// otherwise dst's value stays (the first limit wins). Maps taken from src
// are copied, never shared, so dst can be merged into again safely.
func MergeMetadata(dst, src map[string]any) {
	for k, v := range src {
		cur, ok := dst[k]
		if !ok {
			dst[k] = copyMetadata(v)
			continue
		}
		cm, ok1 := cur.(map[string]any)
		sm, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			MergeMetadata(cm, sm)
		}
	}
}

// copyMetadata copies the maps and lists of v, deeply.
func copyMetadata(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = copyMetadata(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = copyMetadata(e)
		}
		return l
	}
	return v
}
