package graph

import (
	"errors"
	"fmt"
	"strings"
)

// Query errors. Both are wrapped with the id that caused them.
var (
	ErrUnknown   = errors.New("unknown id")
	ErrWrongKind = errors.New("wrong kind of node")
)

// Step is one node on a path and the edge that led to it from the step before (Edge is zero on
// the first step).
type Step struct {
	ID   string   `json:"id"`
	Kind Kind     `json:"kind"`
	Edge EdgeKind `json:"edge,omitempty"`
	// Reverse is set when the edge was declared from this step's node to the previous one
	// (SKU-1 ←produces— line1). Symmetric edges have no direction and never set it.
	Reverse bool `json:"reverse,omitempty"`
}

// Path is a walk through the graph from its first step to its last, the explanation of a result.
type Path []Step

// String prints the path as "SKU-1 ←produces— line1 —part_of→ plant1"; symmetric edges print
// without an arrow (SKU-1 —substitutes— SKU-2).
func (p Path) String() string {
	var b strings.Builder
	for i, s := range p {
		if i > 0 {
			switch {
			case s.Edge.Symmetric():
				fmt.Fprintf(&b, " —%s— ", s.Edge)
			case s.Reverse:
				fmt.Fprintf(&b, " ←%s— ", s.Edge)
			default:
				fmt.Fprintf(&b, " —%s→ ", s.Edge)
			}
		}
		b.WriteString(s.ID)
	}
	return b.String()
}

// Result is a node a query found and the path from the queried node to it.
type Result struct {
	Node
	Site string `json:"site,omitempty"` // the site of a line, machine or signal
	Path Path   `json:"path"`
}

// String prints the path, then " @ site" when the node belongs to one: "SKU-1 ←produces— line1 @ plant1".
func (r Result) String() string {
	if r.Site != "" && r.Site != r.ID {
		return r.Path.String() + " @ " + r.Site
	}
	return r.Path.String()
}

// lookup returns the node id names, which must be of kind want.
func (g *Graph) lookup(id string, want Kind) (*node, error) {
	n, ok := g.nodes[id]
	if !ok {
		return nil, fmt.Errorf("graph: %w %q (no %s has this id)", ErrUnknown, id, want)
	}
	if n.Kind != want {
		return nil, fmt.Errorf("graph: %w: %q is a %s, not a %s", ErrWrongKind, id, n.Kind, want)
	}
	return n, nil
}

func (n *node) step(e EdgeKind, reverse bool) Step {
	return Step{ID: n.ID, Kind: n.Kind, Edge: e, Reverse: reverse && !e.Symmetric()}
}

func (n *node) result(p Path) Result { return Result{Node: n.Node, Site: n.site, Path: p} }

// neighbours returns the nodes one edge of kind k away from id, which must be of kind from,
// following edges forwards (declared from id) or backwards. Symmetric kinds go both ways.
func (g *Graph) neighbours(id string, from Kind, k EdgeKind, forward bool) ([]Result, error) {
	n, err := g.lookup(id, from)
	if err != nil {
		return nil, err
	}
	out := []Result{}
	for _, h := range n.adj[k] {
		if h.reverse == forward && !k.Symmetric() {
			continue
		}
		out = append(out, h.to.result(Path{n.step(edgeNone, false), h.to.step(k, h.reverse)}))
	}
	return out, nil
}

// ProducersOf returns the lines that produce the SKU, each with its site.
func (g *Graph) ProducersOf(sku string) ([]Result, error) {
	return g.neighbours(sku, KindSKU, Produces, false)
}

// ChannelsOf returns the channels that sell the SKU.
func (g *Graph) ChannelsOf(sku string) ([]Result, error) {
	return g.neighbours(sku, KindSKU, SoldVia, true)
}

// SKUsOf returns the SKUs the line produces.
func (g *Graph) SKUsOf(line string) ([]Result, error) {
	return g.neighbours(line, KindLine, Produces, true)
}

// Substitutes returns the SKUs that substitute the SKU, whichever way the edge was written.
func (g *Graph) Substitutes(sku string) ([]Result, error) {
	return g.neighbours(sku, KindSKU, Substitutes, true)
}

// Complements returns the SKUs that complement the SKU, whichever way the edge was written.
func (g *Graph) Complements(sku string) ([]Result, error) {
	return g.neighbours(sku, KindSKU, Complements, true)
}

