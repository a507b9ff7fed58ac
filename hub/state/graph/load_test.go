package graph

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

// nodesDoc declares one node of every kind; cases append their own lines after it.
const nodesDoc = `version: v1
sites: [{id: plant1}]
lines: [{id: line1, site: plant1}]
machines: [{id: line1.press, line: line1}]
signals: [{id: line1.press.parts, machine: line1.press}]
skus: [{id: SKU-1}, {id: SKU-2}]
channels: [{id: web}]
segments: [{id: b2c}]
`

// wantProblem is one expected problem; the line is the one of the document holding mark.
type wantProblem struct {
	path, mark, msg string
}

func TestLoadProblems(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []wantProblem
	}{
		{"duplicate id across kinds", "version: v1\nchannels: [{id: web}]\nsegments: [{id: b2c}, {id: web}] # here\n", []wantProblem{
			{"segments[1].id", "# here", `duplicate id "web": already the channel at channels[0] (line 2); ids are unique across all kinds`},
		}},
		{"duplicate id in one kind", "version: v1\nskus:\n  - id: A\n  - id: B\n  - id: A # dup\n", []wantProblem{
			{"skus[2].id", "# dup", `duplicate id "A": already the sku at skus[0] (line 3)`},
		}},
		{"dangling edge end", nodesDoc + "edges:\n  - {kind: produces, from: line1, to: SKU-9} # e\n", []wantProblem{
			{"edges[0].to", "# e", `unknown sku "SKU-9" (produces goes from a line to a sku): no node has this id`},
		}},
		{"edge end of the wrong kind", nodesDoc + "edges:\n  - kind: sold_via\n    from: web # from\n    to: SKU-1 # to\n", []wantProblem{
			{"edges[0].from", "# from", `"web" is a channel (channels[0], line 7), not a sku (sold_via goes from a sku to a channel)`},
			{"edges[0].to", "# to", `"SKU-1" is a sku (skus[0], line 6), not a channel (sold_via goes from a sku to a channel)`},
		}},
		{"targets the wrong way", nodesDoc + "edges: [{kind: targets, from: b2c, to: web}] # e\n", []wantProblem{
			{"edges[0].from", "# e", `"b2c" is a segment (segments[0], line 8), not a channel (targets goes from a channel to a segment)`},
			{"edges[0].to", "# e", `"web" is a channel (channels[0], line 7), not a segment`},
		}},
		{"substitutes needs SKUs", nodesDoc + "edges: [{kind: substitutes, from: SKU-1, to: line1}] # e\n", []wantProblem{
			{"edges[0].to", "# e", `"line1" is a line (lines[0], line 3), not a sku (substitutes goes from a sku to a sku)`},
		}},
		{"unknown edge kind, ends still checked", nodesDoc + "edges:\n  - kind: produced_by # k\n    from: nowhere # f\n    to: SKU-1\n", []wantProblem{
			{"edges[0].kind", "# k", `unknown edge kind "produced_by": want one of produces, sold_via, targets, substitutes, complements`},
			{"edges[0].from", "# f", `unknown id "nowhere": no node has this id`},
		}},
		{"edge without kind or end", nodesDoc + "edges:\n  - {from: SKU-1} # e\n", []wantProblem{
			{"edges[0].kind", "# e", "required: one of produces, sold_via"},
			{"edges[0].to", "# e", "required: the id of the edge's to end"},
		}},
		{"self-loop", nodesDoc + "edges: [{kind: complements, from: SKU-1, to: SKU-1}] # e\n", []wantProblem{
			{"edges[0]", "# e", `complements edge from "SKU-1" to itself`},
		}},
		{"duplicate edge", nodesDoc + "edges:\n  - {kind: produces, from: line1, to: SKU-1} # first\n  - {kind: produces, from: line1, to: SKU-1} # again\n", []wantProblem{
			{"edges[1]", "# again", "duplicate edge produces line1 → SKU-1 (first at edges[0], line 10)"},
		}},
		{"symmetric edge written both ways", nodesDoc + "edges:\n  - {kind: substitutes, from: SKU-1, to: SKU-2}\n  - {kind: substitutes, from: SKU-2, to: SKU-1} # again\n", []wantProblem{
			{"edges[1]", "# again", "duplicate edge substitutes SKU-1 — SKU-2 (first at edges[0], line 10, in either direction since substitutes is symmetric)"},
		}},
		{"same pair, other kind, other direction", nodesDoc + "edges:\n  - {kind: substitutes, from: SKU-1, to: SKU-2}\n  - {kind: complements, from: SKU-2, to: SKU-1}\n", nil},
		{"missing parents", `version: v1
sites: [{id: plant1}]
lines: [{id: line1, site: plant9}] # line
machines: [{id: m1, line: line9}] # machine
signals: [{id: s1, machine: m9}] # signal
`, []wantProblem{
			{"lines[0].site", "# line", `unknown site "plant9": no node has this id`},
			{"machines[0].line", "# machine", `unknown line "line9"`},
			{"signals[0].machine", "# signal", `unknown machine "m9"`},
		}},
		{"parent of the wrong kind", `version: v1
sites: [{id: plant1}]
lines: [{id: line1, site: plant1}]
machines: [{id: m1, line: plant1}] # machine
signals: [{id: s1, machine: line1}] # signal
`, []wantProblem{
			{"machines[0].line", "# machine", `"plant1" is a site (sites[0], line 2), not a line`},
			{"signals[0].machine", "# signal", `"line1" is a line (lines[0], line 3), not a machine`},
		}},
		{"parent left out", "version: v1\nlines:\n  - id: line1 # line\n", []wantProblem{
			{"lines[0].site", "# line", "required: the id of the line's site"},
		}},
		{"empty and missing ids", "version: v1\nskus:\n  - {id: \"\"} # empty\n  - {name: no id} # none\n", []wantProblem{
			{"skus[0].id", "# empty", "required: the sku's id"},
			{"skus[1].id", "# none", "required: the sku's id"},
		}},
		{"ids that are not subject tokens", `version: v1
sites: [{id: "plant 1"}] # site
lines: [{id: line.1, site: "plant 1"}] # line
skus: [{id: "SKU*"}] # sku
channels: [{id: "web>"}] # channel
segments: [{id: "b2c\t"}] # segment
`, []wantProblem{
			{"sites[0].id", "# site", `"plant 1" contains ' ', which cannot appear in a NATS subject token`},
			{"lines[0].id", "# line", `"line.1" contains '.'`},
			{"skus[0].id", "# sku", `"SKU*" contains '*'`},
			{"channels[0].id", "# channel", `"web>" contains '>'`},
			{"segments[0].id", "# segment", `contains the control character '\t'`},
		}},
		{"dotted ids", `version: v1
sites: [{id: p}]
lines: [{id: l, site: p}]
machines: [{id: l.press, line: l}, {id: .press, line: l}] # machines
signals:
  - {id: l..parts, machine: l.press} # empty part
  - {id: l.press.*, machine: l.press} # wildcard
  - {id: l.press.a b, machine: l.press} # space
  - {id: l.press., machine: l.press} # trailing
`, []wantProblem{
			{"machines[1].id", "# machines", `".press" has an empty part: a machine id is a dotted name such as line1.press.parts`},
			{"signals[0].id", "# empty part", `"l..parts" has an empty part: a signal id is a dotted name`},
			{"signals[1].id", "# wildcard", `"l.press.*": part "*" contains '*', which cannot appear in a NATS subject token`},
			{"signals[2].id", "# space", `"l.press.a b": part "a b" contains ' '`},
			{"signals[3].id", "# trailing", `"l.press." has an empty part`},
		}},
		{"control character", "version: v1\nskus: [{id: \"A\\u0001\"}] # c\n", []wantProblem{
			{"skus[0].id", "# c", `contains the control character '\x01'`},
		}},
		{"unknown field", "version: v1\nskus:\n  - {id: A, nmae: x} # typo\nsku: [] # section\n", []wantProblem{
			{"skus[0].nmae", "# typo", `unknown field "nmae" (did you mean "name"?)`},
			{"sku", "# section", `unknown field "sku" (did you mean "skus"?)`},
		}},
		{"wrong types, no cascade", "version: v1\nskus: {id: A} # map\nchannels:\n  - {id: [web]} # list\nedges:\n  - {kind: produces, from: {a: 1}, to: A} # from\n", []wantProblem{
			{"skus", "# map", "expected a list, got a mapping"},
			{"channels[0].id", "# list", "expected a single value, got a list"},
			{"edges[0].from", "# from", "expected a single value, got a mapping"},
			{"edges[0].to", "# from", `unknown sku "A"`},
		}},
		{"version missing", "skus: [{id: A}]\n", []wantProblem{
			{"version", "skus", "required: a label for this version of the graph"},
		}},
		{"empty document", "", []wantProblem{
			{"version", "", "required: a label"},
		}},
		{"not a mapping", "- a\n- b\n", []wantProblem{
			{"", "- a", "expected a mapping, got a list"},
			{"version", "- a", "required"},
		}},
		{"broken YAML", "version: v1\nskus: [{id: A}\nchannels: []\n", []wantProblem{
			{"", "?", "did not find expected ',' or ']'"},
		}},
		{"two documents", "version: v1\n---\nversion: v2 # second\n", []wantProblem{
			{"", "?", "a second YAML document (after ---): a graph file holds one"},
		}},
		{"broken second document", "version: v1\n---\n[x # second\n", []wantProblem{
			{"", "?", "did not find expected"},
		}},
		{"merge key", "version: v1\nx: &x {name: a}\nskus: [{<<: *x, id: A}] # merge\n", []wantProblem{
			{"x", "x: &x", `unknown field "x"`},
			{"skus[0]", "# merge", "merge keys (<<) are not supported"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Load([]byte(tc.doc))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				return
			}
			if g != nil || err == nil {
				t.Fatalf("loaded a graph, want problems")
			}
			var ps config.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error %T is not config.Problems: %v", err, err)
			}
			checkProblems(t, tc.doc, ps, tc.want)
		})
	}
}

