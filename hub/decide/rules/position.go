package rules

import (
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// filePos is a place in the rule file: 1-based line and column (in characters, as YAML counts).
type filePos struct{ Line, Col int }

// source is the rule file split in lines of characters, to find where an expression's
// characters are written.
type source [][]rune

func newSource(data []byte) source {
	lines := strings.Split(string(data), "\n")
	out := make(source, len(lines))
	for i, l := range lines {
		out[i] = []rune(strings.TrimSuffix(l, "\r"))
	}
	return out
}

// positions maps each character offset of a scalar's value (and one past its end) to the place
// in the file where it is written. YAML rewrites a scalar's text: quotes, escapes, indentation of
// block scalars (| and >) and the folding of line breaks. Every character of the value other
// than white space is written in the file in the same order, after the scalar's start, except
// for escapes and doubled single quotes; the scan below follows that and lands white space of
// the value where the previous character ended. A file it cannot follow (which would be a bug
// here) falls back to the scalar's start, so an error is still at the right line.
func (s source) positions(n *yaml.Node) []filePos {
	if n == nil {
		return nil
	}
	val := []rune(n.Value)
	out := make([]filePos, len(val)+1)
	l, c := n.Line-1, n.Column-1
	single, double := false, false
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		l, c = l+1, 0 // the content starts on the line after the header
	case n.Style&yaml.SingleQuotedStyle != 0:
		c, single = c+1, true
	case n.Style&yaml.DoubleQuotedStyle != 0:
		c, double = c+1, true
	}
	fallback := func() []filePos {
		multiline := strings.Contains(n.Value, "\n")
		for i := range out {
			out[i] = filePos{n.Line, n.Column}
			if !multiline && n.Style == 0 {
				out[i].Col += i
			}
		}
		return out
	}
	// at returns the character at (l, c), '\n' past a line's end, and false past the file's end.
	at := func(l, c int) (rune, bool) {
		if l < 0 || l >= len(s) {
			return 0, false
		}
		if c >= len(s[l]) {
			return '\n', l+1 < len(s)
		}
		return s[l][c], true
	}
	adv := func(k int) {
		for ; k > 0; k-- {
			if c >= len(s[l]) {
				l, c = l+1, 0
			} else {
				c++
			}
		}
	}
	for i, v := range val {
		if unicode.IsSpace(v) {
			out[i] = filePos{l + 1, c + 1}
			continue
		}
		for {
			r, ok := at(l, c)
			if !ok {
				return fallback()
			}
			if r == ' ' || r == '\t' || r == '\n' {
				adv(1)
				continue
			}
			if double && r == '\\' {
				e, width, ok := escape(s, l, c)
				if !ok {
					return fallback()
				}
				if e == -1 || unicode.IsSpace(e) { // a line continuation, or white space the value already placed
					adv(width)
					continue
				}
				if e != v {
					return fallback()
				}
				out[i] = filePos{l + 1, c + 1}
				adv(width)
				break
			}
			if single && r == '\'' {
				if r2, _ := at(l, c+1); r2 != '\'' || v != '\'' {
					return fallback()
				}
				out[i] = filePos{l + 1, c + 1}
				adv(2)
				break
			}
			if r != v {
				return fallback()
			}
			out[i] = filePos{l + 1, c + 1}
			adv(1)
			break
		}
	}
	out[len(val)] = filePos{l + 1, c + 1}
	return out
}

// escape decodes the double-quoted escape at (l, c): the character it stands for (-1 for an
// escaped line break) and how many characters it takes.
func escape(s source, l, c int) (rune, int, bool) {
	line := s[l]
	if c+1 >= len(line) {
		return -1, 2, true // backslash at the end of the line: the break is escaped
	}
	hex := 0
	switch line[c+1] {
	case 'x':
		hex = 2
	case 'u':
		hex = 4
	case 'U':
		hex = 8
	}
	if hex > 0 {
		if c+2+hex > len(line) {
			return 0, 0, false
		}
		r, err := strconv.ParseUint(string(line[c+2:c+2+hex]), 16, 32)
		if err != nil {
			return 0, 0, false
		}
		return rune(r), 2 + hex, true
	}
	m := map[rune]rune{'0': 0, 'a': '\a', 'b': '\b', 't': '\t', '\t': '\t', 'n': '\n', 'v': '\v', 'f': '\f',
		'r': '\r', 'e': 0x1b, ' ': ' ', '"': '"', '/': '/', '\\': '\\', 'N': 0x85, '_': 0xA0, 'L': 0x2028, 'P': 0x2029}
	r, ok := m[line[c+1]]
	return r, 2, ok
}

// offsetOf turns CEL's location (1-based line, 0-based column in characters, both inside the
// expression) into a character offset in the expression.
func offsetOf(expr []rune, line, col int) int {
	off := 0
	for l := 1; l < line && off < len(expr); off++ {
		if expr[off] == '\n' {
			l++
		}
	}
	return min(off+max(col, 0), len(expr))
}
