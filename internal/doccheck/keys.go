// Package doccheck holds what the tests that keep docs/ true share: the keys a config struct
// accepts (by its yaml tags, as the config decoder reads them) and the keys, defaults, commands,
// flags and metric names a Markdown reference mentions.
package doccheck

import (
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Node is one key of a config: a struct field reached by yaml tags from the root. Paths are dotted;
// a list is transparent (collectors.name) and a map's entries are "*" (act.channels.*.webhook).
type Node struct {
	Type reflect.Type
	Leaf bool // a value: nothing below it is a key
}

// Keys is every key path a config type accepts.
type Keys map[string]Node

// Sorted returns the paths in order.
func (k Keys) Sorted() []string {
	out := make([]string, 0, len(k))
	for p := range k {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

var (
	unmarshaler = reflect.TypeFor[config.Unmarshaler]()
	duration    = reflect.TypeFor[time.Duration]()
)

// KeysOf walks t by yaml tags as config.Decoder does (inline and embedded structs flattened, "-"
// skipped, an untagged field by its lower-cased name). A type that decodes itself
// (config.Unmarshaler) is a value, unless expand lists the struct types it decodes into (a
// collector spec: its common keys and every type's settings), which are then walked at its path.
func KeysOf(t reflect.Type, expand map[reflect.Type][]reflect.Type) Keys {
	k := Keys{}
	k.walk("", t, expand)
	return k
}

func (k Keys) walk(path string, t reflect.Type, expand map[reflect.Type][]reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if ts, ok := expand[t]; ok {
		for _, e := range ts {
			k.walk(path, e, expand)
		}
		return
	}
	leaf := func() {
		if path != "" {
			k[path] = Node{Type: t, Leaf: true}
		}
	}
	if t == duration || reflect.PointerTo(t).Implements(unmarshaler) {
		leaf()
		return
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if isStruct(t.Elem(), expand) {
			k.walk(path, t.Elem(), expand)
			return
		}
		leaf()
	case reflect.Map:
		if isStruct(t.Elem(), expand) {
			if path != "" {
				k[path] = Node{Type: t}
			}
			k.walk(join(path, "*"), t.Elem(), expand)
			return
		}
		leaf()
	case reflect.Struct:
		if path != "" {
			k[path] = Node{Type: t}
		}
		k.fields(path, t, expand)
	default:
		leaf()
	}
}

func (k Keys) fields(path string, t reflect.Type, expand map[reflect.Type][]reflect.Type) {
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
		if opts == "inline" || (f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct) {
			k.fields(path, f.Type, expand)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		k.walk(join(path, name), f.Type, expand)
	}
}

// isStruct reports whether values of t are decoded key by key (a struct that does not decode
// itself, or one expand lists).
func isStruct(t reflect.Type, expand map[reflect.Type][]reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if _, ok := expand[t]; ok {
		return true
	}
	return t.Kind() == reflect.Struct && t != duration && !reflect.PointerTo(t).Implements(unmarshaler)
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// ValueAt returns the field of v at a key path without "*" (a value inside a list or map has no
// default of its own), following pointers; ok is false when a nil pointer or a list is in the way.
func ValueAt(v reflect.Value, path string) (reflect.Value, bool) {
	for _, seg := range strings.Split(path, ".") {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		f, ok := fieldByTag(v, seg)
		if !ok {
			return reflect.Value{}, false
		}
		v = f
	}
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return reflect.Value{}, false
		}
		v = v.Elem()
	}
	return v, true
}

func fieldByTag(v reflect.Value, seg string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "inline" || (f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct) {
			if fv, ok := fieldByTag(v.Field(i), seg); ok {
				return fv, true
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == seg {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}
