package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A promotion fed by a drifting sensor is suppressed by the guard, and its record says which input
// drifted and why; a rule can also read the verdict itself (features.units.drifting) and not match.
func TestDriftingInputSuppresses(t *testing.T) {
	r := newRig(t, nil)
	r.activate(testRules)
	r.q.set("units", "A", FeatureQuality{Drifting: true, Reasons: []string{"psi 0.41 > 0.25"}})
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "A's promotions suppressed", func() bool {
		return len(r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeSuppressed})) == 2
	})
	rec := r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeSuppressed})[0]
	if rec.Verdict == nil || rec.Verdict.Guardrail != guard.GInputs || !strings.Contains(rec.Verdict.Reason, "feature:units@A (drifting)") {
		t.Fatalf("verdict %+v", rec.Verdict)
	}
	var why strings.Builder
	audit.Explain(&why, []audit.Record{rec}, nil)
	if !strings.Contains(why.String(), "drifting, psi 0.41 > 0.25") {
		t.Errorf("why does not say the input drifted:\n%s", why.String())
	}
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions on a drifting input", n)
	}

	// The same rule set with the verdict in the condition: B's drift means no match, not a
	// suppressed decision; once B's sensor is trusted again it is promoted.
	r.activate(strings.Replace(testRules, "features.units.value > 0.0", "features.units.value > 0.0 && !features.units.drifting", 1))
	r.q.set("units", "B", FeatureQuality{Drifting: true})
	r.overstocked("l2", "B")
	r.q.set("units", "A", FeatureQuality{})
	r.advance(2 * time.Hour) // a new time bucket for A
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "A promoted once its sensor is trusted", func() bool { return len(r.actions()) == 2 })
	if n := len(r.records(audit.Filter{SKU: "B"})); n != 0 {
		t.Errorf("%d records of B: a rule that excludes drifting inputs decided", n)
	}
	r.q.set("units", "B", FeatureQuality{})
	r.overstocked("l2", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted", func() bool { return len(r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeFired})) == 1 })
}
