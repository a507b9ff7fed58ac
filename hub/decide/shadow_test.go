package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A shadow version is evaluated on the same input: where it decides differently its decision is
// recorded with what the active version decided, and never acted on.
func TestShadowRecordsDisagreementNeverActs(t *testing.T) {
	r := newRig(t, nil)
	v1 := r.activate(testRules)
	shadow := strings.Replace(testRules, "discount: 10", "discount: 5", 1)
	v2, err := r.reg.Store(r.ctx, []byte(shadow), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.reg.Shadow(r.ctx, v2, "bob", "try cheaper"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "shadow live", func() bool { l := r.eng.Live(); return l != nil && l.Shadow != nil })
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two promotions and two shadow records", func() bool {
		return len(r.actions()) == 2 && len(r.records(audit.Filter{Mode: audit.ModeShadow})) == 2
	})
	for _, m := range r.actions() {
		if m.RuleSetVersion != v1 || m.Discount != 10 {
			t.Errorf("acted %+v: only the active version acts", m)
		}
	}
	for _, rec := range r.records(audit.Filter{Mode: audit.ModeShadow}) {
		d := rec.Disagreement
		if rec.Outcome != audit.OutcomeShadow || rec.RuleSet.Version != v2 || rec.Action.Discount != 5 || rec.Verdict != nil ||
			d == nil || d.ActiveVersion != v1 || d.ActiveAction == nil || d.ActiveAction.Discount != 10 {
			t.Errorf("shadow record %+v (disagreement %+v)", rec, d)
		}
	}
	// Clearing the shadow stops its records.
	if _, err := r.reg.Shadow(r.ctx, "", "bob", "done"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "shadow cleared", func() bool { return r.eng.Live().Shadow == nil })
	before := r.eng.rounds.Load()
	r.overstocked("l2", "B")
	testutil.WaitFor(t, 10*time.Second, "B evaluated", func() bool { return r.eng.settled(before) })
	if n := len(r.records(audit.Filter{Mode: audit.ModeShadow})); n != 2 {
		t.Errorf("%d shadow records after clearing, want still 2", n)
	}
}

// A canary version acts for the units in its share and the active version for the others; each
// record says which and whether its unit is in the canary.
func TestCanaryActsForItsShare(t *testing.T) {
	r := newRig(t, nil)
	v1 := r.activate(testRules)
	v2, err := r.reg.Store(r.ctx, []byte(strings.Replace(testRules, "discount: 10", "discount: 7", 1)), "bob")
	if err != nil {
		t.Fatal(err)
	}
	// A share of 1 puts every SKU in the canary (InCanary's share is tested in versions).
	if _, err := r.reg.Canary(r.ctx, v2, 1, "sku", "bob", "all in"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "canary live", func() bool { l := r.eng.Live(); return l != nil && l.Canary != nil })
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two canary promotions", func() bool { return len(r.actions()) == 2 })
	for _, m := range r.actions() {
		if m.RuleSetVersion != v2 || m.Discount != 7 {
			t.Errorf("acted %+v, want the canary's", m)
		}
	}
	for _, rec := range r.records(audit.Filter{}) {
		if rec.Mode != audit.ModeCanary || rec.Canary == nil || !rec.Canary.In || rec.Canary.Unit != "A" {
			t.Errorf("record %+v (canary %+v)", rec, rec.Canary)
		}
	}
	// Cleared, the active version acts again.
	if _, err := r.reg.Canary(r.ctx, "", 0, "sku", "bob", "enough"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "canary cleared", func() bool { return r.eng.Live().Canary == nil })
	r.overstocked("l2", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted", func() bool { return len(r.actions()) == 3 })
	for _, m := range r.actions() {
		if m.SKU == "B" && (m.RuleSetVersion != v1 || m.Discount != 10) {
			t.Errorf("B acted %+v, want the active version's", m)
		}
	}
}

// A shadow version activated in the bucket of its shadow records acts: its shadow decisions are not
// the decisions it then makes as the active version (shadow then activate is the way to roll out).
func TestShadowThenActivateActs(t *testing.T) {
	r := newRig(t, nil)
	holdOnly := testRules[:strings.Index(testRules, "  - name: promote-over")]
	v1 := r.activate(holdOnly)
	v2, err := r.reg.Store(r.ctx, []byte(testRules), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.reg.Shadow(r.ctx, v2, "bob", "try promotions"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "shadow live", func() bool { l := r.eng.Live(); return l != nil && l.Shadow != nil })
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two shadow records", func() bool {
		return len(r.records(audit.Filter{Mode: audit.ModeShadow})) == 2
	})
	if n := len(r.actions()); n != 0 {
		t.Fatalf("%d actions under %s, which decides nothing here", n, v1[:8])
	}
	if _, err := r.reg.Activate(r.ctx, v2, "bob", "roll out"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "two promotions of the activated version", func() bool { return len(r.actions()) == 2 })
	for _, m := range r.actions() {
		if m.RuleSetVersion != v2 || m.SKU != "A" {
			t.Errorf("acted %+v", m)
		}
	}
	for _, rec := range r.records(audit.Filter{Outcome: audit.OutcomeFired}) {
		if rec.Mode != audit.ModeActive || rec.RuleSet.Version != v2 {
			t.Errorf("fired record %+v", rec)
		}
	}
}
