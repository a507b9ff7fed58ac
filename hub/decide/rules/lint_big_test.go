package rules

import (
	"fmt"
	"strings"
	"testing"
)

// A set of a hundred-odd rules, each with its own condition and discount (every pair has different
// actions, none can hold together), plus two that overlap everywhere: the broad overlap is still
// found, and the search of the rest is bounded, with a finding that says it was thinned. (A
// 500-rule set linted for three minutes when every pair had 200 samples of its own.)
func TestLintLargeSetBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: big\nhit_policy: collect\nrules:\n")
	b.WriteString("  - {name: broad, when: 'inventory.days_of_cover > 5', promote: {channels: [web], discount: 70, duration: 24h}}\n")
	b.WriteString("  - {name: stop, when: 'inventory.days_of_cover > 1', hold: {channels: [web], reason: r}}\n")
	for i := range 110 {
		fmt.Fprintf(&b, "  - {name: r%d, when: 'sku.name == \"cat-%d\" && inventory.days_of_cover > %d', promote: {channels: [app], discount: %d, duration: 24h}}\n",
			i, i, 10+i%50, 1+i%60)
	}
	s, err := Load([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	var broad, thinned bool
	for _, f := range s.Lint() {
		switch {
		case f.Code == "overlap" && f.Rule == "stop" && f.Other == "broad":
			broad = true
		case f.Code == "overlap_search":
			thinned = true
			if f.Severity != Info || !strings.Contains(f.Msg, "may go unreported") {
				t.Errorf("finding %v", f)
			}
		}
	}
	if !broad {
		t.Error("the overlap of broad and stop was not reported")
	}
	if !thinned {
		t.Error("no finding says the focused search was thinned")
	}
}
