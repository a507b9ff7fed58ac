package graph

import (
	"fmt"
	"log/slog"
	"strings"
)

// Changes is what a new version of the graph adds, removes and changes, for the hub to log when
// it loads one. Lists are sorted like Nodes and Edges.
type Changes struct {
	AddedNodes   []Node `json:"added_nodes,omitempty"`
	RemovedNodes []Node `json:"removed_nodes,omitempty"`
	ChangedNodes []Node `json:"changed_nodes,omitempty"` // same id and kind, new name or parent (the new node)
	AddedEdges   []Edge `json:"added_edges,omitempty"`
	RemovedEdges []Edge `json:"removed_edges,omitempty"`
}

// Diff compares two graphs. old may be nil (the first load): everything in cur is then added. A
// node whose kind changed is removed and added.
func Diff(old, cur *Graph) Changes {
	var c Changes
	if old == nil {
		old = &Graph{}
	}
	if cur == nil {
		cur = &Graph{}
	}
	for k := range cur.byKind {
		for _, n := range cur.byKind[k] {
			switch o, ok := old.nodes[n.ID]; {
			case !ok || o.Kind != n.Kind:
				c.AddedNodes = append(c.AddedNodes, n.Node)
			case o.Node != n.Node:
				c.ChangedNodes = append(c.ChangedNodes, n.Node)
			}
		}
	}
	for k := range old.byKind {
		for _, o := range old.byKind[k] {
			if n, ok := cur.nodes[o.ID]; !ok || n.Kind != o.Kind {
				c.RemovedNodes = append(c.RemovedNodes, o.Node)
			}
		}
	}
	// Both edge lists are sorted: merge them.
	i, j := 0, 0
	for i < len(old.edges) || j < len(cur.edges) {
		switch {
		case j == len(cur.edges) || (i < len(old.edges) && compareEdges(old.edges[i], cur.edges[j]) < 0):
			c.RemovedEdges = append(c.RemovedEdges, old.edges[i])
			i++
		case i == len(old.edges) || compareEdges(old.edges[i], cur.edges[j]) > 0:
			c.AddedEdges = append(c.AddedEdges, cur.edges[j])
			j++
		default:
			i++
			j++
		}
	}
	return c
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.AddedNodes)+len(c.RemovedNodes)+len(c.ChangedNodes)+len(c.AddedEdges)+len(c.RemovedEdges) == 0
}

// diffShown is how many items of each list String names before it only counts.
const diffShown = 5

// String summarises the changes on one line: "nodes +2 (sku SKU-9, sku SKU-10) ~1 (line line1);
// edges -1 (produces line1 → SKU-3)".
func (c Changes) String() string {
	if c.Empty() {
		return "no changes"
	}
	var parts []string
	list := func(sign string, n int, item func(int) string) string {
		if n == 0 {
			return ""
		}
		names := make([]string, 0, min(n, diffShown))
		for i := range min(n, diffShown) {
			names = append(names, item(i))
		}
		more := ""
		if n > diffShown {
			more = fmt.Sprintf(", %d more", n-diffShown)
		}
		return fmt.Sprintf(" %s%d (%s%s)", sign, n, strings.Join(names, ", "), more)
	}
	node := func(ns []Node) func(int) string {
		return func(i int) string { return ns[i].Kind.String() + " " + ns[i].ID }
	}
	edge := func(es []Edge) func(int) string { return func(i int) string { return es[i].String() } }
	if s := list("+", len(c.AddedNodes), node(c.AddedNodes)) + list("-", len(c.RemovedNodes), node(c.RemovedNodes)) +
		list("~", len(c.ChangedNodes), node(c.ChangedNodes)); s != "" {
		parts = append(parts, "nodes"+s)
	}
	if s := list("+", len(c.AddedEdges), edge(c.AddedEdges)) + list("-", len(c.RemovedEdges), edge(c.RemovedEdges)); s != "" {
		parts = append(parts, "edges"+s)
	}
	return strings.Join(parts, "; ")
}

// LogValue logs the counts and the one-line summary.
func (c Changes) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("nodes_added", len(c.AddedNodes)), slog.Int("nodes_removed", len(c.RemovedNodes)),
		slog.Int("nodes_changed", len(c.ChangedNodes)),
		slog.Int("edges_added", len(c.AddedEdges)), slog.Int("edges_removed", len(c.RemovedEdges)),
		slog.String("summary", c.String()))
}
