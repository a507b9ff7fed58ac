package graph

import (
	"strings"
	"testing"
)

// reorderedDoc is queryDoc rewritten: other version label, sections and entries in another order,
// block style, comments, the symmetric edges turned around. Its content is the same.
const reorderedDoc = `# the same graph, written by someone else
edges:
  - {kind: complements, from: C, to: B}   # turned around
  - {kind: substitutes, from: A, to: C}   # turned around
  - {kind: substitutes, from: B, to: A}   # turned around
  - {kind: targets, from: shop, to: b2b}
  - {kind: targets, from: shop, to: b2c}
  - {kind: targets, from: web, to: b2c}
  - {kind: sold_via, from: B, to: shop}
  - {kind: sold_via, from: A, to: shop}
  - {kind: sold_via, from: A, to: web}
  - kind: produces
    from: l3
    to: C
  - {kind: produces, from: l1, to: B}
  - {kind: produces, from: l2, to: A}
  - {kind: produces, from: l1, to: A}
segments:
  - id: b2b
  - id: b2c
channels: [{id: shop}, {id: web}]
skus: [{id: D}, {id: C}, {id: B}, {id: A}]
signals:
  - machine: l3.pack
    id: l3.pack.parts
  - {id: l1.press.parts, machine: l1.press}
machines: [{line: l3, id: l3.pack}, {id: l1.press, line: l1}]
lines: [{id: l3, site: p2}, {id: l2, site: p1}, {id: l1, site: p1}]
sites: [{id: p2}, {name: "Lyon", id: p1}]
version: "another label"
`

func TestHash(t *testing.T) {
	g := mustLoad(t, queryDoc)
	if len(g.Hash()) != 64 || strings.Trim(g.Hash(), "0123456789abcdef") != "" {
		t.Fatalf("hash %q is not sha256 hex", g.Hash())
	}
	// Pinned: a change of the canonical encoding must come with a new canonicalFormat, since the
	// hub records hashes and compares them across releases.
	const pinned = "0c091e3247934046992a0b20888dc6daf06efd5a9142f2260345c78bdb293d75"
	if g.Hash() != pinned {
		t.Errorf("hash of queryDoc is %s, was %s: bump canonicalFormat if the encoding changed on purpose", g.Hash(), pinned)
	}
	r := mustLoad(t, reorderedDoc)
	if r.Hash() != g.Hash() {
		t.Fatalf("same content, different hash:\n%s\n%s", g.Hash(), r.Hash())
	}
	if r.Version() != "another label" || g.Version() != "q1" {
		t.Fatalf("versions %q %q", r.Version(), g.Version())
	}
	if c := Diff(g, r); !c.Empty() {
		t.Fatalf("same content, diff %v", c)
	}
	for _, change := range []struct{ name, old, new string }{
		{"edge end", "{kind: produces, from: l2, to: A}", "{kind: produces, from: l2, to: B}"},
		{"edge kind", "{kind: substitutes, from: A, to: B}", "{kind: complements, from: A, to: B}"},
		{"edge dropped", "  - {kind: targets, from: shop, to: b2b}\n", ""},
		{"name", "{id: p1, name: Lyon}", "{id: p1, name: Lyons}"},
		{"name added", "{id: D}", "{id: D, name: d}"},
		{"parent", "{id: l2, site: p1}", "{id: l2, site: p2}"},
		{"node added", "{id: D}", "{id: D}, {id: E}"},
		{"kind of a node", "channels: [{id: web}, {id: shop}]", "channels: [{id: web}, {id: shop}, {id: x}]"},
	} {
		doc := strings.Replace(queryDoc, change.old, change.new, 1)
		if doc == queryDoc {
			t.Fatalf("bad test %s: %q not in the document", change.name, change.old)
		}
		if h := mustLoad(t, doc).Hash(); h == g.Hash() {
			t.Errorf("%s: changed content, same hash", change.name)
		}
	}
	// The same ids as another kind of node are another graph.
	a := mustLoad(t, "version: v\nchannels: [{id: x}]\n")
	b := mustLoad(t, "version: v\nsegments: [{id: x}]\n")
	if a.Hash() == b.Hash() {
		t.Error("a channel and a segment of the same id hash alike")
	}
	// Length prefixes: moving text from a name into an id cannot collide.
	a = mustLoad(t, "version: v\nskus: [{id: ab, name: c}]\n")
	b = mustLoad(t, "version: v\nskus: [{id: a, name: bc}]\n")
	if a.Hash() == b.Hash() {
		t.Error("ab/c and a/bc hash alike")
	}
}

