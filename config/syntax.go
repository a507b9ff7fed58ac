package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// checkText reports the first byte sequence the YAML reader refuses (a NUL or other control
// character, or bytes that are not UTF-8) with its line and column: yaml.v3 names neither.
// The allowed set is YAML 1.2's printable characters, which is what yaml.v3 enforces.
func checkText(data []byte) (Problem, bool) {
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, w := utf8.DecodeRune(data[i:])
		var msg string
		switch {
		case r == utf8.RuneError && w <= 1:
			msg = fmt.Sprintf("byte 0x%02x is not UTF-8 (the file must be UTF-8 text)", data[i])
		case r == 0:
			msg = "NUL byte (0x00) is not allowed in YAML (is this a binary file?)"
		case !printable(r):
			msg = fmt.Sprintf("control character %U is not allowed in YAML", r)
		}
		if msg != "" {
			return Problem{Line: line, Column: col, Msg: msg}, true
		}
		if r == '\n' {
			line, col = line+1, 1
		} else if r != '\r' || i+1 >= len(data) || data[i+1] != '\n' {
			col++
		}
		i += w
	}
	return Problem{}, false
}

func printable(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
	case r >= 0x20 && r <= 0x7E, r == 0x85:
	case r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD:
	case r >= 0x10000 && r <= 0x10FFFF:
	default:
		return false
	}
	return true
}

// syntaxProblem turns a yaml.v3 parse error into a problem at the line that holds the problem.
//
// yaml.v3 names the line where the enclosing construct starts, and for parser errors (as opposed
// to scanner errors) it prints that line 0-based, so "line 2: did not find expected key" can be
// about line 5; some errors (an unknown anchor) have no line. The parser reads strictly forward,
// so the problem is on the first line whose prefix of the document already fails with the same
// message: found by galloping from the line yaml.v3 named (never past the problem, and usually
// close to it) and bisecting, within a parsing budget; past it, yaml.v3's line stands.
func syntaxProblem(data []byte, err error) Problem {
	line, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
	if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		if l, c, found := findAlias(data, strings.TrimSuffix(name, "' referenced")); found {
			return Problem{Line: l, Column: c, Msg: msg}
		}
	}
	ends := lineEnds(data)
	// Bytes to parse in prefixes: a few parses of the whole document.
	budget := 8*len(data) + 1<<20
	// fails reports whether the document cut after line k fails the same way (and false for ok
	// once the budget is spent).
	fails := func(k int) (same, ok bool) {
		budget -= ends[k-1]
		if budget < 0 {
			return false, false
		}
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[k-1]], &n)
		if err == nil {
			return false, true
		}
		_, m := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
		return m == msg, true
	}
	keep := Problem{Line: line, Msg: msg}
	lo, hi := max(line, 1), len(ends) // the problem is on a line in [lo, hi]
	if lo > hi {
		return keep
	}
	// Gallop: lo, lo+1, lo+3, lo+7, ... until a prefix fails.
	for step := 1; lo < hi; step *= 2 {
		k := min(lo+step-1, hi)
		f, ok := fails(k)
		if !ok {
			return keep
		}
		if f {
			hi = k
			break
		}
		lo = k + 1
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		f, ok := fails(mid)
		if !ok {
			return keep
		}
		if f {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo == len(ends) {
		// Only the whole document fails: check it really does so the same way (an error that no
		// prefix shows, e.g. one about the document's end).
		if f, _ := fails(lo); !f {
			return keep
		}
	}
	return Problem{Line: lo, Msg: msg}
}

// findAlias returns the position of the first alias *name in data: the token starts after
// a blank, a flow indicator or a line start, and ends where an anchor name cannot go on.
func findAlias(data []byte, name string) (line, col int, ok bool) {
	tok := []byte("*" + name)
	for off := 0; ; {
		i := bytes.Index(data[off:], tok)
		if i < 0 {
			return 0, 0, false
		}
		i += off
		end := i + len(tok)
		before := i == 0 || strings.IndexByte(" \t\n\r[{,:-?", data[i-1]) >= 0
		after := end == len(data) || strings.IndexByte(" \t\n\r]},", data[end]) >= 0
		if before && after {
			line = 1 + bytes.Count(data[:i], []byte("\n"))
			col = 1 + utf8.RuneCount(data[bytes.LastIndexByte(data[:i], '\n')+1:i])
			return line, col, true
		}
		off = i + 1
	}
}

// splitLine separates yaml.v3's "line N: " prefix from its message.
func splitLine(s string) (int, string) {
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if i := strings.IndexByte(rest, ':'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				return n, strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return 0, s
}

// lineEnds returns, for each line, the offset just past its newline (or the end of data).
func lineEnds(data []byte) []int {
	var ends []int
	for off := 0; off < len(data); {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			ends = append(ends, len(data))
			break
		}
		off += i + 1
		ends = append(ends, off)
	}
	return ends
}

// secondDocument reports whether data holds a document after its first one that is not empty, and
// the line where it starts (0 when not found: a document marker yaml.v3 reads where this scan does
// not). data's first document parses.
func secondDocument(data []byte) (int, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first, next yaml.Node
	if dec.Decode(&first) != nil {
		return 0, false
	}
	err := dec.Decode(&next)
	if errors.Is(err, io.EOF) || (err == nil && emptyDocument(&next)) {
		return 0, false
	}
	seen := false // content of the first document
	for i, l := range strings.Split(string(data), "\n") {
		t := strings.TrimRight(l, " \t\r")
		if rest, ok := strings.CutPrefix(t, "---"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			if seen {
				return i + 1, true
			}
			rest = strings.TrimSpace(rest)
			seen = rest != "" && !strings.HasPrefix(rest, "#")
			continue
		}
		if s := strings.TrimSpace(t); s != "" && !strings.HasPrefix(s, "#") && !strings.HasPrefix(s, "%") {
			seen = true
		}
	}
	return 0, true
}

// emptyDocument reports whether n is a document without content (a marker and comments).
func emptyDocument(n *yaml.Node) bool {
	if len(n.Content) == 0 {
		return true
	}
	c := n.Content[0]
	return len(n.Content) == 1 && c.Kind == yaml.ScalarNode && c.Tag == "!!null" && c.Value == ""
}
