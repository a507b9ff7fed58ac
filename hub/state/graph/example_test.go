package graph_test

import (
	"fmt"

	"github.com/gemba-io/gemba/hub/state/graph"
)

func Example() {
	g, err := graph.Load([]byte(`
version: 2026-12-01.1
sites: [{id: plant1}]
lines: [{id: line1, site: plant1}]
machines: [{id: line1.pack, line: line1}]
signals: [{id: line1.pack.parts, machine: line1.pack}]
skus: [{id: A-100}, {id: A-150}]
channels: [{id: web}]
segments: [{id: b2c}]
edges:
  - {kind: produces, from: line1, to: A-100}
  - {kind: sold_via, from: A-100, to: web}
  - {kind: targets, from: web, to: b2c}
  - {kind: substitutes, from: A-150, to: A-100}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	lines, _ := g.ProducersOf("A-100")
	segments, _ := g.SegmentsOf("A-100")
	subs, _ := g.Substitutes("A-100")
	line, _ := g.LineOfSignal("line1.pack.parts")
	fmt.Println(lines[0])
	fmt.Println(segments[0])
	fmt.Println(subs[0])
	fmt.Println(line)
	_, err = g.ChannelsOf("A-999")
	fmt.Println(err)
	// Output:
	// A-100 ←produces— line1 @ plant1
	// A-100 —sold_via→ web —targets→ b2c
	// A-100 —substitutes— A-150
	// line1.pack.parts —part_of→ line1.pack —part_of→ line1 @ plant1
	// graph: unknown id "A-999" (no sku has this id)
}

func ExampleDiff() {
	old, _ := graph.Load([]byte("version: v1\nskus: [{id: A}, {id: B}]\nedges: [{kind: complements, from: A, to: B}]\n"))
	cur, _ := graph.Load([]byte("version: v2\nskus: [{id: A, name: Bracket}, {id: C}]\n"))
	fmt.Println(graph.Diff(old, cur))
	// Output:
	// nodes +1 (sku C) -1 (sku B) ~1 (sku A); edges -1 (complements A — B)
}
