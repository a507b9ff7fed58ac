// Package config decodes gemba's YAML strictly: unknown keys are errors, every error names its path
// and line, all errors are reported at once, and ${ENV} references are expanded in values.
package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Problem is one configuration error.
type Problem struct {
	// File is set when a config is read from several files (ParseFile); Describe falls back to
	// the file it is given.
	File   string
	Path   string // e.g. collectors[1].nodes[3].sampling; empty for the document itself
	Line   int    // 1-based; 0 when unknown
	Column int
	Msg    string
}

func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(": ")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every error found in one document, in document order.
type Problems []Problem

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Error()
	}
	return strings.Join(s, "\n")
}

// Unmarshaler is implemented by types that decode themselves from a node. They report problems
// through d and may call d.Decode for their parts.
type Unmarshaler interface {
	UnmarshalConfig(d *Decoder, n *yaml.Node, path string)
}

// Validator is implemented by config structs that check themselves after decoding. Decode calls
// Validate on every struct it fills, innermost first, with a Report scoped to the struct's path.
type Validator interface {
	Validate(r Report)
}

// Decoder decodes YAML nodes into Go values and collects problems. It is not safe for concurrent use.
type Decoder struct {
	problems Problems
	pos      map[string]*yaml.Node
	lookup   func(string) (string, bool)
	maxSize  int64
	maxAlias int
	literal  bool // no ${VAR} expansion
	// Several files merged into one document (see files.go).
	fileOf    func(path string) (file, local string)
	fileOrder map[string]int
}

// Option configures a Decoder.
type Option func(*Decoder)

// WithEnv sets the environment used for ${VAR} expansion (os.LookupEnv in production).
func WithEnv(lookup func(string) (string, bool)) Option {
	return func(d *Decoder) { d.lookup = lookup }
}

// WithoutEnv makes every value literal: "${X}" stays "${X}" and "$$" stays "$$". For data files
// whose content must not depend on the host that loads them.
func WithoutEnv() Option { return func(d *Decoder) { d.literal = true } }

// NewDecoder returns a decoder. Without WithEnv every ${VAR} without a default is an error.
func NewDecoder(opts ...Option) *Decoder {
	d := &Decoder{
		pos:      map[string]*yaml.Node{},
		lookup:   func(string) (string, bool) { return "", false },
		maxSize:  DefaultMaxSize,
		maxAlias: DefaultMaxAliasNodes,
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Unmarshal parses data, expands ${VAR} references and decodes the document over out, which should
// hold the defaults. It returns Problems (every one found) or nil.
func (d *Decoder) Unmarshal(data []byte, out any) error {
	root, err := d.Parse(data)
	if err != nil {
		return err
	}
	if root != nil {
		d.Decode(root, "", out)
	} else {
		d.validateAbsent("", reflect.ValueOf(out))
	}
	return d.Err()
}

// Parse reads a YAML document and expands ${VAR} references in its scalar values (unless
// WithoutEnv). A second document in the stream is a problem. An empty
// document gives a nil node. A document over the size limit, with bytes YAML refuses, or whose
// aliases expand past the limit is a problem before anything is decoded.
func (d *Decoder) Parse(data []byte) (*yaml.Node, error) {
	if d.sizeProblem(len(data)) {
		return nil, d.Err()
	}
	if p, bad := checkText(data); bad {
		d.problems = append(d.problems, p)
		return nil, d.Err()
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		d.problems = append(d.problems, syntaxProblem(data, err))
		return nil, d.Err()
	}
	if line, ok := secondDocument(data); ok {
		// yaml.Unmarshal reads the first document only: what follows would be dropped unseen.
		d.problems = append(d.problems, Problem{Line: line,
			Msg: "a second YAML document starts here (after ---): a file holds one document, the rest would not be read"})
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, d.Err()
	}
	root := doc.Content[0]
	if !d.checkAliases(root) {
		return nil, d.Err()
	}
	if !d.literal {
		d.expand(root, "")
	}
	return root, nil
}

// Err returns the problems found so far, or nil.
func (d *Decoder) Err() error {
	if len(d.problems) == 0 {
		return nil
	}
	ps := append(Problems(nil), d.problems...)
	if d.fileOf != nil {
		for i := range ps {
			if ps[i].File == "" {
				ps[i].File, ps[i].Path = d.fileOf(ps[i].Path)
			}
		}
	}
	sort.SliceStable(ps, func(i, j int) bool {
		if fi, fj := d.fileOrder[ps[i].File], d.fileOrder[ps[j].File]; fi != fj {
			return fi < fj
		}
		return ps[i].Line < ps[j].Line && ps[i].Line > 0
	})
	return ps
}

// Errorf records a problem at node n (may be nil) and path.
func (d *Decoder) Errorf(n *yaml.Node, path, format string, args ...any) {
	p := Problem{Path: path, Msg: fmt.Sprintf(format, args...)}
	if n == nil {
		n = d.nearest(path)
	}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.problems = append(d.problems, p)
}

// nearest returns the node at path or at its closest recorded ancestor.
func (d *Decoder) nearest(path string) *yaml.Node {
	for {
		if n, ok := d.pos[path]; ok {
			return n
		}
		if path == "" {
			return nil
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			path = ""
		} else {
			path = path[:i]
		}
	}
}

// Report records validation problems relative to one struct's path.
type Report struct {
	d    *Decoder
	path string
}

// Path returns the full path of field under this report ("" for the struct itself).
func (r Report) Path(field string) string { return Join(r.path, field) }

// Errorf records a problem at field (a path relative to the struct, e.g. "nodes[3].sampling").
func (r Report) Errorf(field, format string, args ...any) {
	r.d.Errorf(nil, r.Path(field), format, args...)
}

// Sub returns a report scoped to field.
func (r Report) Sub(field string) Report { return Report{d: r.d, path: r.Path(field)} }

// Join appends a field or index ("[3]") to a path.
func Join(path, field string) string {
	switch {
	case field == "":
		return path
	case path == "" || strings.HasPrefix(field, "["):
		return path + field
	}
	return path + "." + field
}

// Index returns the path element for sequence index i.
func Index(i int) string { return "[" + strconv.Itoa(i) + "]" }

var (
	durationType  = reflect.TypeFor[time.Duration]()
	unmarshalType = reflect.TypeFor[Unmarshaler]()
	validatorType = reflect.TypeFor[Validator]()
)

// Decode decodes n into out (a non-nil pointer), recording problems under path.
func (d *Decoder) Decode(n *yaml.Node, path string, out any) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic("config: Decode needs a non-nil pointer")
	}
	d.decode(n, path, v.Elem())
}