func checkProblems(t *testing.T, doc string, ps config.Problems, want []wantProblem) {
	t.Helper()
	if len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(ps), len(want), ps)
	}
	lines := strings.Split(doc, "\n")
	for _, w := range want {
		line := 0
		if w.mark == "?" { // yaml.v3's idea of the line: any, as long as there is one
			for _, p := range ps {
				if p.Path == w.path && strings.Contains(p.Msg, w.msg) && p.Line > 0 {
					line = p.Line
				}
			}
			if line == 0 {
				t.Errorf("no problem with a line containing %q; got:\n%v", w.msg, ps)
				continue
			}
		} else if w.mark != "" {
			for i, l := range lines {
				if strings.Contains(l, w.mark) {
					line = i + 1
					break
				}
			}
			if line == 0 {
				t.Fatalf("bad test: mark %q not in the document", w.mark)
			}
		}
		found := false
		for _, p := range ps {
			if p.Path == w.path && p.Line == line && strings.Contains(p.Msg, w.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem at %s line %d containing %q; got:\n%v", w.path, line, w.msg, ps)
		}
	}
}

func TestLoadLimits(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		_, err := Load(make([]byte, MaxFileSize+1))
		if err == nil || !strings.Contains(err.Error(), "larger than the limit of 16 MiB") {
			t.Fatalf("err = %v", err)
		}
		p := filepath.Join(t.TempDir(), "big.yaml")
		if err := os.WriteFile(p, []byte("version: v1\n"+strings.Repeat("#\n", MaxFileSize/2)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = LoadFile(p)
		if err == nil || !strings.Contains(err.Error(), p+": the graph is larger than the limit of 16 MiB") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("alias bomb", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("version: v1\nx00: &a00 [a, a, a, a, a, a, a, a, a, a]\n")
		for i := 1; i < 12; i++ {
			b.WriteString("x" + itoa(i) + ": &a" + itoa(i) + " [")
			for j := range 10 {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString("*a" + itoa(i-1))
			}
			b.WriteString("]\n")
		}
		// 10^12 nodes once expanded. The config package may refuse it first (its own alias
		// limit) or leave it to Load's; either way it is a problem naming the aliases.
		_, err := Load([]byte(b.String()))
		var ps config.Problems
		if !errors.As(err, &ps) || !strings.Contains(err.Error(), "alias") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("large but legal", func(t *testing.T) {
		// Graphs may be up to MaxFileSize, past the config package's default limit for agent
		// configs: a catalogue of 20,000 SKUs with long names is about 4.7 MB.
		var b strings.Builder
		b.WriteString("version: v1\nskus:\n")
		name := strings.Repeat("x", 200)
		for i := range 20_000 {
			fmt.Fprintf(&b, "  - {id: SKU-%05d, name: %s}\n", i, name)
		}
		if b.Len() <= 4<<20 {
			t.Fatalf("bad test: %d bytes", b.Len())
		}
		g, err := Load([]byte(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(g.SKUs()); n != 20_000 {
			t.Fatalf("%d SKUs", n)
		}
	})
	t.Run("a few aliases are fine", func(t *testing.T) {
		g, err := Load([]byte(nodesDoc + "x: &n web\nedges: [{kind: targets, from: *n, to: b2c}]\n"))
		if err == nil {
			t.Fatalf("loaded %v; want the unknown key x refused", g)
		}
		g, err = Load([]byte("version: &v v1\nskus: [{id: A, name: *v}]\n"))
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := g.Node("A"); n.Name != "v1" {
			t.Fatalf("alias not followed: %+v", n)
		}
	})
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "graph.yaml")
	if err := os.WriteFile(p, []byte("version: v1\nskus: [{id: A}]\nedges: [{kind: sold_via, from: A, to: web}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(p)
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != p {
		t.Fatalf("err = %#v, want a *FileError for %s", err, p)
	}
	want := p + `:3: edges[0].to: unknown channel "web" (sold_via goes from a sku to a channel): no node has this id`
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}
	var ps config.Problems
	if !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("FileError does not unwrap to the problems: %v", err)
	}
	_, err = LoadFile(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("err = %v", err)
	}
}
