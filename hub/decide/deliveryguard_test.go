package decide

import (
	"bytes"
	"errors"
	"strconv"
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

// A decision the kill switch suppressed is not final: after the reset, the next evaluation of the
// SKU in the same time bucket decides it again (same id), acts once, and the decision log keeps
// both decided records, which why lists (the latest explained).
func TestKillSuppressedDecidedAgainAfterReset(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	r.activate(testRules)
	if err := r.guard.SetKill(r.ctx, true, "ops@plant-a", "price audit"); err != nil {
		t.Fatal(err)
	}
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two suppressions", func() bool {
		return len(r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeSuppressed})) == 2
	})
	if err := r.guard.SetKill(r.ctx, false, "ops@plant-a", "audit done"); err != nil {
		t.Fatal(err)
	}
	// An input changes (same bucket): evaluated again.
	r.state.setFeature("units", "A", 41, r.clock(), nil)
	r.eng.FeatureChanged("units", "A")
	testutil.WaitFor(t, 10*time.Second, "two promotions after the reset", func() bool { return len(r.actions()) == 2 })
	fired := r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})
	if len(fired) != 2 {
		t.Fatalf("%d fired records, want 2", len(fired))
	}
	for _, f := range fired {
		hist, err := r.log.History(r.ctx, f.DecisionID)
		if err != nil || len(hist) != 2 || hist[0].Outcome != audit.OutcomeSuppressed || hist[1].Outcome != audit.OutcomeFired {
			t.Fatalf("history of %s: %+v %v: want the suppression, then the promotion", f.DecisionID, hist, err)
		}
		var why bytes.Buffer
		audit.Explain(&why, hist, nil)
		for _, want := range []string{"decision " + f.DecisionID + ": fired", "decided  → suppressed", "decided  → fired", "guardrails: allow"} {
			if !strings.Contains(why.String(), want) {
				t.Errorf("why does not say %q:\n%s", want, why.String())
			}
		}
	}
	// More changes: the same ids, nothing acts again.
	r.state.setFeature("units", "A", 42, r.clock(), nil)
	r.eng.FeatureChanged("units", "A")
	r.overstocked("l2", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted", func() bool { return len(r.actions()) == 3 })
	if n := len(r.records(audit.Filter{SKU: "A"})); n != 4 {
		t.Errorf("%d records of A, want 4", n)
	}
}

// While the switch stays thrown, every evaluation of a unit checks its suppressed decision again
// (to see the reset) but records it once: re-published at each evaluation, it was stored again
// each time the log's duplicate window had passed.
func TestKillSuppressionRecordedOnce(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	r.activate(testRules)
	if err := r.guard.SetKill(r.ctx, true, "ops@plant-a", "price audit"); err != nil {
		t.Fatal(err)
	}
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two suppressions", func() bool {
		return len(r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeSuppressed})) == 2
	})
	dup := r.log.Stats.Duplicates.Load()
	for i := range 4 { // a round starts once the one before is over: the 4th waits for the 3rd
		evals := r.eng.Metrics.Evaluations.Load()
		r.state.setFeature("units", "A", float64(41+i), r.clock(), nil)
		r.eng.FeatureChanged("units", "A")
		testutil.WaitFor(t, 10*time.Second, "A evaluated again", func() bool { return r.eng.Metrics.Evaluations.Load() > evals })
	}
	if d := r.log.Stats.Duplicates.Load() - dup; d != 0 {
		t.Fatalf("%d suppressions re-published while the switch stayed thrown, want none", d)
	}
}

// DeliveryGuard.Reacquired records a replay's reservation again only as the answer to a release on
// the decision log: with no released record of the decision before it, it writes nothing and says so
// (act.ErrPermanent: the loop logs it once and delivers on) — a reacquired record with no release
// before it would have why and the KPIs count a reservation again that undoes nothing. After a
// release it writes its answer (replay 1) once; called again for that release (a retry after a
// crash) it writes nothing more.
func TestReacquiredOnlyAfterARelease(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	now := r.clock()
	p := guard.Proposal{ID: guard.DecisionID("v-re", "promote-a", "A", "web", guard.TimeBucket(now, time.Hour)), RuleVersion: "v-re",
		Rule: "promote-a", SKU: "A", Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 10, Duration: guard.Duration(time.Hour), Time: now}
	v, err := r.guard.Check(r.ctx, p)
	if err != nil || !v.Acts() {
		t.Fatalf("check: %+v %v", v, err)
	}
	ra := rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour}
	if _, err := r.log.Append(r.ctx, audit.Record{DecisionID: p.ID, Event: audit.EventApproved, Outcome: audit.OutcomeFired,
		Mode: audit.ModeActive, Time: now, RuleSet: audit.RuleSetRef{Version: p.RuleVersion}, Rule: audit.RuleRef{Name: p.Rule},
		SKU: "A", Site: "s1", Channel: "web", Verdict: &v, Action: ra}); err != nil {
		t.Fatal(err)
	}
	d := DeliveryGuard{Guard: r.guard, Audit: r.log, Replica: "r1", Now: r.clock}
	a := Action(p, ra, v)
	events := func() string {
		t.Helper()
		hist, err := r.log.History(r.ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, h := range hist {
			got = append(got, h.Event+":"+strconv.Itoa(h.ReleaseStep()))
		}
		return strings.Join(got, " ")
	}
	err = d.Reacquired(r.ctx, a, now)
	if got := events(); got != "approved:0" || !errors.Is(err, act.ErrPermanent) || !strings.Contains(err.Error(), "no released record") {
		t.Fatalf("reacquired with no release before it: log %q, error %v; want nothing written, refused for good saying why", got, err)
	}
	if err := d.DeadLettered(r.ctx, a, "a test"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d.Reacquired(r.ctx, a, now); err != nil {
			t.Fatal(err)
		}
	}
	if got := events(); got != "approved:0 released:1 reacquired:2" {
		t.Errorf("log %q: want the release answered once", got)
	}
}