// DecodeMapping decodes a mapping node into the struct out, skipping the given keys (which the
// caller handles). Unknown keys other than those are problems.
func (d *Decoder) DecodeMapping(n *yaml.Node, path string, out any, skip ...string) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		panic("config: DecodeMapping needs a pointer to a struct")
	}
	n = resolve(n)
	d.pos[path] = n
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	d.decodeStruct(n, path, v.Elem(), skip)
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (d *Decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	n = resolve(n)
	if n == nil {
		return
	}
	d.pos[path] = n
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalType) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v.Addr().Interface().(Unmarshaler).UnmarshalConfig(d, n, path)
		return
	}
	if v.Type() == durationType {
		if dur, ok := d.duration(n, path); ok {
			v.SetInt(int64(dur))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, path, v.Elem())
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if isNull(n) {
				d.validateAbsent(path, v) // "section:" with nothing under it keeps the defaults
			} else {
				d.Errorf(n, path, "expected a mapping, got %s", describe(n))
			}
			return
		}
		d.decodeStruct(n, path, v, nil)
	case reflect.Slice:
		if isNull(n) {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.Errorf(n, path, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, path+Index(i), s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode || v.Type().Key().Kind() != reflect.String {
			d.Errorf(n, path, "expected a mapping, got %s", describe(n))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := mapKeyPath(path, k.Value)
			if seen[k.Value] {
				d.Errorf(k, kp, "duplicate key %q", k.Value)
				continue
			}
			seen[k.Value] = true
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, kp, ev)
			v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev)
		}
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path); ok {
			b, err := strconv.ParseBool(s)
			if err != nil {
				d.Errorf(n, path, "expected true or false, got %q", s)
				return
			}
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if s, ok := d.scalar(n, path); ok {
			i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
			if err != nil {
				d.Errorf(n, path, "expected an integer, got %q", s)
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if s, ok := d.scalar(n, path); ok {
			i, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
			if err != nil {
				d.Errorf(n, path, "expected a non-negative integer, got %q", s)
				return
			}
			v.SetUint(i)
		}
	case reflect.Float32, reflect.Float64:
		if s, ok := d.scalar(n, path); ok {
			f, err := strconv.ParseFloat(s, v.Type().Bits())
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.Errorf(n, path, "expected a number, got %q", s)
				return
			}
			v.SetFloat(f)
		}
	default:
		d.Errorf(n, path, "cannot decode into %s", v.Type())
	}
	if v.Kind() != reflect.Struct && v.CanAddr() && v.Addr().Type().Implements(validatorType) {
		v.Addr().Interface().(Validator).Validate(Report{d: d, path: path})
	}
}

