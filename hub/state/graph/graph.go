// Package graph holds the hub's knowledge graph: sites, lines, machines and signals of the plant
// linked to the SKUs they produce and the channels and segments that buy them, loaded from YAML.
package graph

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
)

// MaxFileSize bounds a graph file: a plant with its whole catalogue fits in far less, and the
// hub reads the file into memory on every reload.
const MaxFileSize = 16 << 20

// Kind is the kind of a node.
type Kind uint8

// Node kinds, in the order a file declares them.
const (
	kindNone Kind = iota
	KindSite
	KindLine
	KindMachine
	KindSignal
	KindSKU
	KindChannel
	KindSegment
	numKinds
)

var kindNames = [numKinds]string{"", "site", "line", "machine", "signal", "sku", "channel", "segment"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// MarshalText writes the kind's name, so JSON shows "sku" rather than a number.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// EdgeKind is the kind of an edge. PartOf links a line to its site, a machine to its line and a
// signal to its machine (the file writes these as the node's parent); the others are declared
// under edges.
type EdgeKind uint8

// Edge kinds.
const (
	edgeNone EdgeKind = iota
	PartOf
	Produces
	SoldVia
	Targets
	Substitutes
	Complements
	numEdgeKinds
)

var edgeNames = [numEdgeKinds]string{"", "part_of", "produces", "sold_via", "targets", "substitutes", "complements"}

// edgeKindList is what the file may write under edges[].kind.
var edgeKindList = strings.Join(edgeNames[Produces:], ", ")

func (k EdgeKind) String() string {
	if k < numEdgeKinds {
		return edgeNames[k]
	}
	return fmt.Sprintf("EdgeKind(%d)", k)
}

// MarshalText writes the edge kind's name.
func (k EdgeKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

func parseEdgeKind(s string) (EdgeKind, bool) {
	for k := Produces; k < numEdgeKinds; k++ {
		if edgeNames[k] == s {
			return k, true
		}
	}
	return edgeNone, false
}

// Symmetric reports whether an edge of this kind holds in both directions (substitutes and
// complements: if A substitutes B, B substitutes A).
func (k EdgeKind) Symmetric() bool { return k == Substitutes || k == Complements }

// ends returns the kinds an edge of kind k goes from and to.
func (k EdgeKind) ends() (from, to Kind) {
	switch k {
	case Produces:
		return KindLine, KindSKU
	case SoldVia:
		return KindSKU, KindChannel
	case Targets:
		return KindChannel, KindSegment
	case Substitutes, Complements:
		return KindSKU, KindSKU
	}
	return kindNone, kindNone
}

// Node is one node of the graph.
type Node struct {
	ID     string `json:"id"`
	Kind   Kind   `json:"kind"`
	Name   string `json:"name,omitempty"`
	Parent string `json:"parent,omitempty"` // the site of a line, the line of a machine, the machine of a signal
}

// Edge is one declared edge. A symmetric edge is kept with From < To, whichever way it was written.
type Edge struct {
	Kind EdgeKind `json:"kind"`
	From string   `json:"from"`
	To   string   `json:"to"`
}

func (e Edge) canonical() Edge {
	if e.Kind.Symmetric() && e.To < e.From {
		e.From, e.To = e.To, e.From
	}
	return e
}

func (e Edge) String() string {
	if e.Kind.Symmetric() {
		return fmt.Sprintf("%s %s — %s", e.Kind, e.From, e.To)
	}
	return fmt.Sprintf("%s %s → %s", e.Kind, e.From, e.To)
}

func compareEdges(a, b Edge) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
}

// Graph is a loaded knowledge graph. It is never changed after Load, so any number of goroutines
// may query it at once; a new version is a new Graph.
type Graph struct {
	version string
	hash    string
	nodes   map[string]*node
	byKind  [numKinds][]*node // sorted by id
	edges   []Edge            // declared edges, sorted by compareEdges
}

type node struct {
	Node
	site string               // the site of a line, machine or signal
	adj  [numEdgeKinds][]half // incident edges by kind, sorted by the other end's id
}

// half is an edge seen from one of its ends.
type half struct {
	to      *node
	reverse bool // declared from to towards this node
}

// FileError is a graph file that did not load. Err is config.Problems when the content is wrong.
type FileError struct {
	Path string
	Err  error
}

// Error prints every problem on its own line as file:line: path: message.
func (e *FileError) Error() string {
	var ps config.Problems
	if !errors.As(e.Err, &ps) {
		return fmt.Sprintf("graph %s: %v", e.Path, e.Err)
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Path)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		b.WriteString(": ")
		if p.Path != "" {
			b.WriteString(p.Path + ": ")
		}
		b.WriteString(p.Msg)
	}
	return b.String()
}

func (e *FileError) Unwrap() error { return e.Err }

// LoadFile reads and loads a graph file (see Load).
func LoadFile(path string) (*Graph, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	g, err := Load(data)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	return g, nil
}

// Load parses and validates a graph document. Its error is config.Problems, listing everything
// wrong with the document at once, each with its path and line.
func Load(data []byte) (*Graph, error) {
	if len(data) > MaxFileSize {
		return nil, config.Problems{{Msg: fmt.Sprintf("the graph is larger than the limit of %d MiB", MaxFileSize>>20)}}
	}
	root, err := parse(data)
	if err != nil {
		return nil, err
	}
	d := config.NewDecoder()
	var f file
	if root != nil {
		d.Decode(root, "", &f)
	}
	entries, edges := validate(d, &f)
	if err := d.Err(); err != nil {
		return nil, err
	}
	return build(f.Version, entries, edges), nil
}

