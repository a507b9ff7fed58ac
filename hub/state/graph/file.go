package graph

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// file is the YAML document as written (docs/graph.md). Every id and reference is an ident so
// that validation can say on which line the first of two duplicates was.
type file struct {
	Version  string         `yaml:"version"`
	Sites    []plainEntry   `yaml:"sites"`
	Lines    []lineEntry    `yaml:"lines"`
	Machines []machineEntry `yaml:"machines"`
	Signals  []signalEntry  `yaml:"signals"`
	SKUs     []plainEntry   `yaml:"skus"`
	Channels []plainEntry   `yaml:"channels"`
	Segments []plainEntry   `yaml:"segments"`
	Edges    []edgeEntry    `yaml:"edges"`
}

type plainEntry struct {
	ID   ident  `yaml:"id"`
	Name string `yaml:"name"`
}

type lineEntry struct {
	ID   ident  `yaml:"id"`
	Name string `yaml:"name"`
	Site ident  `yaml:"site"`
}

type machineEntry struct {
	ID   ident  `yaml:"id"`
	Name string `yaml:"name"`
	Line ident  `yaml:"line"`
}

type signalEntry struct {
	ID      ident  `yaml:"id"`
	Name    string `yaml:"name"`
	Machine ident  `yaml:"machine"`
}

type edgeEntry struct {
	Kind string `yaml:"kind"`
	From ident  `yaml:"from"`
	To   ident  `yaml:"to"`
}

// ident is an id or a reference to one, with the line it was written on.
type ident struct {
	s    string
	line int
	bad  bool // not a scalar: the decoder has reported it, validation skips it
}

// UnmarshalConfig implements config.Unmarshaler.
func (id *ident) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	s, ok := d.Scalar(n, path)
	*id = ident{s: s, line: n.Line, bad: !ok}
}

// entry is one declared node, flattened for validation.
type entry struct {
	kind   Kind
	id     ident
	name   string
	parent ident  // zero for kinds without a parent
	path   string // e.g. lines[2]
}

func (f *file) entries() []entry {
	var es []entry
	add := func(k Kind, section string, i int, id ident, name string, parent ident) {
		es = append(es, entry{kind: k, id: id, name: name, parent: parent, path: section + config.Index(i)})
	}
	for i, e := range f.Sites {
		add(KindSite, "sites", i, e.ID, e.Name, ident{})
	}
	for i, e := range f.Lines {
		add(KindLine, "lines", i, e.ID, e.Name, e.Site)
	}
	for i, e := range f.Machines {
		add(KindMachine, "machines", i, e.ID, e.Name, e.Line)
	}
	for i, e := range f.Signals {
		add(KindSignal, "signals", i, e.ID, e.Name, e.Machine)
	}
	for i, e := range f.SKUs {
		add(KindSKU, "skus", i, e.ID, e.Name, ident{})
	}
	for i, e := range f.Channels {
		add(KindChannel, "channels", i, e.ID, e.Name, ident{})
	}
	for i, e := range f.Segments {
		add(KindSegment, "segments", i, e.ID, e.Name, ident{})
	}
	return es
}

// parentKey is the YAML key holding a node's parent, and parentKind the kind it must name.
var parentKey = map[Kind]string{KindLine: "site", KindMachine: "line", KindSignal: "machine"}

func parentKind(k Kind) Kind {
	switch k {
	case KindLine:
		return KindSite
	case KindMachine:
		return KindLine
	case KindSignal:
		return KindMachine
	}
	return kindNone
}

// checkID says why s cannot be the id of a node of kind k. Sites, lines, SKUs, channels and
// segments end up as single tokens of NATS subjects and KV keys; machines and signals are dotted
// names like the agent's signal names (line1.press.parts), each part such a token.
func checkID(k Kind, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%q contains the control character %q", s, s[i])
	}
	if k != KindMachine && k != KindSignal {
		return signal.CheckToken(s)
	}
	for part := range strings.SplitSeq(s, ".") {
		if part == "" {
			return fmt.Errorf("%q has an empty part: a %s id is a dotted name such as line1.press.parts, without leading, trailing or double dots", s, k)
		}
		if err := signal.CheckToken(part); err != nil {
			return fmt.Errorf("%q: part %w", s, err)
		}
	}
	return nil
}

// declared is where an id was first declared.
type declared struct {
	kind Kind
	path string
	line int
}

