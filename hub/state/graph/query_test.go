package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// queryDoc is a small graph that every query has something to find in. C substitutes A is
// written C → A on purpose: substitutes is symmetric.
const queryDoc = `version: q1
sites: [{id: p1, name: Lyon}, {id: p2}]
lines: [{id: l1, site: p1}, {id: l2, site: p1}, {id: l3, site: p2}]
machines: [{id: l1.press, line: l1}, {id: l3.pack, line: l3}]
signals: [{id: l1.press.parts, machine: l1.press}, {id: l3.pack.parts, machine: l3.pack}]
skus: [{id: A}, {id: B}, {id: C}, {id: D}]
channels: [{id: web}, {id: shop}]
segments: [{id: b2c}, {id: b2b}]
edges:
  - {kind: produces, from: l1, to: A}
  - {kind: produces, from: l2, to: A}
  - {kind: produces, from: l1, to: B}
  - {kind: produces, from: l3, to: C}
  - {kind: sold_via, from: A, to: web}
  - {kind: sold_via, from: A, to: shop}
  - {kind: sold_via, from: B, to: shop}
  - {kind: targets, from: web, to: b2c}
  - {kind: targets, from: shop, to: b2c}
  - {kind: targets, from: shop, to: b2b}
  - {kind: substitutes, from: A, to: B}
  - {kind: substitutes, from: C, to: A}
  - {kind: complements, from: B, to: C}
`

func mustLoad(t testing.TB, doc string) *Graph {
	t.Helper()
	g, err := Load([]byte(doc))
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	return g
}

