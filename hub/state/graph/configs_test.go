package graph

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/sim"
)

const configsDir = "../../../configs"

// TestConfigGraphs loads every graph file shipped under configs/, so none can rot.
func TestConfigGraphs(t *testing.T) {
	var files []string
	for _, pattern := range []string{"graph*.yaml", "*/graph*.yaml"} {
		m, err := filepath.Glob(filepath.Join(configsDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	for _, want := range []string{"graph.example.yaml", "demo/graph.yaml"} {
		if !slices.Contains(files, filepath.Join(configsDir, want)) {
			t.Fatalf("configs/%s not found (found %v)", want, files)
		}
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			g, err := LoadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, g)
			if len(g.Sites()) == 0 || len(g.Lines()) == 0 || len(g.SKUs()) == 0 || len(g.Channels()) == 0 || len(g.Edges()) == 0 {
				t.Fatalf("%s is missing a part of the plant or the market", f)
			}
			// Every SKU is made somewhere and sold somewhere: an example should show the whole chain.
			for _, s := range g.SKUs() {
				p, _ := g.ProducersOf(s.ID)
				c, _ := g.ChannelsOf(s.ID)
				seg, _ := g.SegmentsOf(s.ID)
				if len(p) == 0 || len(c) == 0 || len(seg) == 0 {
					t.Errorf("SKU %s: %d producers, %d channels, %d segments", s.ID, len(p), len(c), len(seg))
				}
			}
		})
	}
	g, err := LoadFile(filepath.Join(configsDir, "graph.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(g.Sites()); n != 2 {
		t.Errorf("example: %d sites, want 2", n)
	}
	if n := len(g.Channels()); n != 3 {
		t.Errorf("example: %d channels, want web, retail and wholesale", n)
	}
}

// TestDemoGraphMatchesSim: configs/demo/graph.yaml describes the plant gemba-sim simulates with
// its defaults, as the demo agent names it: the same lines, machines, signals and SKUs, no more.
func TestDemoGraphMatchesSim(t *testing.T) {
	g, err := LoadFile(filepath.Join(configsDir, "demo/graph.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The site is the agent's, since that is where the hub sees the signals come from.
	data, err := os.ReadFile(filepath.Join(configsDir, "demo/agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var agent struct {
		Agent struct {
			Site string `yaml:"site"`
		} `yaml:"agent"`
	}
	if err := yaml.Unmarshal(data, &agent); err != nil {
		t.Fatal(err)
	}
	if sites := g.Sites(); len(sites) != 1 || sites[0].ID != agent.Agent.Site {
		t.Fatalf("sites %v, want the demo agent's site %q only", sites, agent.Agent.Site)
	}

	cfg := sim.DefaultConfig()
	cfg.Speed = 600 // ten simulated minutes a step: many changeovers, so every SKU shows up
	p := sim.NewPlant(cfg)
	lines := map[string]bool{}
	signals := 0
	for _, m := range p.Machines {
		lines[m.Line] = true
		id := m.Line + "." + m.Name
		if n, ok := g.Node(id); !ok || n.Kind != KindMachine || n.Parent != m.Line {
			t.Errorf("machine %s: graph has %+v", id, n)
		}
		for _, pt := range m.Points {
			sig := m.Signal(pt.Field)
			r, err := g.LineOfSignal(sig)
			if err != nil || r.ID != m.Line || r.Path[1].ID != id {
				t.Errorf("signal %s: %v, %v", sig, r, err)
			}
			signals++
		}
	}
	if n := len(g.Nodes(KindMachine)); n != len(p.Machines) {
		t.Errorf("graph has %d machines, the sim %d", n, len(p.Machines))
	}
	if n := len(g.Nodes(KindSignal)); n != signals {
		t.Errorf("graph has %d signals, the sim %d", n, signals)
	}
	if n := len(g.Lines()); n != len(lines) {
		t.Errorf("graph has %d lines, the sim %d", n, len(lines))
	}
	seen := map[string]map[string]bool{}
	for range 2000 {
		p.Step()
		for _, m := range p.Machines {
			if seen[m.Line] == nil {
				seen[m.Line] = map[string]bool{}
			}
			seen[m.Line][m.Points[1].S] = true // Points[1] is the sku
		}
	}
	for line, skus := range seen {
		rs, err := g.SKUsOf(line)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, r := range rs {
			want = append(want, r.ID)
		}
		got := slices.Sorted(func(yield func(string) bool) {
			for s := range skus {
				if !yield(s) {
					return
				}
			}
		})
		if !slices.Equal(got, want) {
			t.Errorf("line %s runs SKUs %v in the sim, the graph says it produces %v", line, got, want)
		}
	}
}

// checkConsistent asserts the invariants every loaded graph holds: every parent and edge end
// exists with the kind its role needs, the adjacency agrees with the edges, queries on every
// node answer, and formatting then loading gives the same graph.
func checkConsistent(t testing.TB, g *Graph) {
	t.Helper()
	total := 0
	for k := KindSite; k < numKinds; k++ {
		for _, n := range g.Nodes(k) {
			total++
			if n.Kind != k {
				t.Fatalf("node %+v listed under %s", n, k)
			}
			if want := parentKind(k); want != kindNone {
				p, ok := g.Node(n.Parent)
				if !ok || p.Kind != want {
					t.Fatalf("%s %q has parent %q, which is %+v", k, n.ID, n.Parent, p)
				}
			} else if n.Parent != "" {
				t.Fatalf("%s %q has a parent", k, n.ID)
			}
			if err := checkID(k, n.ID); err != nil {
				t.Fatalf("loaded a bad id: %v", err)
			}
		}
	}
	if total != len(g.nodes) {
		t.Fatalf("%d nodes listed, %d held", total, len(g.nodes))
	}
	degree := 0
	for _, e := range g.Edges() {
		from, to := e.Kind.ends()
		a, okA := g.Node(e.From)
		b, okB := g.Node(e.To)
		if !okA || !okB || a.Kind != from || b.Kind != to || e.From == e.To || e != e.canonical() {
			t.Fatalf("bad edge %v: %+v %+v", e, a, b)
		}
		degree += 2
	}
	for _, n := range g.nodes {
		for k := Produces; k < numEdgeKinds; k++ {
			degree -= len(n.adj[k])
		}
		if n.Parent != "" && len(n.adj[PartOf]) == 0 {
			t.Fatalf("%s has no part_of link", n.ID)
		}
	}
	if degree != 0 {
		t.Fatalf("adjacency and edges disagree by %d", degree)
	}
	for _, s := range g.SKUs() {
		for _, q := range []func(string) ([]Result, error){g.ProducersOf, g.ChannelsOf, g.SegmentsOf, g.Substitutes, g.Complements} {
			rs, err := q(s.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				checkPath(t, g, r.Path)
			}
		}
	}
	for _, s := range g.Nodes(KindSignal) {
		r, err := g.LineOfSignal(s.ID)
		if err != nil || r.Kind != KindLine || r.Site == "" {
			t.Fatalf("LineOfSignal(%s) = %+v, %v", s.ID, r, err)
		}
		checkPath(t, g, r.Path)
	}
	out, err := g.Format()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load(out)
	if err != nil {
		t.Fatalf("formatted graph does not load: %v\n%s", err, out)
	}
	if again.Hash() != g.Hash() || again.Version() != g.Version() {
		t.Fatalf("format then load changed the graph:\n%s", out)
	}
}
