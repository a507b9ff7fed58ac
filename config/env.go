package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// expand replaces ${...} references in every scalar value (not in keys); see expandString. A
// problem names the value's path and line.
func (d *Decoder) expand(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		out, err := expandString(n.Value, d.lookup)
		if err != nil {
			d.Errorf(n, path, "%v", err)
			return
		}
		if out != n.Value {
			n.Value = out
			if n.Tag == "!!null" || n.Tag == "" {
				n.Tag = "!!str"
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			d.expand(n.Content[i+1], mapKeyPath(path, n.Content[i].Value))
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			d.expand(c, path+Index(i))
		}
	}
}

// expandString expands, with POSIX shell meanings:
//
//	${VAR}          the value; an error when VAR is unset or set but empty
//	${VAR:-default} the value, or default when VAR is unset or empty
//	${VAR-default}  the value, or default when VAR is unset (an empty value stays empty)
//	$$              a literal $
//
// A default may itself hold references (${A:-${B:-x}}) and is expanded only when it is used,
// though its syntax is always checked. ${VAR:-} and ${VAR-} say that empty is fine. A $ not
// followed by { or $ is literal.
func expandString(s string, lookup func(string) (string, bool)) (string, error) {
	e := expander{s: s, lookup: lookup}
	out, err := e.text(true, false)
	if err != nil {
		return "", err
	}
	return out, nil
}

type expander struct {
	s      string
	i      int
	lookup func(string) (string, bool)
}

// text expands up to the end of the string or, inside a default (nested), up to its closing
// brace, which it leaves unread. With eval false it only checks syntax.
func (e *expander) text(eval, nested bool) (string, error) {
	var b strings.Builder
	for e.i < len(e.s) {
		c := e.s[e.i]
		switch {
		case c == '}' && nested:
			return b.String(), nil
		case c == '$' && strings.HasPrefix(e.s[e.i:], "$$"):
			b.WriteByte('$')
			e.i += 2
		case c == '$' && strings.HasPrefix(e.s[e.i:], "${"):
			v, err := e.ref(eval)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		default:
			b.WriteByte(c)
			e.i++
		}
	}
	if nested {
		return "", fmt.Errorf("unterminated ${ in %q (a default's references need their own closing })", e.s)
	}
	return b.String(), nil
}

// ref expands one ${...} starting at e.i.
func (e *expander) ref(eval bool) (string, error) {
	start := e.i
	e.i += 2
	j := e.i
	for j < len(e.s) && (e.s[j] == '_' || isAlnum(e.s[j])) {
		j++
	}
	name := e.s[e.i:j]
	e.i = j
	op := ""
	switch {
	case strings.HasPrefix(e.s[j:], "}"):
	case strings.HasPrefix(e.s[j:], ":-"):
		op = ":-"
	case strings.HasPrefix(e.s[j:], "-"):
		op = "-"
	case !strings.Contains(e.s[start:], "}"):
		return "", fmt.Errorf("unterminated ${ in %q", e.s)
	default:
		end := strings.IndexByte(e.s[start:], '}')
		return "", fmt.Errorf("invalid environment variable name %q in %s (want ${NAME}, ${NAME:-default} or ${NAME-default})", e.s[start+2:start+end], e.s[start:start+end+1])
	}
	if !validEnvName(name) {
		return "", fmt.Errorf("invalid environment variable name %q in %q", name, e.s[start:])
	}
	e.i += len(op)
	val, set := "", false
	if eval {
		val, set = e.lookup(name)
	}
	useDefault := eval && op != "" && (!set || (op == ":-" && val == ""))
	def := ""
	if op != "" {
		var err error
		if def, err = e.text(useDefault, true); err != nil {
			return "", err
		}
	}
	if e.i >= len(e.s) || e.s[e.i] != '}' {
		return "", fmt.Errorf("unterminated ${ in %q", e.s)
	}
	e.i++
	switch {
	case !eval:
		return "", nil
	case useDefault:
		return def, nil
	case op != "" || val != "":
		return val, nil
	case set:
		return "", fmt.Errorf("${%s} is set but empty (write ${%s:-default} for a default, or ${%s-} if empty is meant)", name, name, name)
	}
	return "", fmt.Errorf("${%s}: %w (set it, or give a default with ${%s:-value})", name, ErrUnset, name)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func validEnvName(s string) bool {
	return s != "" && !(s[0] >= '0' && s[0] <= '9')
}
