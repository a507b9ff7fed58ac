package mqtt

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// jsonPath addresses a value inside a decoded JSON document: `a.b[2].c`, `a["key.with.dots"]`,
// `[0].v` for a root array, `$.ts` for the document root when mapping array elements with `each`.
type jsonPath struct {
	src   string
	root  bool // starts at the document root, not the current element
	steps []step
}

type step struct {
	key   string
	index int // -1 for a key step
}

func (p jsonPath) String() string { return p.src }

func parsePath(s string) (jsonPath, error) {
	p := jsonPath{src: s}
	rest := s
	if r, ok := strings.CutPrefix(rest, "$"); ok {
		p.root, rest = true, r
		rest = strings.TrimPrefix(rest, ".")
	}
	if rest == "." {
		return p, nil
	}
	if s == "" {
		return p, fmt.Errorf("empty path")
	}
	first := true
	for rest != "" {
		switch {
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return p, fmt.Errorf("unterminated '[' in path %q", s)
			}
			inner := rest[1:end]
			if strings.HasPrefix(inner, `"`) {
				k, err := strconv.Unquote(inner)
				if err != nil {
					return p, fmt.Errorf("bad quoted key %s in path %q", inner, s)
				}
				p.steps = append(p.steps, step{key: k, index: -1})
			} else {
				i, err := strconv.Atoi(inner)
				if err != nil || i < 0 {
					return p, fmt.Errorf("bad array index [%s] in path %q (use [0], [1], ...)", inner, s)
				}
				p.steps = append(p.steps, step{index: i})
			}
			rest = rest[end+1:]
		case rest[0] == '.' && !first:
			rest = rest[1:]
			if rest == "" || rest[0] == '.' || rest[0] == '[' {
				return p, fmt.Errorf("empty key in path %q", s)
			}
			fallthrough
		default:
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			if end == 0 {
				return p, fmt.Errorf("empty key in path %q", s)
			}
			p.steps = append(p.steps, step{key: rest[:end], index: -1})
			rest = rest[end:]
		}
		first = false
	}
	return p, nil
}

// lookup walks the path from elem (or root for a $ path).
func (p jsonPath) lookup(elem, root any) (any, bool) {
	v := elem
	if p.root {
		v = root
	}
	for _, s := range p.steps {
		if s.index >= 0 {
			a, ok := v.([]any)
			if !ok || s.index >= len(a) {
				return nil, false
			}
			v = a[s.index]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[s.key]; !ok {
			return nil, false
		}
	}
	return v, true
}

// scalarText renders a JSON scalar for templates.
func scalarText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// leaves appends every scalar (and null) under v with its path, in document order of keys
// as Go maps give them sorted for stable output.
func leaves(dst []leaf, prefix string, v any, limit int) []leaf {
	if len(dst) >= limit {
		return dst
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sortStrings(keys)
		for _, k := range keys {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			dst = leaves(dst, name, x[k], limit)
		}
	case []any:
		for i, e := range x {
			dst = leaves(dst, prefix+"["+strconv.Itoa(i)+"]", e, limit)
		}
	default:
		if prefix == "" {
			prefix = "value"
		}
		dst = append(dst, leaf{path: prefix, v: v})
	}
	return dst
}

type leaf struct {
	path string
	v    any
}
