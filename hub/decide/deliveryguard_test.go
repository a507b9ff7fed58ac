package decide

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A decision allowed and recorded just before the kill switch is thrown, and enqueued after it, is
// never delivered: the decision log gets a released record naming who threw the switch and why
// (what `why` shows), and the guard gives back its cooldown and caps.
func TestKillSwitchReleasesEnqueuedDecision(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	v := r.activate(testRules)
	now := r.clock()
	p := guard.Proposal{ID: guard.DecisionID(v, "promote-over", "A", "web", guard.TimeBucket(now, time.Hour)), RuleVersion: v,
		Rule: "promote-over", SKU: "A", Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 10, Duration: guard.Duration(time.Hour), Time: now}
	va, err := r.guard.Check(r.ctx, p)
	if err != nil || !va.Acts() {
		t.Fatalf("check: %+v %v", va, err)
	}
	rec := audit.Record{DecisionID: p.ID, Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive, Time: now,
		RuleSet: audit.RuleSetRef{Version: v}, Rule: audit.RuleRef{Name: p.Rule}, SKU: "A", Site: "s1", Channel: "web", Verdict: &va,
		Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour}}
	if _, err := r.log.Publish(r.ctx, rec, r.eng.Live().Change.Seq); err != nil {
		t.Fatal(err)
	}
	if err := r.guard.SetKill(r.ctx, true, "ops@plant-a", "price audit"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.outbox.Enqueue(r.ctx, Action(p, rec.Action, va)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the action cancelled", func() bool {
		ob, err := r.outbox.Get(r.ctx, p.ID)
		return err == nil && ob.State == act.Cancelled
	})
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions delivered", n)
	}
	hist, err := r.log.History(r.ctx, p.ID)
	if err != nil || len(hist) != 2 || hist[1].Event != audit.EventReleased || hist[1].Verdict == nil ||
		hist[1].Verdict.Guardrail != guard.GKillSwitch || len(hist[1].Verdict.Assessments) == 0 {
		t.Fatalf("history %+v %v: want decided, then released by the kill switch with the assessments", hist, err)
	}
	if vb, err := r.guard.Check(r.ctx, p); err != nil || vb.Outcome != guard.Released {
		t.Errorf("guard after the cancel: %+v %v", vb, err)
	}
	ob, err := r.outbox.Get(r.ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var why bytes.Buffer
	audit.Explain(&why, hist, &ob)
	for _, want := range []string{"decision " + p.ID + ": released", "released by kill_switch", "kill switch thrown by ops@plant-a", "price audit", "delivery: cancelled"} {
		if !strings.Contains(why.String(), want) {
			t.Errorf("why does not say %q:\n%s", want, why.String())
		}
	}
}
