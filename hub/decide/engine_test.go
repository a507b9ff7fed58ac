package decide

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/testutil"
)

// An over-stocked SKU made by a running line is promoted on every channel it is sold via, once per
// decision: more input changes in the same time bucket decide nothing new.
func TestPromoteOncePerDecision(t *testing.T) {
	r := newRig(t, nil)
	v := r.activate(testRules)
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two promotions", func() bool { return len(r.actions()) == 2 })
	var chans []string
	for _, m := range r.actions() {
		if m.Kind != "promote" || m.SKU != "A" || m.Discount != 10 || m.RuleSetVersion != v || m.Rule != "promote-over" {
			t.Errorf("action %+v", m)
		}
		if got := m.End.Sub(m.Start); got != 24*time.Hour {
			t.Errorf("promotion lasts %s, want 24h", got)
		}
		chans = append(chans, m.Channel)
	}
	slices.Sort(chans)
	if !slices.Equal(chans, []string{"retail", "web"}) {
		t.Errorf("channels %v", chans)
	}
	fired := r.records(audit.Filter{Outcome: audit.OutcomeFired})
	if len(fired) != 2 {
		t.Fatalf("%d fired records, want 2", len(fired))
	}
	rec := fired[0]
	if rec.RuleSet.Version != v || rec.Rule.When == "" || rec.Verdict == nil || len(rec.Verdict.Assessments) == 0 {
		t.Errorf("record lacks rule or verdict: %+v", rec)
	}
	var units *audit.Input
	for i := range rec.Inputs {
		if rec.Inputs[i].Name == "units" {
			units = &rec.Inputs[i]
		}
	}
	if units == nil || units.Lineage.Agent != "agent-1" || units.Lineage.StreamSeq == 0 || units.EventTime.IsZero() {
		t.Errorf("units input without lineage: %+v", rec.Inputs)
	}
	if len(rec.Paths) == 0 || rec.Inventory == nil || rec.Inventory.Inventory.DaysOfCover != 45 {
		t.Errorf("paths %v inventory %+v", rec.Paths, rec.Inventory)
	}

	// More changes in the same bucket: evaluated again, decided again to the same ids, acted never.
	before := r.eng.Metrics.Evaluations.Load()
	for i := range 5 {
		r.state.setFeature("units", "A", float64(41+i), r.clock(), nil)
		r.eng.FeatureChanged("units", "A")
	}
	testutil.WaitFor(t, 10*time.Second, "re-evaluations", func() bool { return r.eng.Metrics.Evaluations.Load() >= before+1 })
	// Another SKU's decision is a marker that the engine went through a later round.
	r.overstocked("l2", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted", func() bool { return len(r.actions()) == 3 })
	if n := len(r.records(audit.Filter{SKU: "A"})); n != 2 {
		t.Errorf("%d records of A, want 2", n)
	}
}

// A stopped line and short stock put a hold on every channel; the guard lets holds through
// without cooldown or caps.
func TestHoldWhenLineStops(t *testing.T) {
	r := newRig(t, nil)
	r.activate(testRules)
	now := r.clock()
	r.state.setCover("A", "s1", 3)
	r.state.setFeature("availability", "l1", 0, now, nil)
	r.eng.FeatureChanged("availability", "l1")
	testutil.WaitFor(t, 10*time.Second, "two holds", func() bool { return len(r.actions()) == 2 })
	for _, m := range r.actions() {
		if m.Kind != "hold" || m.Reason != "line down and short" || !m.End.IsZero() {
			t.Errorf("action %+v", m)
		}
	}
	if n := len(r.records(audit.Filter{Outcome: audit.OutcomeHeld})); n != 2 {
		t.Errorf("%d held records, want 2", n)
	}
}

// Nothing acts on stale, historical or partial inputs, nor on an unknown stock: each decision is
// recorded as suppressed by the inputs guardrail, naming the input.
func TestNoActionOnBadInputs(t *testing.T) {
	// A rule that reads a stale value does not match at all (reading it is an evaluation error);
	// this one only asks whether there is one, so the guardrail is what stops it.
	careless := strings.Replace(testRules, "has(features.units) && features.units.value > 0.0", "has(features.units)", 1)
	cases := map[string]func(r *rig){
		"stale units": func(r *rig) {
			r.state.setFeature("units", "A", 40, r.clock(), func(rd *features.Reading) { rd.Stale = true })
		},
		"historical units": func(r *rig) {
			r.state.setFeature("units", "A", 40, r.clock(), func(rd *features.Reading) { rd.Historical = true })
		},
		"partial line": func(r *rig) {
			r.state.setFeature("availability", "l1", 0.9, r.clock(), func(rd *features.Reading) { rd.Partial = true })
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, nil)
			r.activate(careless)
			r.state.setCover("A", "s1", 45)
			r.state.setFeature("units", "A", 40, r.clock(), nil)
			r.state.setFeature("availability", "l1", 0.9, r.clock(), nil)
			spoil(r)
			r.eng.FeatureChanged("availability", "l1")
			testutil.WaitFor(t, 10*time.Second, "suppressed records", func() bool {
				return len(r.records(audit.Filter{Outcome: audit.OutcomeSuppressed})) == 2
			})
			for _, rec := range r.records(audit.Filter{Outcome: audit.OutcomeSuppressed}) {
				if rec.Verdict.Guardrail != guard.GInputs {
					t.Errorf("suppressed by %q, want %q", rec.Verdict.Guardrail, guard.GInputs)
				}
			}
			if n := len(r.actions()); n != 0 {
				t.Errorf("%d actions, want none", n)
			}
		})
	}
}

