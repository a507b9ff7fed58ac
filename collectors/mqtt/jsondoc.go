package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// jdoc is a parsed JSON document as a flat list of nodes that point into the payload. Decoding
// into map[string]any cost ~7 µs and 29 allocations for a 100-byte message; this parser reuses
// its node slice and allocates only for the values actually mapped. It accepts exactly RFC 8259
// JSON (checked against encoding/json by FuzzJSONDoc).
type jdoc struct {
	data  []byte
	nodes []jnode
	pos   int
}

type jkind uint8

const (
	jNull jkind = iota
	jFalse
	jTrue
	jNum
	jStr
	jObj
	jArr
)

type jnode struct {
	kind   jkind
	esc    bool // raw string contains escapes
	keyEsc bool
	key    []byte // member name (raw, unquoted) when the parent is an object
	raw    []byte // number text, or string content without quotes
	first  int32  // first child; -1 if none
	last   int32  // last child while parsing
	next   int32  // next sibling; -1 if none
}

// maxDepth bounds nesting, so a hostile payload cannot exhaust the stack.
const maxDepth = 1000

var errDepth = errors.New("JSON nested too deeply")

// parse reads one JSON document. The nodes stay valid until the next parse.
func (d *jdoc) parse(data []byte) error {
	d.data, d.nodes, d.pos = data, d.nodes[:0], 0
	if _, err := d.value(0); err != nil {
		return err
	}
	d.ws()
	if d.pos != len(d.data) {
		return fmt.Errorf("unexpected data after the JSON value at offset %d", d.pos)
	}
	return nil
}

func (d *jdoc) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jdoc) errorf(what string) error {
	if d.pos >= len(d.data) {
		return fmt.Errorf("unexpected end of JSON input (%s)", what)
	}
	return fmt.Errorf("invalid character %q at offset %d (%s)", d.data[d.pos], d.pos, what)
}

func (d *jdoc) add(n jnode) int32 {
	n.first, n.last, n.next = -1, -1, -1
	d.nodes = append(d.nodes, n)
	return int32(len(d.nodes) - 1)
}

func (d *jdoc) link(parent, child int32) {
	p := &d.nodes[parent]
	if p.first < 0 {
		p.first = child
	} else {
		d.nodes[p.last].next = child
	}
	p.last = child
}

func (d *jdoc) value(depth int) (int32, error) {
	if depth > maxDepth {
		return -1, errDepth
	}
	d.ws()
	if d.pos >= len(d.data) {
		return -1, d.errorf("looking for a value")
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		d.pos++
		obj := d.add(jnode{kind: jObj})
		d.ws()
		if d.pos < len(d.data) && d.data[d.pos] == '}' {
			d.pos++
			return obj, nil
		}
		for {
			d.ws()
			if d.pos >= len(d.data) || d.data[d.pos] != '"' {
				return -1, d.errorf("looking for a member name")
			}
			key, esc, err := d.str()
			if err != nil {
				return -1, err
			}
			d.ws()
			if d.pos >= len(d.data) || d.data[d.pos] != ':' {
				return -1, d.errorf("after a member name")
			}
			d.pos++
			child, err := d.value(depth + 1)
			if err != nil {
				return -1, err
			}
			d.nodes[child].key, d.nodes[child].keyEsc = key, esc
			d.link(obj, child)
			d.ws()
			if d.pos < len(d.data) && d.data[d.pos] == ',' {
				d.pos++
				continue
			}
			if d.pos < len(d.data) && d.data[d.pos] == '}' {
				d.pos++
				return obj, nil
			}
			return -1, d.errorf("after an object member")
		}
	case c == '[':
		d.pos++
		arr := d.add(jnode{kind: jArr})
		d.ws()
		if d.pos < len(d.data) && d.data[d.pos] == ']' {
			d.pos++
			return arr, nil
		}
		for {
			child, err := d.value(depth + 1)
			if err != nil {
				return -1, err
			}
			d.link(arr, child)
			d.ws()
			if d.pos < len(d.data) && d.data[d.pos] == ',' {
				d.pos++
				continue
			}
			if d.pos < len(d.data) && d.data[d.pos] == ']' {
				d.pos++
				return arr, nil
			}
			return -1, d.errorf("after an array element")
		}
	case c == '"':
		raw, esc, err := d.str()
		if err != nil {
			return -1, err
		}
		return d.add(jnode{kind: jStr, raw: raw, esc: esc}), nil
	case c == 't':
		return d.literal("true", jTrue)
	case c == 'f':
		return d.literal("false", jFalse)
	case c == 'n':
		return d.literal("null", jNull)
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return -1, d.errorf("looking for a value")
}

func (d *jdoc) literal(lit string, k jkind) (int32, error) {
	if len(d.data)-d.pos < len(lit) || string(d.data[d.pos:d.pos+len(lit)]) != lit {
		return -1, d.errorf("in literal " + lit)
	}
	d.pos += len(lit)
	return d.add(jnode{kind: k}), nil
}

func (d *jdoc) digits() int {
	n := 0
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		d.pos++
		n++
	}
	return n
}

