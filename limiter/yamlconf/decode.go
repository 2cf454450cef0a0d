package yamlconf

import (
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var (
	nodeType     = reflect.TypeOf(yaml.Node{})
	durationType = reflect.TypeOf(time.Duration(0))
)

// Decode decodes n strictly over the struct dst points to, field by field
// by yaml tags (",inline" structs flattened, "-" skipped): an unknown or
// repeated key, or a value of the wrong type, is a problem naming its line
// and field path; a field not given, or given as null, keeps its value.
// Fields may be structs, time.Durations (written 250ms, 2m), strings,
// bools, integers, floats, maps keyed by string (each value decoded as a
// field), or yaml.Node (kept undecoded, aliases followed). lines, unless nil, receives the line of every path given.
func (w *Walker) Decode(n *yaml.Node, dst any, lines map[string]int) {
	d := decoder{w: w, lines: lines}
	if d.lines == nil {
		d.lines = map[string]int{}
	}
	d.value(n, reflect.ValueOf(dst).Elem(), "")
}

type decoder struct {
	w     *Walker
	lines map[string]int
}

// value decodes n into v, whose field path is path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = d.w.Deref(n)
	if n == nil {
		return
	}
	if _, ok := d.lines[path]; !ok && path != "" {
		d.lines[path] = n.Line
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if IsNull(n) {
		return // keep the default
	}
	if v.Kind() == reflect.Struct {
		if n.Kind != yaml.MappingNode {
			if path == "" {
				d.w.Errorf(n.Line, path, "the file must be a mapping of settings, not %s", Describe(n))
			} else {
				d.w.Errorf(n.Line, path, "must be a mapping of settings, not %s", Describe(n))
			}
			return
		}
		fields := structFields(v)
		var known []string
		for _, f := range d.w.Fields(n, path) {
			d.lines[f.Path] = f.Key.Line
			fv, ok := fields[f.Name]
			if !ok {
				if known == nil {
					known = SortedKeys(fields)
				}
				d.w.Unknown(f, known)
				continue
			}
			d.value(f.Val, fv, f.Path)
		}
		return
	}
	if v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String {
		// A map keyed by names the user picks (domains): each value is
		// decoded as a field would be, from the map's zero value.
		if n.Kind != yaml.MappingNode {
			d.w.Errorf(n.Line, path, "must be a mapping, not %s", Describe(n))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, f := range d.w.Fields(n, path) {
			d.lines[f.Path] = f.Key.Line
			ev := reflect.New(v.Type().Elem()).Elem()
			if old := v.MapIndex(reflect.ValueOf(f.Name).Convert(v.Type().Key())); old.IsValid() {
				ev.Set(old)
			}
			d.value(f.Val, ev, f.Path)
			v.SetMapIndex(reflect.ValueOf(f.Name).Convert(v.Type().Key()), ev)
		}
		return
	}
	if n.Kind != yaml.ScalarNode {
		d.w.Errorf(n.Line, path, "must be %s, not %s", typeName(v.Type()), Describe(n))
		return
	}
	if v.Type() == durationType {
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.w.Errorf(n.Line, path, "must be %s, not %s", typeName(v.Type()), Describe(n))
			return
		}
		v.SetInt(int64(dur))
		return
	}
	if v.Kind() == reflect.String && n.Tag == "!!bool" && n.Style == 0 {
		// A bare true/false where a string belongs is almost always a
		// mistake; say so rather than storing "true".
		d.w.Errorf(n.Line, path, "must be a string, not %s; quote it", Describe(n))
		return
	}
	tmp := reflect.New(v.Type())
	if err := n.Decode(tmp.Interface()); err != nil {
		d.w.Errorf(n.Line, path, "must be %s, not %s", typeName(v.Type()), Describe(n))
		return
	}
	v.Set(tmp.Elem())
}

// structFields maps the yaml names of v's fields, inline structs flattened,
// to the settable fields.
func structFields(v reflect.Value) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		if tag == "-" || !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "inline" {
			for k, f := range structFields(v.Field(i)) {
				out[k] = f
			}
			continue
		}
		if name == "" {
			continue
		}
		out[name] = v.Field(i)
	}
	return out
}

// typeName says what a field of type t takes.
func typeName(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 250ms, 1s or 2m"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Int16, reflect.Int8:
		return "an integer"
	case reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16, reflect.Uint8:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}