// A decision whose inputs cannot be used yet (the first, partial window after a start) is
// deferred, not spent: recorded once, and made in the same time bucket once they can be used.
func TestDeferredUntilInputsUsable(t *testing.T) {
	r := newRig(t, nil)
	r.activate(testRules)
	r.state.setCover("A", "s1", 45)
	partial := func(rd *features.Reading) { rd.Partial = true }
	r.state.setFeature("units", "A", 40, r.clock(), partial)
	r.state.setFeature("availability", "l1", 0.9, r.clock(), partial)
	r.eng.FeatureChanged("availability", "l1")
	testutil.WaitFor(t, 10*time.Second, "two deferred records", func() bool {
		return len(r.records(audit.Filter{Outcome: audit.OutcomeSuppressed})) == 2
	})
	// Evaluated again on the same partial input: nothing new is recorded.
	before := r.eng.rounds.Load()
	r.eng.FeatureChanged("availability", "l1")
	testutil.WaitFor(t, 10*time.Second, "another round", func() bool { return r.eng.settled(before) })
	deferred := r.records(audit.Filter{Outcome: audit.OutcomeSuppressed})
	if len(deferred) != 2 || len(r.actions()) != 0 {
		t.Fatalf("%d suppressed records, %d actions after a second partial round; want 2 and none", len(deferred), len(r.actions()))
	}
	ids := map[string]bool{}
	for _, rec := range deferred {
		if rec.Event != audit.EventDeferred || rec.Verdict.Guardrail != guard.GInputs || !strings.Contains(rec.Verdict.Reason, "partial") {
			t.Errorf("%s record, verdict %+v", rec.Event, rec.Verdict)
		}
		ids[rec.DecisionID] = true
	}
	// The next window is whole, in the same time bucket: the decisions are made and act.
	r.state.setFeature("units", "A", 40, r.clock(), nil)
	r.state.setFeature("availability", "l1", 0.9, r.clock(), nil)
	r.eng.FeatureChanged("availability", "l1")
	testutil.WaitFor(t, 10*time.Second, "two promotions", func() bool { return len(r.actions()) == 2 })
	for _, rec := range r.records(audit.Filter{Outcome: audit.OutcomeFired}) {
		if rec.Event != audit.EventDecided || !ids[rec.DecisionID] {
			t.Errorf("fired %s record %s, want decided under a deferred id %v", rec.Event, rec.DecisionID, ids)
		}
	}
	// Its explanation lists both events and explains the decision from the record it was made in.
	for id := range ids {
		recs, err := r.log.History(r.ctx, id)
		if err != nil || len(recs) != 2 {
			t.Fatalf("history of %s: %d records, %v", id, len(recs), err)
		}
		if d := audit.Decided(recs); d.Event != audit.EventDecided || d.Outcome != audit.OutcomeFired || slices.ContainsFunc(d.Inputs, func(in audit.Input) bool { return in.Partial }) {
			t.Errorf("explained from the %s record (%s)", d.Event, d.Outcome)
		}
		var text strings.Builder
		audit.Explain(&text, recs, nil)
		if !strings.Contains(text.String(), "deferred") || !strings.Contains(text.String(), ": fired") {
			t.Errorf("explanation:\n%s", text.String())
		}
	}
}