func mapKeyPath(path, key string) string {
	if key != "" && !strings.ContainsAny(key, ".[]\" ") {
		return Join(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// scalar returns the text of a scalar node; a list or mapping is a problem.
func (d *Decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, path, "expected a single value, got %s", describe(n))
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	return n.Value, true
}

// Scalar returns the text of a scalar node for Unmarshalers, recording a problem if n is not one.
func (d *Decoder) Scalar(n *yaml.Node, path string) (string, bool) { return d.scalar(n, path) }

func (d *Decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := d.scalar(n, path)
	if !ok || s == "" {
		return 0, ok
	}
	if s == "0" {
		return 0, true
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.Errorf(n, path, "invalid duration %q (use a number with a unit: 500ms, 10s, 5m, 72h)", s)
		return 0, false
	}
	return dur, true
}

type fieldInfo struct {
	index []int
}

var fieldCache sync.Map // reflect.Type -> map[string]fieldInfo

func fieldsOf(t reflect.Type) map[string]fieldInfo {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]fieldInfo)
	}
	m := map[string]fieldInfo{}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if opts == "inline" || (f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct) {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			m[name] = fieldInfo{index: idx}
		}
	}
	walk(t, nil)
	fieldCache.Store(t, m)
	return m
}

func (d *Decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value, skip []string) {
	fields := fieldsOf(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			d.Errorf(k, path, "merge keys (<<) are not supported")
			continue
		}
		if slices.Contains(skip, key) {
			continue
		}
		kp := Join(path, key)
		if seen[key] {
			d.Errorf(k, kp, "duplicate key %q", key)
			continue
		}
		seen[key] = true
		f, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("unknown field %q", key)
			if s := suggest(key, fields, skip); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.Errorf(k, kp, "%s", msg)
			continue
		}
		d.decode(val, kp, v.FieldByIndex(f.index))
	}
	for _, name := range sortedKeys(fields) {
		if !seen[name] && !slices.Contains(skip, name) {
			d.validateAbsent(Join(path, name), v.FieldByIndex(fields[name].index))
		}
	}
	if v.CanAddr() && v.Addr().Type().Implements(validatorType) {
		v.Addr().Interface().(Validator).Validate(Report{d: d, path: path})
	}
}

// validateAbsent runs the validators of a value the document does not mention, which keeps its
// defaults, children first as decoding does: a required field in a section left out (or the
// whole document empty) is reported like one left empty.
func (d *Decoder) validateAbsent(path string, v reflect.Value) {
	if v.Kind() == reflect.Pointer {
		if !v.IsNil() {
			d.validateAbsent(path, v.Elem())
		}
		return
	}
	custom := v.CanAddr() && v.Addr().Type().Implements(unmarshalType)
	if v.Kind() == reflect.Struct && !custom {
		fields := fieldsOf(v.Type())
		for _, name := range sortedKeys(fields) {
			d.validateAbsent(Join(path, name), v.FieldByIndex(fields[name].index))
		}
	}
	if v.CanAddr() && v.Addr().Type().Implements(validatorType) {
		v.Addr().Interface().(Validator).Validate(Report{d: d, path: path})
	}
}

func sortedKeys(fields map[string]fieldInfo) []string {
	return slices.Sorted(maps.Keys(fields))
}

// suggest returns the known key closest to key, if it is close enough to be a typo.
func suggest(key string, fields map[string]fieldInfo, extra []string) string {
	best, bestDist := "", 3
	try := func(name string) {
		if dd := editDistance(key, name); dd < bestDist || (dd == bestDist && name < best) {
			best, bestDist = name, dd
		}
	}
	for name := range fields {
		try(name)
	}
	for _, name := range extra {
		try(name)
	}
	if bestDist > len(key)/2 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ErrUnset is wrapped by problems about unset environment variables.
var ErrUnset = errors.New("environment variable is not set")
