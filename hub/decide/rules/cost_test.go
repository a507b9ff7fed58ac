package rules

import (
	"fmt"
	"strings"
	"testing"
)

// A condition runs untracked only when its worst case on inputs within the bounds is under the
// limit and the input is within the bounds; otherwise the tracked program stops it at the limit.
func TestStaticCostBound(t *testing.T) {
	for _, r := range benchSet(t).rules {
		if r.fast == nil || r.maxCost > DefaultCostLimit {
			t.Errorf("bench rule %s: no untracked program (bound %d)", r.Name, r.maxCost)
		}
	}
	s := mustLoad(t, `name: c
hit_policy: collect
rules:
  - name: quadratic
    when: neighbours.substitutes.all(a, !neighbours.substitutes.exists(b, b == a + "x"))
    hold: {channels: [web], reason: r}
  - name: cubic
    when: neighbours.substitutes.all(a, neighbours.substitutes.all(b, !neighbours.substitutes.exists(c, c == a + b + "x")))
    hold: {channels: [web], reason: r}
`, CostLimit(1_000_000))
	quad, cubic := s.rules[0], s.rules[1]
	if quad.fast == nil || cubic.fast != nil {
		t.Fatalf("quadratic bound %d (fast %v), cubic bound %d (fast %v)", quad.maxCost, quad.fast != nil, cubic.maxCost, cubic.fast != nil)
	}
	subs := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprint(i)
		}
		return out
	}
	// Within bounds, the cubic one runs tracked: 3 substitutes cost little, 60 (216,000
	// comparisons) cost more than the limit.
	if res := s.Evaluate(&Input{Neighbours: Neighbours{Substitutes: subs(3)}}); res.Errors != 0 {
		t.Errorf("small: %+v", res.Trace)
	}
	res := s.Evaluate(&Input{Neighbours: Neighbours{Substitutes: subs(60)}})
	if res.Trace[0].Err != "" || !strings.Contains(res.Trace[1].Err, "cost limit exceeded") {
		t.Errorf("60 substitutes: %+v", res.Trace)
	}
	// Beyond the bounds the quadratic one runs tracked too.
	res = s.Evaluate(&Input{Neighbours: Neighbours{Substitutes: subs(5000)}})
	if !strings.Contains(res.Trace[0].Err, "cost limit exceeded") {
		t.Errorf("5000 substitutes: %+v", res.Trace)
	}
	for name, in := range map[string]*Input{
		"long id":        {SKU: SKU{ID: strings.Repeat("x", maxBoundedString+1)}},
		"many lines":     {Lines: make([]Line, maxBoundedList+1)},
		"long state":     {Lines: []Line{{State: strings.Repeat("x", maxBoundedString+1)}}},
		"many features":  {Features: manyFeatures(maxBoundedList + 1)},
		"long channel":   {Neighbours: Neighbours{Channels: []string{strings.Repeat("x", maxBoundedString+1)}}},
		"many neighbour": {Neighbours: Neighbours{Complements: subs(maxBoundedList + 1)}},
	} {
		if bounded(in) {
			t.Errorf("%s: within bounds", name)
		}
	}
	if !bounded(benchInputs(1)[0]) {
		t.Error("a realistic input is beyond the bounds")
	}
}

func manyFeatures(n int) map[string]Feature {
	m := map[string]Feature{}
	for i := range n {
		m[fmt.Sprint(i)] = Feature{}
	}
	return m
}

// format() costs what it writes: CEL's cost models leave it at one unit, so a condition that
// formats input-sized lists (megabytes of text from 64 substitutes of 256 bytes) passed for cheap
// and ran untracked. It stops at the limit like any other work, and a format of small values
// still runs.
func TestFormatCostsWhatItWrites(t *testing.T) {
	m := "neighbours.substitutes.map(a, neighbours.substitutes)"
	s := mustLoad(t, `name: c
hit_policy: collect
rules:
  - name: formats
    when: '"`+strings.Repeat("%s", 10)+`".format([`+strings.TrimSuffix(strings.Repeat(m+", ", 10), ", ")+`]).size() > 0'
    hold: {channels: [web], reason: r}
  - name: small
    when: '"%d-%s".format([lines.size(), sku.id]) == "0-A"'
    hold: {channels: [web], reason: r}
`)
	if r := s.rules[0]; r.fast != nil {
		t.Errorf("format of input-sized lists has an untracked program (static bound %d)", r.maxCost)
	}
	subs := make([]string, maxBoundedList)
	for i := range subs {
		subs[i] = strings.Repeat("x", maxBoundedString)
	}
	res := s.Evaluate(&Input{SKU: SKU{ID: "A"}, Neighbours: Neighbours{Substitutes: subs}})
	if !strings.Contains(res.Trace[0].Err, "cost limit exceeded") {
		t.Errorf("formats: %+v, want the cost limit", res.Trace[0])
	}
	if !res.Trace[1].Matched || res.Trace[1].Err != "" {
		t.Errorf("small: %+v", res.Trace[1])
	}
}