// parse reads the one YAML document of a graph file (nil when it is empty). The graph package
// parses rather than config.Decoder.Parse because a graph is literal data: no ${VAR} expansion
// (its content and hash must not depend on the host that loads it, and a "$" in a product name
// is a "$"), and its size limit is MaxFileSize, above what agent configs need.
func parse(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, config.Problems{syntaxProblem(data, err)}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		p := config.Problem{Line: next.Line, Msg: "a second YAML document (after ---): a graph file holds one"}
		if err != nil {
			p = syntaxProblem(nil, err) // config reads the first document only
		}
		return nil, config.Problems{p}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	// The config decoder follows every alias, so a small document whose anchors nest can stand
	// for billions of nodes.
	if !expandedWithin(root, 10_000+10*nodesIn(root)) {
		return nil, config.Problems{{Line: root.Line, Msg: "aliases expand the document to more than ten times its size; write the nodes out"}}
	}
	return root, nil
}

// syntaxProblem turns yaml's "yaml: line N: message" into a problem at line N. The config
// package knows better which line a yaml.v3 error is about, so its report of the same document
// is used when it has one.
func syntaxProblem(data []byte, err error) config.Problem {
	if _, perr := config.NewDecoder().Parse(data); perr != nil {
		var ps config.Problems
		if errors.As(perr, &ps) && len(ps) == 1 && ps[0].Line > 0 && ps[0].Path == "" {
			return ps[0]
		}
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	p := config.Problem{Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.IndexByte(rest, ':'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				p.Line, p.Msg = n, strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return p
}

// build makes the graph of a validated file.
func build(version string, entries []entry, edges []Edge) *Graph {
	g := &Graph{version: version, nodes: make(map[string]*node, len(entries)), edges: edges}
	for _, e := range entries {
		n := &node{Node: Node{ID: e.id.s, Kind: e.kind, Name: e.name, Parent: e.parent.s}}
		g.nodes[n.ID] = n
		g.byKind[n.Kind] = append(g.byKind[n.Kind], n)
	}
	link := func(k EdgeKind, from, to *node) {
		from.adj[k] = append(from.adj[k], half{to: to})
		to.adj[k] = append(to.adj[k], half{to: from, reverse: true})
	}
	for _, e := range entries {
		if e.parent.s != "" {
			link(PartOf, g.nodes[e.id.s], g.nodes[e.parent.s])
		}
	}
	slices.SortFunc(g.edges, compareEdges)
	for _, e := range g.edges {
		link(e.Kind, g.nodes[e.From], g.nodes[e.To])
	}
	for k := range g.byKind {
		slices.SortFunc(g.byKind[k], func(a, b *node) int { return strings.Compare(a.ID, b.ID) })
	}
	for _, n := range g.nodes {
		for k := range n.adj {
			slices.SortFunc(n.adj[k], func(a, b half) int {
				return cmp.Or(strings.Compare(a.to.ID, b.to.ID), compareBool(a.reverse, b.reverse))
			})
		}
		s := n
		for s != nil && s.Kind != KindSite && s.Parent != "" {
			s = g.nodes[s.Parent]
		}
		if s != nil && s.Kind == KindSite && s != n {
			n.site = s.ID
		}
	}
	g.hash = g.computeHash()
	return g
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// canonicalFormat names the encoding Hash is taken over; change it when the encoding changes.
const canonicalFormat = "gemba-graph/1"

// computeHash hashes the graph's content, not its text: nodes in kind and id order, edges in
// kind, from, to order with symmetric edges turned one way. Comments, layout, the order of
// entries and the version label do not change it. Every string is length-prefixed, so no
// content can make two different graphs encode alike.
func (g *Graph) computeHash() string {
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s", len(s), s) }
	field(canonicalFormat)
	for k := range g.byKind {
		for _, n := range g.byKind[k] {
			fmt.Fprintf(h, "\nnode ")
			field(n.Kind.String())
			field(n.ID)
			field(n.Name)
			field(n.Parent)
		}
	}
	for _, e := range g.edges {
		fmt.Fprintf(h, "\nedge ")
		field(e.Kind.String())
		field(e.From)
		field(e.To)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Version is the version label the file gives itself.
func (g *Graph) Version() string { return g.version }

// Hash is the sha256 (hex) of the graph's content: two files that declare the same nodes and
// edges have the same hash, whatever their layout, comments, order or version label.
func (g *Graph) Hash() string { return g.hash }

// Node returns the node with the given id.
func (g *Graph) Node(id string) (Node, bool) {
	n, ok := g.nodes[id]
	if !ok {
		return Node{}, false
	}
	return n.Node, true
}

// Nodes returns the nodes of one kind, sorted by id.
func (g *Graph) Nodes(k Kind) []Node {
	if k >= numKinds {
		return nil
	}
	out := make([]Node, len(g.byKind[k]))
	for i, n := range g.byKind[k] {
		out[i] = n.Node
	}
	return out
}

// Edges returns the declared edges (not the part_of links), sorted by kind, from and to.
func (g *Graph) Edges() []Edge { return slices.Clone(g.edges) }

// Sites returns the sites, sorted by id.
func (g *Graph) Sites() []Node { return g.Nodes(KindSite) }

// Lines returns the lines, sorted by id.
func (g *Graph) Lines() []Node { return g.Nodes(KindLine) }

// SKUs returns the SKUs, sorted by id.
func (g *Graph) SKUs() []Node { return g.Nodes(KindSKU) }

// Channels returns the channels, sorted by id.
func (g *Graph) Channels() []Node { return g.Nodes(KindChannel) }

// Segments returns the segments, sorted by id.
func (g *Graph) Segments() []Node { return g.Nodes(KindSegment) }