// strs prints results as their explanations.
func strs(rs []Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func TestQueries(t *testing.T) {
	g := mustLoad(t, queryDoc)
	type query func(string) ([]Result, error)
	cases := []struct {
		name string
		q    query
		id   string
		want []string
	}{
		{"ProducersOf", g.ProducersOf, "A", []string{"A ←produces— l1 @ p1", "A ←produces— l2 @ p1"}},
		{"ProducersOf", g.ProducersOf, "C", []string{"C ←produces— l3 @ p2"}},
		{"ProducersOf", g.ProducersOf, "D", []string{}},
		{"ChannelsOf", g.ChannelsOf, "A", []string{"A —sold_via→ shop", "A —sold_via→ web"}},
		{"ChannelsOf", g.ChannelsOf, "C", []string{}},
		{"SegmentsOf", g.SegmentsOf, "A", []string{"A —sold_via→ shop —targets→ b2b", "A —sold_via→ shop —targets→ b2c"}},
		{"SegmentsOf", g.SegmentsOf, "B", []string{"B —sold_via→ shop —targets→ b2b", "B —sold_via→ shop —targets→ b2c"}},
		{"SegmentsOf", g.SegmentsOf, "D", []string{}},
		{"Substitutes", g.Substitutes, "A", []string{"A —substitutes— B", "A —substitutes— C"}},
		{"Substitutes", g.Substitutes, "C", []string{"C —substitutes— A"}},
		{"Complements", g.Complements, "C", []string{"C —complements— B"}},
		{"Complements", g.Complements, "B", []string{"B —complements— C"}},
		{"Complements", g.Complements, "A", []string{}},
		{"SKUsOf", g.SKUsOf, "l1", []string{"l1 —produces→ A", "l1 —produces→ B"}},
		{"SKUsOf", g.SKUsOf, "l2", []string{"l2 —produces→ A"}},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/"+tc.id, func(t *testing.T) {
			rs, err := tc.q(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := strs(rs); !slices.Equal(got, tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
			for _, r := range rs {
				if r.Path[0].ID != tc.id || r.Path[len(r.Path)-1].ID != r.ID {
					t.Fatalf("path %v does not go from %s to %s", r.Path, tc.id, r.ID)
				}
				checkPath(t, g, r.Path)
			}
		})
	}

	r, err := g.LineOfSignal("l3.pack.parts")
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "l3" || r.Kind != KindLine || r.Site != "p2" || r.String() != "l3.pack.parts —part_of→ l3.pack —part_of→ l3 @ p2" {
		t.Fatalf("LineOfSignal: %+v %s", r, r)
	}
	r, err = g.SiteOfLine("l2")
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "p1" || r.Kind != KindSite || r.Name != "Lyon" || r.String() != "l2 —part_of→ p1" {
		t.Fatalf("SiteOfLine: %+v %s", r, r)
	}
	// A producer's step is reversed (declared line → SKU, walked SKU → line).
	ps, _ := g.ProducersOf("C")
	if want := (Path{{ID: "C", Kind: KindSKU}, {ID: "l3", Kind: KindLine, Edge: Produces, Reverse: true}}); !slices.Equal(ps[0].Path, want) {
		t.Fatalf("path %#v, want %#v", ps[0].Path, want)
	}
	js, err := json.Marshal(ps[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"l3","kind":"line","parent":"p2","site":"p2","path":[{"id":"C","kind":"sku"},{"id":"l3","kind":"line","edge":"produces","reverse":true}]}`; string(js) != want {
		t.Fatalf("JSON %s\nwant %s", js, want)
	}
}

func TestListings(t *testing.T) {
	g := mustLoad(t, queryDoc)
	ids := func(ns []Node) string {
		s := make([]string, len(ns))
		for i, n := range ns {
			s[i] = n.ID
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct{ got, want string }{
		{ids(g.Sites()), "p1 p2"},
		{ids(g.Lines()), "l1 l2 l3"},
		{ids(g.SKUs()), "A B C D"},
		{ids(g.Channels()), "shop web"},
		{ids(g.Segments()), "b2b b2c"},
		{ids(g.Nodes(KindMachine)), "l1.press l3.pack"},
		{ids(g.Nodes(KindSignal)), "l1.press.parts l3.pack.parts"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if n, ok := g.Node("l3.pack"); !ok || n != (Node{ID: "l3.pack", Kind: KindMachine, Parent: "l3"}) {
		t.Fatalf("Node: %+v %v", n, ok)
	}
	if _, ok := g.Node("nope"); ok {
		t.Fatal("Node found an unknown id")
	}
	if len(g.Edges()) != 13 || g.Edges()[len(g.Edges())-1] != (Edge{Kind: Complements, From: "B", To: "C"}) {
		t.Fatalf("edges %v", g.Edges())
	}
	// The substitutes edge written C → A is kept A — C.
	if !slices.Contains(g.Edges(), Edge{Kind: Substitutes, From: "A", To: "C"}) {
		t.Fatalf("symmetric edge not canonical: %v", g.Edges())
	}
	// Callers get copies: changing one does not change the graph.
	g.Edges()[0].From = "x"
	g.SKUs()[0].ID = "x"
	if g.Edges()[0].From == "x" || g.SKUs()[0].ID == "x" {
		t.Fatal("a listing shares the graph's memory")
	}
}

func TestQueryErrors(t *testing.T) {
	g := mustLoad(t, queryDoc)
	for _, c := range []struct {
		name    string
		call    func() error
		target  error
		message string
	}{
		{"unknown sku", func() error { _, err := g.ProducersOf("Z-9"); return err }, ErrUnknown, `graph: unknown id "Z-9" (no sku has this id)`},
		{"line for a sku", func() error { _, err := g.ChannelsOf("l1"); return err }, ErrWrongKind, `graph: wrong kind of node: "l1" is a line, not a sku`},
		{"sku for a line", func() error { _, err := g.SKUsOf("A"); return err }, ErrWrongKind, `"A" is a sku, not a line`},
		{"segments of unknown", func() error { _, err := g.SegmentsOf(""); return err }, ErrUnknown, `unknown id ""`},
		{"signal unknown", func() error { _, err := g.LineOfSignal("l9.x"); return err }, ErrUnknown, `"l9.x" (no signal has this id)`},
		{"signal is a machine", func() error { _, err := g.LineOfSignal("l1.press"); return err }, ErrWrongKind, `"l1.press" is a machine, not a signal`},
		{"site of a site", func() error { _, err := g.SiteOfLine("p1"); return err }, ErrWrongKind, `"p1" is a site, not a line`},
		{"substitutes of a channel", func() error { _, err := g.Substitutes("web"); return err }, ErrWrongKind, `"web" is a channel`},
		{"complements unknown", func() error { _, err := g.Complements("E"); return err }, ErrUnknown, `"E"`},
		{"paths from unknown", func() error { _, _, err := g.Paths("E", "A", 3); return err }, ErrUnknown, `graph: paths from: unknown id "E"`},
		{"paths to unknown", func() error { _, _, err := g.Paths("A", "E", 3); return err }, ErrUnknown, `graph: paths to: unknown id "E"`},
	} {
		err := c.call()
		if !errors.Is(err, c.target) || !strings.Contains(err.Error(), c.message) {
			t.Errorf("%s: err = %v, want %v containing %q", c.name, err, c.target, c.message)
		}
	}
	if _, _, err := g.Paths("A", "B", -1); err == nil || !strings.Contains(err.Error(), "negative depth -1") {
		t.Errorf("negative depth: %v", err)
	}
}

func TestPaths(t *testing.T) {
	g := mustLoad(t, queryDoc)
	ps, truncated, err := g.Paths("l1.press.parts", "b2b", 5)
	if err != nil || truncated {
		t.Fatal(err, truncated)
	}
	want := []string{
		"l1.press.parts —part_of→ l1.press —part_of→ l1 —produces→ A —sold_via→ shop —targets→ b2b",
		"l1.press.parts —part_of→ l1.press —part_of→ l1 —produces→ B —sold_via→ shop —targets→ b2b",
	}
	if got := pathStrs(ps); !slices.Equal(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	// One more edge allows detours: still shortest first, each path simple and made of edges.
	ps, _, err = g.Paths("l1.press.parts", "b2b", 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) <= 2 || !slices.Equal(pathStrs(ps[:2]), want) {
		t.Fatalf("deeper search lost the shortest paths: %q", pathStrs(ps))
	}
	for i, p := range ps {
		checkPath(t, g, p)
		if i > 0 && len(p) < len(ps[i-1]) {
			t.Fatalf("not shortest first: %v before %v", ps[i-1], p)
		}
		if p[0].ID != "l1.press.parts" || p[len(p)-1].ID != "b2b" || len(p)-1 > 7 {
			t.Fatalf("bad path %v", p)
		}
	}
	// Too short a depth finds nothing; so does a node with no edges.
	if ps, tr, err := g.Paths("l1.press.parts", "b2b", 4); err != nil || tr || len(ps) != 0 {
		t.Fatalf("depth 4: %v %v %v", ps, tr, err)
	}
	if ps, tr, err := g.Paths("D", "A", 8); err != nil || tr || len(ps) != 0 || ps == nil {
		t.Fatalf("isolated: %#v %v %v", ps, tr, err)
	}
	if ps, _, err := g.Paths("A", "A", 3); err != nil || len(ps) != 1 || ps[0].String() != "A" {
		t.Fatalf("to itself: %v %v", ps, err)
	}
	// Symmetric edges are walked both ways and print without an arrow.
	if ps, _, _ := g.Paths("C", "B", 1); len(ps) != 1 || ps[0].String() != "C —complements— B" {
		t.Fatalf("C to B: %q", pathStrs(ps))
	}
	// A depth past MaxPathDepth is capped and says so.
	if _, tr, err := g.Paths("A", "B", MaxPathDepth+1); err != nil || !tr {
		t.Fatalf("depth past the cap: truncated=%v err=%v", tr, err)
	}
}

// TestPathsBounded: on a clique of substitutes the number of simple paths explodes; Paths stops
// at MaxPaths, shortest first, and says it stopped.
func TestPathsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: v1\nskus:\n")
	for i := range 40 {
		fmt.Fprintf(&b, "  - {id: S%02d}\n", i)
	}
	b.WriteString("edges:\n")
	for i := range 40 {
		for j := i + 1; j < 40; j++ {
			fmt.Fprintf(&b, "  - {kind: substitutes, from: S%02d, to: S%02d}\n", i, j)
		}
	}
	g := mustLoad(t, b.String())
	ps, truncated, err := g.Paths("S00", "S01", MaxPathDepth)
	if err != nil {
		t.Fatal(err)
	}
	if !truncated || len(ps) != MaxPaths {
		t.Fatalf("%d paths, truncated=%v; want %d, true", len(ps), truncated, MaxPaths)
	}
	if ps[0].String() != "S00 —substitutes— S01" || len(ps[1]) != 3 {
		t.Fatalf("not shortest first: %v, %v", ps[0], ps[1])
	}
	// Exactly the 38 two-edge paths fit with the direct one: nothing is cut, nothing is claimed cut.
	ps, truncated, _ = g.Paths("S00", "S01", 2)
	if truncated || len(ps) != 39 {
		t.Fatalf("depth 2: %d paths, truncated=%v; want 39, false", len(ps), truncated)
	}
}

func pathStrs(ps []Path) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// checkPath asserts a path is simple and each of its steps follows an edge of the graph in the
// direction it claims.
func checkPath(t testing.TB, g *Graph, p Path) {
	t.Helper()
	seen := map[string]bool{}
	for i, s := range p {
		n, ok := g.Node(s.ID)
		if !ok || n.Kind != s.Kind {
			t.Fatalf("path %v: step %d names %s %q, which the graph does not hold", p, i, s.Kind, s.ID)
		}
		if seen[s.ID] {
			t.Fatalf("path %v visits %s twice", p, s.ID)
		}
		seen[s.ID] = true
		if i == 0 {
			if s.Edge != edgeNone || s.Reverse {
				t.Fatalf("path %v: first step has an edge", p)
			}
			continue
		}
		from, to := p[i-1].ID, s.ID
		if s.Reverse {
			from, to = to, from
		}
		if !hasEdge(g, s.Edge, from, to) {
			t.Fatalf("path %v: no %s edge %s → %s", p, s.Edge, from, to)
		}
	}
}

func hasEdge(g *Graph, k EdgeKind, from, to string) bool {
	if k == PartOf {
		n, ok := g.Node(from)
		return ok && n.Parent == to
	}
	return slices.Contains(g.Edges(), Edge{Kind: k, From: from, To: to}.canonical())
}

// TestConcurrentReaders runs every query from many goroutines on one graph; -race checks that
// reading shares nothing mutable, and every answer must equal the one computed alone.
func TestConcurrentReaders(t *testing.T) {
	g := mustLoad(t, queryDoc)
	run := func() string {
		var b strings.Builder
		for _, sku := range []string{"A", "B", "C", "D"} {
			for _, q := range []func(string) ([]Result, error){g.ProducersOf, g.ChannelsOf, g.SegmentsOf, g.Substitutes, g.Complements} {
				rs, err := q(sku)
				fmt.Fprintln(&b, strs(rs), err)
			}
		}
		for _, l := range g.Lines() {
			rs, err := g.SKUsOf(l.ID)
			r, err2 := g.SiteOfLine(l.ID)
			fmt.Fprintln(&b, strs(rs), err, r, err2)
		}
		for _, s := range g.Nodes(KindSignal) {
			r, err := g.LineOfSignal(s.ID)
			fmt.Fprintln(&b, r, err)
		}
		ps, tr, err := g.Paths("l1.press.parts", "b2b", 6)
		fmt.Fprintln(&b, pathStrs(ps), tr, err, g.Hash(), g.Version(), g.Edges(), Diff(nil, g))
		return b.String()
	}
	want := run()
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			for range 20 {
				got[i] = run()
			}
		})
	}
	wg.Wait()
	for i, s := range got {
		if s != want {
			t.Fatalf("reader %d got a different answer:\n%s\nwant:\n%s", i, s, want)
		}
	}
}
