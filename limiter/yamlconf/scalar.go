package yamlconf

import (
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// String reads a text field. Only values given as text are accepted,
// except that lenient allows numbers and dates (taken as written).
func (w *Walker) String(f Field, lenient bool) (string, bool) {
	n := w.Deref(f.Val)
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		w.Errorf(f.Val.Line, f.Path, "must be a string, not %s", Describe(n))
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
	w.Errorf(f.Val.Line, f.Path, "must be a string, not %s; quote it (%s: \"%s\")", Describe(n), f.Name, n.Value)
	return "", false
}

// Bool reads a true/false field.
func (w *Walker) Bool(f Field) bool {
	n := w.Deref(f.Val)
	if n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		return strings.EqualFold(n.Value, "true")
	}
	w.Errorf(f.Val.Line, f.Path, "must be true or false, not %s", Describe(n))
	return false
}

var decimalRE = regexp.MustCompile(`^[0-9]+$`)

// Uint32 reads a whole number from 0 to 4294967295.
func (w *Walker) Uint32(f Field) (uint32, bool) {
	n := w.Deref(f.Val)
	if n == nil {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && !(n.Tag == "!!float" && decimalRE.MatchString(n.Value))) {
		w.Errorf(f.Val.Line, f.Path, "must be a whole number, not %s", Describe(n))
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
			w.Errorf(f.Val.Line, f.Path, "must not be negative, not %s", s)
			return 0, false
		}
		v = uint64(iv)
	}
	if err != nil && strings.HasPrefix(s, "-") {
		w.Errorf(f.Val.Line, f.Path, "must not be negative, not %s", s)
		return 0, false
	}
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		w.Errorf(f.Val.Line, f.Path, "must be a whole number, not %s", Describe(n))
		return 0, false
	}
	if err != nil || v > math.MaxUint32 {
		w.Errorf(f.Val.Line, f.Path, "%s is too large; the most is %d", s, uint32(math.MaxUint32))
		return 0, false
	}
	return uint32(v), true
}