// validate reports every problem of the decoded file through d and returns the nodes and edges
// it found valid. The caller builds a graph only when d has no problems at all.
func validate(d *config.Decoder, f *file) ([]entry, []Edge) {
	if strings.TrimSpace(f.Version) == "" {
		d.Errorf(nil, "version", "required: a label for this version of the graph, e.g. 2026-12-01.1")
	}
	entries := f.entries()
	ids := make(map[string]declared, len(entries))
	for _, e := range entries {
		p := config.Join(e.path, "id")
		switch {
		case e.id.bad:
			continue
		case e.id.s == "":
			d.Errorf(nil, p, "required: the %s's id", e.kind)
			continue
		}
		if err := checkID(e.kind, e.id.s); err != nil {
			d.Errorf(nil, p, "%v", err)
		}
		if first, dup := ids[e.id.s]; dup {
			d.Errorf(nil, p, "duplicate id %q: already the %s at %s (line %d); ids are unique across all kinds", e.id.s, first.kind, first.path, first.line)
			continue
		}
		ids[e.id.s] = declared{kind: e.kind, path: e.path, line: e.id.line}
	}
	for _, e := range entries {
		want := parentKind(e.kind)
		if want == kindNone || e.parent.bad {
			continue
		}
		p := config.Join(e.path, parentKey[e.kind])
		if e.parent.s == "" {
			d.Errorf(nil, p, "required: the id of the %s's %s", e.kind, want)
			continue
		}
		checkRef(d, ids, p, e.parent.s, want, "")
	}
	return entries, validateEdges(d, f.Edges, ids)
}

// checkRef reports a reference to an id that is not declared or is of another kind than want.
func checkRef(d *config.Decoder, ids map[string]declared, path, id string, want Kind, why string) bool {
	decl, ok := ids[id]
	switch {
	case !ok && want == kindNone:
		d.Errorf(nil, path, "unknown id %q%s: no node has this id", id, why)
		return false
	case !ok:
		d.Errorf(nil, path, "unknown %s %q%s: no node has this id", want, id, why)
		return false
	case want != kindNone && decl.kind != want:
		d.Errorf(nil, path, "%q is a %s (%s, line %d), not a %s%s", id, decl.kind, decl.path, decl.line, want, why)
		return false
	}
	return true
}

func validateEdges(d *config.Decoder, edges []edgeEntry, ids map[string]declared) []Edge {
	type seenEdge struct {
		path string
		line int
	}
	seen := make(map[Edge]seenEdge, len(edges))
	var out []Edge
	for i, e := range edges {
		p := "edges" + config.Index(i)
		kind, known := parseEdgeKind(e.Kind)
		switch {
		case e.Kind == "":
			d.Errorf(nil, config.Join(p, "kind"), "required: one of %s", edgeKindList)
		case !known:
			d.Errorf(nil, config.Join(p, "kind"), "unknown edge kind %q: want one of %s", e.Kind, edgeKindList)
		}
		from, to := kindNone, kindNone
		why := ""
		if known {
			from, to = kind.ends()
			why = fmt.Sprintf(" (%s goes from a %s to a %s)", kind, from, to)
		}
		ok := true
		for _, end := range []struct {
			key  string
			id   ident
			want Kind
		}{{"from", e.From, from}, {"to", e.To, to}} {
			ep := config.Join(p, end.key)
			switch {
			case end.id.bad:
				ok = false
			case end.id.s == "":
				d.Errorf(nil, ep, "required: the id of the edge's %s end", end.key)
				ok = false
			default:
				ok = checkRef(d, ids, ep, end.id.s, end.want, why) && ok
			}
		}
		if !ok || !known {
			continue
		}
		if e.From.s == e.To.s {
			d.Errorf(nil, p, "%s edge from %q to itself", kind, e.From.s)
			continue
		}
		ed := Edge{Kind: kind, From: e.From.s, To: e.To.s}.canonical()
		if first, dup := seen[ed]; dup {
			sym := ""
			if kind.Symmetric() {
				sym = fmt.Sprintf(", in either direction since %s is symmetric", kind)
			}
			d.Errorf(nil, p, "duplicate edge %s (first at %s, line %d%s)", ed, first.path, first.line, sym)
			continue
		}
		seen[ed] = seenEdge{path: p, line: e.From.line}
		out = append(out, ed)
	}
	return out
}

// expandedWithin reports whether root, with its aliases expanded, has at most limit nodes.
func expandedWithin(root *yaml.Node, limit int) bool {
	n, stack := 0, []*yaml.Node{root}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n++; n > limit {
			return false
		}
		if x.Kind == yaml.AliasNode {
			if x.Alias != nil {
				stack = append(stack, x.Alias)
			}
			continue
		}
		stack = append(stack, x.Content...)
	}
	return true
}

// nodesIn counts the nodes written in the document, aliases counted once.
func nodesIn(root *yaml.Node) int {
	n, stack := 0, []*yaml.Node{root}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n++
		if x.Kind != yaml.AliasNode {
			stack = append(stack, x.Content...)
		}
	}
	return n
}
