package graph

import (
	"bytes"

	"go.yaml.in/yaml/v3"
)

// outNode and outEdge mirror the file's entries with plain strings for writing.
type outNode struct {
	ID      string `yaml:"id"`
	Name    string `yaml:"name,omitempty"`
	Site    string `yaml:"site,omitempty"`
	Line    string `yaml:"line,omitempty"`
	Machine string `yaml:"machine,omitempty"`
}

type outEdge struct {
	Kind string `yaml:"kind"`
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// Format writes the graph as a graph file in canonical form: sections in a fixed order, entries
// sorted by id, edges by kind, from and to. Loading it gives a graph with the same version and
// hash, which makes it a formatter for hand-written files and a way to export a graph.
func (g *Graph) Format() ([]byte, error) {
	doc := struct {
		Version  string    `yaml:"version"`
		Sites    []outNode `yaml:"sites,omitempty"`
		Lines    []outNode `yaml:"lines,omitempty"`
		Machines []outNode `yaml:"machines,omitempty"`
		Signals  []outNode `yaml:"signals,omitempty"`
		SKUs     []outNode `yaml:"skus,omitempty"`
		Channels []outNode `yaml:"channels,omitempty"`
		Segments []outNode `yaml:"segments,omitempty"`
		Edges    []outEdge `yaml:"edges,omitempty"`
	}{Version: g.version}
	sections := [numKinds]*[]outNode{KindSite: &doc.Sites, KindLine: &doc.Lines, KindMachine: &doc.Machines,
		KindSignal: &doc.Signals, KindSKU: &doc.SKUs, KindChannel: &doc.Channels, KindSegment: &doc.Segments}
	for k, sec := range sections {
		if sec == nil {
			continue
		}
		for _, n := range g.byKind[k] {
			o := outNode{ID: n.ID, Name: n.Name}
			switch n.Kind {
			case KindLine:
				o.Site = n.Parent
			case KindMachine:
				o.Line = n.Parent
			case KindSignal:
				o.Machine = n.Parent
			}
			*sec = append(*sec, o)
		}
	}
	for _, e := range g.edges {
		doc.Edges = append(doc.Edges, outEdge{Kind: e.Kind.String(), From: e.From, To: e.To})
	}
	var b bytes.Buffer
	b.WriteString("# gemba knowledge graph (docs/graph.md)\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
