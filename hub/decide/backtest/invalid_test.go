package backtest

import (
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/decide/rules"
)

// A proposal the guard refuses as malformed (guard.InputError: here a SKU id longer than the
// guard takes) is no decision of the live engine: it logs the refusal with the rule and SKU,
// records nothing and counts no suppression. The backtest reports it apart, not as a decision
// suppressed by a guardrail, and decides the same ids with the same verdicts as the engine.
func TestBacktestGuardInputErrorIsNoSuppression(t *testing.T) {
	long := strings.Repeat("C", 300)
	g := strings.Replace(testGraph, "skus: [{id: A}, {id: B}]", "skus: [{id: A}, {id: B}, {id: "+long+"}]", 1) +
		"  - {kind: produces, from: l2, to: " + long + "}\n  - {kind: sold_via, from: " + long + ", to: web}\n"
	set, err := rules.Load([]byte(`name: running
hit_policy: first
rules:
  - name: promote-running
    when: lines.exists(l, l.state == "running" && !l.stale)
    promote: {channels: [web], discount: 10, duration: 24h}
`), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	sum, elog := sameAsLiveOn(t, g, set)
	refused := elog.count("decision refused by the guard")
	if refused == 0 {
		t.Fatal("the live engine refused no proposal: the test does not exercise guard.InputError")
	}
	if n := sum.ByGuardrail["proposal"]; n != 0 || sum.Decisions != sum.ByRule["promote-running"] {
		t.Errorf("backtest outcomes %v: %d refusals counted as suppressions", sum.ByOutcome, n)
	}
	if sum.Invalid != refused || len(sum.InvalidProposals) != refused {
		t.Fatalf("backtest reports %d (%d listed) proposals refused as malformed, the live engine %d", sum.Invalid, len(sum.InvalidProposals), refused)
	}
	p := sum.InvalidProposals[0]
	if p.Rule != "promote-running" || p.SKU != long || p.Channel != "web" || !strings.Contains(p.Error, "sku") {
		t.Fatalf("refusal %+v: want the rule, the SKU, the channel and the guard's error", p)
	}
}
