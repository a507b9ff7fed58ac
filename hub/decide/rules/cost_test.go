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