// A rule that reads the stock does not act for a SKU whose stock nobody has counted: neither
// plenty nor none.
func TestUnknownStockDoesNotAct(t *testing.T) {
	r := newRig(t, nil)
	r.activate(`name: t
hit_policy: first
rules:
  - name: not-over
    when: "!(inventory.days_of_cover > 30.0) && lines.exists(l, l.state == \"running\")"
    promote: {channels: [web], discount: 5, duration: 1h}
`)
	r.state.setFeature("availability", "l1", 0.9, r.clock(), nil)
	r.eng.FeatureChanged("availability", "l1")
	testutil.WaitFor(t, 10*time.Second, "a suppressed record", func() bool {
		return len(r.records(audit.Filter{Outcome: audit.OutcomeSuppressed})) == 1
	})
	rec := r.records(audit.Filter{})[0]
	if rec.Event != audit.EventDeferred || rec.Verdict.Guardrail != guard.GInputs || !strings.Contains(rec.Verdict.Reason, "inventory") {
		t.Errorf("%s record, verdict %+v", rec.Event, rec.Verdict)
	}
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions, want none", n)
	}
}

// A discount above the approval threshold waits for a person; an approval delivers it, recorded
// with the approver.
func TestApprovalQueue(t *testing.T) {
	r := newRig(t, nil)
	r.activate(strings.Replace(testRules, "discount: 10", "discount: 15", 1))
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two queued decisions", func() bool {
		p, err := r.guard.Pending(r.ctx)
		return err == nil && len(p) == 2
	})
	if n := len(r.actions()); n != 0 {
		t.Fatalf("%d actions before approval", n)
	}
	// Two hours (two time buckets) later the rule still holds: the requests already queued are
	// enough, no new ones pile up.
	r.advance(2 * time.Hour)
	before := r.eng.rounds.Load()
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "the SKU evaluated again", func() bool { return r.eng.settled(before) })
	if p, err := r.guard.Pending(r.ctx); err != nil || len(p) != 2 {
		t.Fatalf("%d requests queued after another bucket (want still 2): %v", len(p), err)
	}
	pend, _ := r.guard.Pending(r.ctx)
	ap := &Approver{Guard: r.guard, Audit: r.log, Outbox: r.outbox, Replica: "r1", Now: r.clock}
	if _, err := ap.Answer(r.ctx, pend[0].Proposal.ID, "alice", "ok", true); err == nil {
		t.Errorf("alice activated the rules and approved her own request")
	}
	v, err := ap.Answer(r.ctx, pend[0].Proposal.ID, "bob", "stock is real", true)
	if err != nil || !v.Acts() {
		t.Fatalf("approve: %+v %v", v, err)
	}
	if _, err := ap.Answer(r.ctx, pend[1].Proposal.ID, "bob", "not this one", false); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "one promotion", func() bool { return len(r.actions()) == 1 })
	if m := r.actions()[0]; m.DecisionID != pend[0].Proposal.ID || m.Discount != 15 {
		t.Errorf("delivered %+v", m)
	}
	hist, err := r.log.History(r.ctx, pend[0].Proposal.ID)
	if err != nil || len(hist) != 2 || hist[1].Event != audit.EventApproved || hist[1].Verdict.Approval == nil || hist[1].Verdict.Approval.By != "bob" {
		t.Errorf("history %+v %v", hist, err)
	}
	hist, _ = r.log.History(r.ctx, pend[1].Proposal.ID)
	if len(hist) != 2 || hist[1].Outcome != audit.OutcomeRejected {
		t.Errorf("rejected history %+v", hist)
	}
}