// SegmentsOf returns the segments the SKU reaches through the channels that sell it, once each,
// sorted by id; the path goes through the first of those channels by id (Paths lists them all).
func (g *Graph) SegmentsOf(sku string) ([]Result, error) {
	channels, err := g.ChannelsOf(sku)
	if err != nil {
		return nil, err
	}
	found := map[string]Result{}
	for _, c := range channels {
		ch := g.nodes[c.ID]
		for _, h := range ch.adj[Targets] {
			if h.reverse {
				continue
			}
			if _, dup := found[h.to.ID]; !dup {
				found[h.to.ID] = h.to.result(append(c.Path[:len(c.Path):len(c.Path)], h.to.step(Targets, false)))
			}
		}
	}
	out := make([]Result, 0, len(found))
	for _, seg := range g.byKind[KindSegment] {
		if r, ok := found[seg.ID]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// up follows part_of links from n to the node of kind want.
func (g *Graph) up(n *node, want Kind) Result {
	p := Path{n.step(edgeNone, false)}
	for n.Kind != want {
		n = g.nodes[n.Parent] // validation made every parent exist with the right kind
		p = append(p, n.step(PartOf, false))
	}
	return n.result(p)
}

// LineOfSignal returns the line a signal belongs to, through its machine, with the line's site.
func (g *Graph) LineOfSignal(sig string) (Result, error) {
	n, err := g.lookup(sig, KindSignal)
	if err != nil {
		return Result{}, err
	}
	return g.up(n, KindLine), nil
}

// SiteOfLine returns the site of a line.
func (g *Graph) SiteOfLine(line string) (Result, error) {
	n, err := g.lookup(line, KindLine)
	if err != nil {
		return Result{}, err
	}
	return g.up(n, KindSite), nil
}

// Bounds of Paths: the depth asked for is capped, at most MaxPaths paths come back, and the
// search gives up after visiting maxVisits partial paths, so that no query on a dense graph (every
// SKU substituting every other) can hold the hub.
const (
	MaxPathDepth = 8
	MaxPaths     = 100
	maxVisits    = 200_000
)

// Paths returns the simple paths (no node twice) from one node to another of at most maxDepth
// edges, following every kind of edge in either direction, shortest first and then in a stable
// order. maxDepth is capped at MaxPathDepth and at most MaxPaths paths are returned; truncated
// reports that the search stopped at one of its bounds before listing every path.
func (g *Graph) Paths(from, to string, maxDepth int) (paths []Path, truncated bool, err error) {
	src, ok := g.nodes[from]
	if !ok {
		return nil, false, fmt.Errorf("graph: paths from: %w %q", ErrUnknown, from)
	}
	dst, ok := g.nodes[to]
	if !ok {
		return nil, false, fmt.Errorf("graph: paths to: %w %q", ErrUnknown, to)
	}
	if maxDepth < 0 {
		return nil, false, fmt.Errorf("graph: paths from %q to %q: negative depth %d", from, to, maxDepth)
	}
	if maxDepth > MaxPathDepth {
		maxDepth, truncated = MaxPathDepth, true
	}
	if src == dst {
		return []Path{{src.step(edgeNone, false)}}, false, nil
	}
	// Distances to dst let the search drop every branch that cannot reach it in the steps left.
	dist := map[*node]int{dst: 0}
	frontier := []*node{dst}
	for d := 1; d <= maxDepth && len(frontier) > 0; d++ {
		var next []*node
		for _, n := range frontier {
			for k := range n.adj {
				for _, h := range n.adj[k] {
					if _, seen := dist[h.to]; !seen {
						dist[h.to] = d
						next = append(next, h.to)
					}
				}
			}
		}
		frontier = next
	}
	d0, ok := dist[src]
	if !ok {
		return []Path{}, truncated, nil
	}
	s := &pathSearch{dist: dist, dst: dst, on: map[*node]bool{src: true}, out: []Path{}}
	for length := d0; length <= maxDepth && !s.stop; length++ {
		s.walk(src, Path{src.step(edgeNone, false)}, length)
	}
	return s.out, truncated || s.stop, nil
}

type pathSearch struct {
	dist   map[*node]int
	dst    *node
	on     map[*node]bool // nodes on the current path
	out    []Path
	visits int
	stop   bool
}

// walk extends p, which ends at n, by exactly left more edges ending at dst.
func (s *pathSearch) walk(n *node, p Path, left int) {
	if s.visits++; s.visits > maxVisits {
		s.stop = true
		return
	}
	if left == 0 {
		if n == s.dst {
			if len(s.out) == MaxPaths { // one more than fits: there are more than MaxPaths
				s.stop = true
				return
			}
			s.out = append(s.out, append(Path(nil), p...))
		}
		return
	}
	if n == s.dst {
		return // a simple path ends at its target
	}
	for k := range n.adj {
		for _, h := range n.adj[k] {
			if d, ok := s.dist[h.to]; !ok || d > left-1 || s.on[h.to] {
				continue
			}
			s.on[h.to] = true
			s.walk(h.to, append(p, h.to.step(EdgeKind(k), h.reverse)), left-1)
			delete(s.on, h.to)
			if s.stop {
				return
			}
		}
	}
}