func TestFormat(t *testing.T) {
	for _, doc := range []string{queryDoc, reorderedDoc, "version: v\n", "version: '${X} $$ #x: \"y\"'\nskus: [{id: \"$A\", name: \"null\"}, {id: \"~\", name: \"- a: b\"}]\n"} {
		g := mustLoad(t, doc)
		out, err := g.Format()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Load(out)
		if err != nil {
			t.Fatalf("formatted graph does not load:\n%v\n%s", err, out)
		}
		if again.Hash() != g.Hash() || again.Version() != g.Version() {
			t.Fatalf("format changed the graph:\n%s", out)
		}
		out2, _ := again.Format()
		if string(out2) != string(out) {
			t.Fatalf("format is not a fixed point:\n%s\n---\n%s", out, out2)
		}
	}
	g := mustLoad(t, "version: '${X}'\nskus: [{id: A, name: \"$5 off\"}]\n")
	if n, _ := g.Node("A"); g.Version() != "${X}" || n.Name != "$5 off" {
		t.Fatalf("values are not literal: %q %q", g.Version(), n.Name)
	}
}

func TestDiff(t *testing.T) {
	old := mustLoad(t, queryDoc)
	doc := queryDoc
	for _, r := range [][2]string{
		{"{id: C}, {id: D}", "{id: C}, {id: E, name: new}"},                        // D removed, E added
		{"{id: l2, site: p1}", "{id: l2, site: p2}"},                               // l2 moved
		{"{id: p1, name: Lyon}", "{id: p1, name: Lyon-Est}"},                       // p1 renamed
		{"{id: l3.pack, line: l3}", "{id: l3.pack, line: l1}"},                     // machine moved
		{"  - {kind: complements, from: B, to: C}\n", ""},                          // edge removed
		{"{kind: produces, from: l3, to: C}", "{kind: produces, from: l3, to: E}"}, // edge replaced
		{"channels: [{id: web}, {id: shop}]", "channels: [{id: web}, {id: shop}]\n# shop stays"},
	} {
		if !strings.Contains(doc, r[0]) {
			t.Fatalf("bad test: %q", r[0])
		}
		doc = strings.Replace(doc, r[0], r[1], 1)
	}
	cur := mustLoad(t, doc)
	c := Diff(old, cur)
	want := Changes{
		AddedNodes:   []Node{{ID: "E", Kind: KindSKU, Name: "new"}},
		RemovedNodes: []Node{{ID: "D", Kind: KindSKU}},
		ChangedNodes: []Node{{ID: "p1", Kind: KindSite, Name: "Lyon-Est"}, {ID: "l2", Kind: KindLine, Parent: "p2"}, {ID: "l3.pack", Kind: KindMachine, Parent: "l1"}},
		AddedEdges:   []Edge{{Kind: Produces, From: "l3", To: "E"}},
		RemovedEdges: []Edge{{Kind: Produces, From: "l3", To: "C"}, {Kind: Complements, From: "B", To: "C"}},
	}
	if got, w := c.String(), want.String(); got != w || len(c.ChangedNodes) != 3 {
		t.Fatalf("diff\n%s\nwant\n%s", got, w)
	}
	if fmtChanges(c) != fmtChanges(want) {
		t.Fatalf("diff\n%s\nwant\n%s", fmtChanges(c), fmtChanges(want))
	}
	if s := c.String(); s != "nodes +1 (sku E) -1 (sku D) ~3 (site p1, line l2, machine l3.pack); edges +1 (produces l3 → E) -2 (produces l3 → C, complements B — C)" {
		t.Fatalf("summary %q", s)
	}
	back := Diff(cur, old)
	if len(back.AddedNodes) != 1 || back.AddedNodes[0].ID != "D" || len(back.RemovedEdges) != 1 || len(back.AddedEdges) != 2 {
		t.Fatalf("reverse diff %v", back)
	}

	first := Diff(nil, old)
	if len(first.AddedNodes) != 17 || len(first.AddedEdges) != 13 || len(first.RemovedNodes)+len(first.ChangedNodes)+len(first.RemovedEdges) != 0 {
		t.Fatalf("first load %v", first)
	}
	if !strings.Contains(first.String(), "nodes +17 (site p1, site p2, line l1, line l2, line l3, 12 more)") {
		t.Fatalf("first load summary %q", first.String())
	}
	if c := Diff(old, old); !c.Empty() || c.String() != "no changes" {
		t.Fatalf("no change: %v", c)
	}
	// A node that changes kind is removed and added, not changed.
	a := mustLoad(t, "version: v\nchannels: [{id: x}]\n")
	b := mustLoad(t, "version: v\nsegments: [{id: x}]\n")
	if c := Diff(a, b); len(c.AddedNodes) != 1 || len(c.RemovedNodes) != 1 || len(c.ChangedNodes) != 0 {
		t.Fatalf("kind change %v", c)
	}
}

func fmtChanges(c Changes) string {
	var b strings.Builder
	for _, l := range [][]Node{c.AddedNodes, c.RemovedNodes, c.ChangedNodes} {
		for _, n := range l {
			b.WriteString(n.Kind.String() + "/" + n.ID + "/" + n.Name + "/" + n.Parent + " ")
		}
		b.WriteString("| ")
	}
	for _, l := range [][]Edge{c.AddedEdges, c.RemovedEdges} {
		for _, e := range l {
			b.WriteString(e.String() + " ")
		}
		b.WriteString("| ")
	}
	return b.String()
}