// A unit the inventory has seen but the graph does not make anywhere (no line: a SKU bought in, or
// stocked at a site without lines) is evaluated like the others: when the rules change, and on
// every timer (a hold repeats once per bucket while its rule holds).
func TestInventoryOnlyUnitReevaluated(t *testing.T) {
	g := strings.Replace(testGraph, "skus: [{id: A}, {id: B}]", "skus: [{id: A}, {id: B}, {id: C}]", 1) +
		"  - {kind: sold_via, from: C, to: web}\n"
	r := newRigOn(t, g, nil, func(c *Config) { c.Timer = time.Second })
	// Its stock is known before any rules are active.
	r.state.setCover("C", "s1", 3)
	r.eng.PositionChanged("C", "s1")
	r.activate(`name: t
hit_policy: first
rules:
  - name: hold-short
    when: inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: short}
`)
	testutil.WaitFor(t, 10*time.Second, "C held when the rules became active", func() bool { return len(r.actions()) == 1 })
	r.advance(time.Hour)
	testutil.WaitFor(t, 10*time.Second, "C held again in the next bucket, on the timer", func() bool { return len(r.actions()) == 2 })
	for _, m := range r.actions() {
		if m.SKU != "C" || m.Site != "s1" || m.Channel != "web" || m.Kind != "hold" {
			t.Errorf("acted %+v", m)
		}
	}
}

// A SKU sold via a channel act does not deliver on (in the graph, not in act.channels) is promoted on
// the others; for that channel nothing is claimed, reserved or recorded, and it is counted and
// logged: claimed, it would be recorded fired and then fail in the outbox for good.
func TestUndeliverableChannelNotDecided(t *testing.T) {
	g := strings.Replace(testGraph, "channels: [{id: web}, {id: retail}]", "channels: [{id: web}, {id: retail}, {id: wholesale}]", 1) +
		"  - {kind: sold_via, from: A, to: wholesale}\n"
	r := newRigOn(t, g, func(c *guard.Config) { c.Approval.Above = 0 }, nil)
	r.activate(testRules)
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two promotions and the third channel counted", func() bool {
		return len(r.actions()) == 2 && r.eng.Metrics.Undeliverable.Load() > 0
	})
	for _, m := range r.actions() {
		if m.Channel == "wholesale" {
			t.Fatalf("acted on a channel act does not deliver on: %+v", m)
		}
	}
	for _, rec := range r.records(audit.Filter{}) {
		if rec.Channel == "wholesale" {
			t.Fatalf("recorded a decision for the undeliverable channel: %+v", rec)
		}
	}
	if n := r.eng.Metrics.Errors.Load(); n != 0 {
		t.Fatalf("%d decisions not completed (retried): the undeliverable one must not be retried", n)
	}
}

// TestSelfApprovalAfterAnotherChange: the requester of a rule set's decisions is who made it
// active, whoever changed the rules state since: after bob starts a shadow of another version,
// alice (who activated the set) still may not approve its requests, and bob may.
func TestSelfApprovalAfterAnotherChange(t *testing.T) {
	r := newRig(t, nil)
	r.activate(strings.Replace(testRules, "discount: 10", "discount: 15", 1)) // by alice
	other, err := r.reg.Store(r.ctx, []byte(strings.Replace(testRules, "name: t", "name: t2", 1)), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.reg.Shadow(r.ctx, other, "bob", "try t2 in shadow"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the engine running the shadow", func() bool {
		l := r.eng.Live()
		return l != nil && l.Shadow != nil && l.Shadow.Version() == other
	})
	r.overstocked("l1", "A")
	var pend []guard.Request
	testutil.WaitFor(t, 10*time.Second, "queued decisions", func() bool {
		pend, err = r.guard.Pending(r.ctx)
		return err == nil && len(pend) > 0
	})
	if rq := pend[0].Proposal.Requester; rq != "alice" {
		t.Errorf("requester %q, want alice (who activated the rule set), not the shadow's bob", rq)
	}
	ap := &Approver{Guard: r.guard, Audit: r.log, Outbox: r.outbox, Replica: "r1", Now: r.clock}
	if v, err := ap.Answer(r.ctx, pend[0].Proposal.ID, "alice", "mine", true); !errors.Is(err, guard.ErrSelfApproval) {
		t.Fatalf("alice approving a request of the rule set she activated: %s %v, want ErrSelfApproval", v.Outcome, err)
	}
	if v, err := ap.Answer(r.ctx, pend[0].Proposal.ID, "bob", "stock is real", true); err != nil || !v.Acts() {
		t.Fatalf("bob's approval: %+v %v", v, err)
	}
}