func (d *jdoc) number() (int32, error) {
	start := d.pos
	if d.data[d.pos] == '-' {
		d.pos++
	}
	switch {
	case d.pos < len(d.data) && d.data[d.pos] == '0':
		d.pos++
	case d.digits() == 0:
		return -1, d.errorf("in numeric literal")
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if d.digits() == 0 {
			return -1, d.errorf("after decimal point in numeric literal")
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if d.digits() == 0 {
			return -1, d.errorf("in exponent of numeric literal")
		}
	}
	return d.add(jnode{kind: jNum, raw: d.data[start:d.pos]}), nil
}

// str reads a string at d.pos (an opening quote) and returns its raw content.
func (d *jdoc) str() ([]byte, bool, error) {
	d.pos++
	start, esc := d.pos, false
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			raw := d.data[start:d.pos]
			d.pos++
			return raw, esc, nil
		case c < 0x20:
			return nil, false, d.errorf("in string literal")
		case c == '\\':
			esc = true
			d.pos++
			if d.pos >= len(d.data) {
				return nil, false, d.errorf("in string escape")
			}
			switch d.data[d.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.pos++
			case 'u':
				d.pos++
				for range 4 {
					if d.pos >= len(d.data) || !isHex(d.data[d.pos]) {
						return nil, false, d.errorf(`in \u hexadecimal character escape`)
					}
					d.pos++
				}
			default:
				return nil, false, d.errorf("in string escape")
			}
		default:
			d.pos++
		}
	}
	return nil, false, d.errorf("in string literal")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// unescape decodes a raw JSON string the way encoding/json does (bad surrogates become U+FFFD).
func unescape(raw []byte) string {
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := hex4(raw[i+1 : i+5])
			i += 4
			if utf16.IsSurrogate(r) {
				if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					if r2 := hex4(raw[i+3 : i+7]); utf16.DecodeRune(r, r2) != utf8.RuneError {
						r = utf16.DecodeRune(r, r2)
						i += 6
						b = utf8.AppendRune(b, r)
						continue
					}
				}
				r = utf8.RuneError
			}
			b = utf8.AppendRune(b, r)
		default: // " \ /
			b = append(b, raw[i])
		}
	}
	return string(b)
}

func hex4(h []byte) rune {
	v, _ := strconv.ParseUint(string(h), 16, 32)
	return rune(v)
}

// child returns the member of object n named key (the last one, as encoding/json would keep).
func (d *jdoc) member(n int32, key string) (int32, bool) {
	found := int32(-1)
	for c := d.nodes[n].first; c >= 0; c = d.nodes[c].next {
		cn := &d.nodes[c]
		if (!cn.keyEsc && string(cn.key) == key) || (cn.keyEsc && unescape(cn.key) == key) {
			found = c
		}
	}
	return found, found >= 0
}

func (d *jdoc) index(n int32, i int) (int32, bool) {
	for c := d.nodes[n].first; c >= 0; c = d.nodes[c].next {
		if i == 0 {
			return c, true
		}
		i--
	}
	return -1, false
}

func (d *jdoc) keyOf(n int32) string {
	if d.nodes[n].keyEsc {
		return unescape(d.nodes[n].key)
	}
	return string(d.nodes[n].key)
}

// jsonObject and jsonArray stand for non-scalar values where a scalar was expected.
type (
	jsonObject struct{}
	jsonArray  struct{}
)

// scalar returns node n as json.Number, string, bool, nil, jsonObject or jsonArray.
func (d *jdoc) scalar(n int32) any {
	nd := &d.nodes[n]
	switch nd.kind {
	case jFalse:
		return false
	case jTrue:
		return true
	case jNum:
		return json.Number(nd.raw)
	case jStr:
		if nd.esc {
			return unescape(nd.raw)
		}
		return string(nd.raw)
	case jObj:
		return jsonObject{}
	case jArr:
		return jsonArray{}
	}
	return nil
}

// bytesView returns b as a string without copying, for parsing only: the string must not outlive
// the call it is passed to, and b must not change meanwhile.
func bytesView(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
