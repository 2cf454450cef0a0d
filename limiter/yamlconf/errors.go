// Package yamlconf is Sluice's one strict YAML layer: config.yaml and limit
// files are both read through it, so both accept the same YAML (merge keys,
// anchors and aliases, within one expansion budget) and report problems in
// one format, "file:line: path.to.field: problem".
//
// It walks yaml.Nodes and collects every problem rather than stopping at
// the first, so one run of `sluice check` reports everything. It imports
// nothing of Sluice.
package yamlconf

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem with a setting, with where it is.
//
// It prints as "file:line: field: problem". File is "" when the value came
// from an environment variable (Env names it; it prints first instead of
// the file) or from defaults; Line is 0 when the problem concerns the
// whole file; Field is "" when the problem concerns no one field (a syntax
// error, an empty file).
type Error struct {
	File  string
	Line  int
	Env   string
	Field string // dotted path as the file spells it: redis.tls.cert_file, descriptors[2].rate_limit.unit
	Msg   string
}

func (e Error) Error() string {
	var b strings.Builder
	switch {
	case e.Env != "":
		b.WriteString(e.Env)
		b.WriteString(": ")
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found; each prints on its own line.
type Errors []Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// SortByLine orders es by file line, keeping the order of equal lines.
func (es Errors) SortByLine() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}

// Prefix returns e with its field placed under section: a package's
// Validate names a field relative to its own Config ("tls.cert_file"), the
// caller knows where that Config sits ("redis").
func (e Error) Prefix(section string) Error {
	e.Field = Join(section, e.Field)
	return e
}

// Join is the path of field name inside path.
func Join(path, name string) string {
	switch {
	case path == "":
		return name
	case name == "":
		return path
	}
	return path + "." + name
}

// Index is the path of item i of the list at path.
func Index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// A FieldProblem is a package's own configuration error (redis, postgres,
// breaker, server): the field as config.yaml spells it under the
// package's section, and the problem. Those packages keep their own small
// types, so as not to depend on this one; Under places them.
type FieldProblem interface {
	error
	FieldProblem() (field, problem string)
}

// Under turns err, from the Validate (or constructor) of a Config that
// config.yaml holds at section, into Errors in the one format: each
// FieldProblem (joined errors are taken apart) with its field placed
// under section, anything else as a problem of section itself. nil stays
// nil.
func Under(section string, err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make(Errors, 0, len(errs))
	for _, e := range errs {
		var fp FieldProblem
		if errors.As(e, &fp) {
			field, problem := fp.FieldProblem()
			out = append(out, Error{Field: Join(section, field), Msg: problem})
			continue
		}
		out = append(out, Error{Field: section, Msg: e.Error()})
	}
	return out
}
