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

// lookup walks the path from node elem (or the document root for a $ path) of d.
func (p jsonPath) lookup(d *jdoc, elem int32) (int32, bool) {
	n := elem
	if p.root {
		n = 0 // the root is the first node parsed
	}
	for _, s := range p.steps {
		var ok bool
		switch k := d.nodes[n].kind; {
		case s.index >= 0 && k == jArr:
			n, ok = d.index(n, s.index)
		case s.index < 0 && k == jObj:
			n, ok = d.member(n, s.key)
		}
		if !ok {
			return -1, false
		}
	}
	return n, true
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

// leaves appends every scalar (and null) under node n with its path, in document order.
func leaves(dst []leaf, d *jdoc, prefix string, n int32, limit int) []leaf {
	if len(dst) >= limit {
		return dst
	}
	switch d.nodes[n].kind {
	case jObj:
		for c := d.nodes[n].first; c >= 0; c = d.nodes[c].next {
			name := d.keyOf(c)
			if prefix != "" {
				name = prefix + "." + name
			}
			dst = leaves(dst, d, name, c, limit)
		}
	case jArr:
		i := 0
		for c := d.nodes[n].first; c >= 0; c = d.nodes[c].next {
			dst = leaves(dst, d, prefix+"["+strconv.Itoa(i)+"]", c, limit)
			i++
		}
	default:
		if prefix == "" {
			prefix = "value"
		}
		dst = append(dst, leaf{path: prefix, n: n})
	}
	return dst
}

type leaf struct {
	path string
	n    int32
}
