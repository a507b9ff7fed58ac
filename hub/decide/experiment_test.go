package decide

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/internal/testutil"
)

const holdoutRules = `name: x
hit_policy: first
rules:
  - name: promote-over
    when: inventory.days_of_cover > 30.0 && has(features.units) && features.units.value > 0.0
    promote: {channels: ["*"], discount: 10, duration: 24h}
    experiment: {id: %s, holdout: 0.5}
`

// A holdout: the units its deterministic draw holds out are recorded as held out (with the draw)
// and never acted on; the others are promoted, their records carrying the draw too. Every unit of
// the graph (A on web and retail, B on web) goes the way experiment.Assign says.
func TestHoldoutUnits(t *testing.T) {
	units := [][2]string{{"A", "web"}, {"A", "retail"}, {"B", "web"}}
	// An experiment id whose draw puts at least one unit in each group (the draw is fixed per id).
	var id string
	want := map[[2]string]experiment.Group{}
	for i := 0; id == ""; i++ {
		cand := fmt.Sprintf("ho-%d", i)
		groups := map[experiment.Group]int{}
		for _, u := range units {
			a, err := experiment.Assign(cand, u[0], u[1], 0.5)
			if err != nil {
				t.Fatal(err)
			}
			want[u] = a.Group
			groups[a.Group]++
		}
		if groups[experiment.Held] > 0 && groups[experiment.Treated] > 0 {
			id = cand
		}
	}
	r := newRig(t, nil)
	r.activate(fmt.Sprintf(holdoutRules, id))
	r.overstocked("l1", "A")
	r.overstocked("l2", "B")
	testutil.WaitFor(t, 10*time.Second, "every unit decided", func() bool { return len(r.records(audit.Filter{})) == len(units) })
	var acted [][2]string
	for _, m := range r.actions() {
		acted = append(acted, [2]string{m.SKU, m.Channel})
	}
	for _, rec := range r.records(audit.Filter{}) {
		u := [2]string{rec.SKU, rec.Channel}
		x := rec.Experiment
		if x == nil || x.ID != id || x.Holdout == nil || x.Holdout.Group != want[u] {
			t.Errorf("%v: experiment %+v, want group %s", u, x, want[u])
			continue
		}
		switch want[u] {
		case experiment.Held:
			if rec.Outcome != audit.OutcomeHeldOut || slices.Contains(acted, u) {
				t.Errorf("%v held out: outcome %s, acted %v", u, rec.Outcome, slices.Contains(acted, u))
			}
		case experiment.Treated:
			if rec.Outcome != audit.OutcomeFired || !slices.Contains(acted, u) {
				t.Errorf("%v treated: outcome %s, acted %v", u, rec.Outcome, slices.Contains(acted, u))
			}
		}
	}
}

const banditRules = `name: b
hit_policy: first
rules:
  - name: promote-any
    when: has(features.units) && features.units.value > 0.0
    promote: {channels: [web], discount: 10, duration: 24h}
    experiment: {bandit: {arms: [5, 8, 11]}}
`

// A bandit: the promotion runs with the arm chosen, recorded with the posterior it was drawn from;
// a SKU whose stock cannot cover even the safety stock gets no arm and is suppressed, saying why.
func TestBanditChoosesWithinCover(t *testing.T) {
	r := newRig(t, nil)
	r.activate(banditRules)
	r.overstocked("l1", "A") // 45 days of cover
	now := r.clock()
	r.state.setFeature("units", "B", 40, now, nil)
	r.state.setCover("B", "s1", 2) // 20 units against a safety stock of 3 days (30)
	r.eng.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "A promoted", func() bool { return len(r.actions()) == 1 })
	m := r.actions()[0]
	fired := r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})
	if len(fired) != 1 {
		t.Fatalf("%d fired records of A", len(fired))
	}
	b := fired[0].Experiment
	if b == nil || b.Bandit == nil || b.ID != "promote-any" || len(b.Bandit.Arms) != 3 {
		t.Fatalf("A's record has no bandit choice: %+v", b)
	}
	if !slices.Contains([]float64{5, 8, 11}, m.Discount) || m.Discount != b.Bandit.Discount || fired[0].Action.Discount != m.Discount {
		t.Errorf("promotion at %v%%, the choice says %v%%, the record %v%%", m.Discount, b.Bandit.Discount, fired[0].Action.Discount)
	}
	testutil.WaitFor(t, 10*time.Second, "B suppressed", func() bool {
		return len(r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeSuppressed})) == 1
	})
	rec := r.records(audit.Filter{SKU: "B"})[0]
	if rec.Verdict == nil || rec.Verdict.Guardrail != GuardExperimentCover || !strings.Contains(rec.Verdict.Reason, "no eligible arm") {
		t.Errorf("B's verdict %+v", rec.Verdict)
	}
	// The record keeps the numbers the arms were judged against.
	if x := rec.Experiment; x == nil || x.Bandit == nil || x.Bandit.Unit.Position != 20 || x.Bandit.Unit.SafetyStock != 30 {
		t.Errorf("B's record does not say the stock its arms were judged against: %+v", x)
	}
	if n := len(r.actions()); n != 1 {
		t.Errorf("%d actions: B acted without an arm", n)
	}
}

// The why of a bandit's decision lists the arms it chose among.
func TestBanditWhy(t *testing.T) {
	r := newRig(t, nil)
	r.activate(banditRules)
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "A promoted", func() bool { return len(r.actions()) == 1 })
	var b strings.Builder
	audit.Explain(&b, r.records(audit.Filter{SKU: "A"}), nil)
	for _, want := range []string{"experiment promote-any: bandit", "stock: position ", "safety stock ", "5%: expected lift", "8%: expected lift", "11%: expected lift"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("why lacks %q:\n%s", want, b.String())
		}
	}
}

// Two replicas judge one bandit decision's cover against different stock (a delivery counted
// between their evaluations, or one restarted later in the bucket): the first finds no arm, the
// second draws one, claims the id in the guard and acts. The log must not say the decision was
// suppressed while its promotion runs: an acted decision has its fired record (which the KPIs
// and the bandit's outcome read).
func TestBanditNoArmThenArmOnAnotherReplica(t *testing.T) {
	r := newRig(t, nil)
	r.activate(banditRules)
	now := r.clock()
	r.state.setFeature("units", "B", 40, now, nil)
	r.state.setCover("B", "s1", 2) // no arm fits
	r.eng.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "B suppressed for its cover", func() bool {
		return len(r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeSuppressed})) == 1
	})

	// Replica r2 sees B after a delivery: 45 days of cover.
	st := newFakeState()
	st.setFeature("units", "B", 40, now, nil)
	st.setCover("B", "s1", 45)
	g, err := graph.Load([]byte(testGraph))
	if err != nil {
		t.Fatal(err)
	}
	gc := guard.DefaultConfig()
	gc.MaxDiscount, gc.Approval.Above, gc.Cooldown, gc.Now = 20, 12, time.Hour, r.clock
	logger := testutil.Logger(t, slog.LevelWarn)
	g2, err := guard.New(r.ctx, r.js, gc, "r2", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g2.Close() })
	cfg := DefaultConfig()
	cfg.Timer = time.Hour
	e2, err := New(cfg, Deps{Graph: g, State: st, Experiments: r.exps, Features: testDefs, Guard: g2, Outbox: r.outbox,
		Audit: r.log, Replica: "r2", Now: r.clock, Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = e2.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	e2.SetLive(r.eng.Live())
	e2.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted by r2", func() bool { return len(r.actions()) == 1 })

	for _, m := range r.actions() {
		recs, err := r.log.History(r.ctx, m.DecisionID)
		if err != nil || len(recs) == 0 {
			t.Fatalf("history of %s: %d records, %v", m.DecisionID, len(recs), err)
		}
		if d := audit.Decided(recs); d.Event != audit.EventDecided || d.Outcome != audit.OutcomeFired {
			t.Errorf("%s promoted at %v%% but its decision is recorded %s %s (%s)", m.SKU, m.Discount, d.Event, d.Outcome, d.Verdict.Guardrail)
		}
	}
}

// A held-out unit whose inputs cannot be used yet (a partial window, a replayed backlog) is
// deferred like a treated one, not recorded held out: the holdout's control group must not gain
// units that the treated group, stopped by the same inputs, never gets.
func TestHoldoutDeferredOnUnusableInputs(t *testing.T) {
	var id string
	for i := 0; id == ""; i++ {
		cand := fmt.Sprintf("ho-%d", i)
		web, err := experiment.Assign(cand, "B", "web", 0.5)
		if err != nil {
			t.Fatal(err)
		}
		if web.Group == experiment.Held {
			id = cand
		}
	}
	r := newRig(t, nil)
	r.activate(fmt.Sprintf(holdoutRules, id))
	r.state.setCover("B", "s1", 45)
	r.state.setFeature("units", "B", 40, r.clock(), func(rd *features.Reading) { rd.Partial = true })
	r.eng.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "B recorded", func() bool { return len(r.records(audit.Filter{SKU: "B"})) == 1 })
	if rec := r.records(audit.Filter{SKU: "B"})[0]; rec.Event != audit.EventDeferred || rec.Outcome == audit.OutcomeHeldOut {
		t.Fatalf("B on partial units: %s %s, want deferred", rec.Event, rec.Outcome)
	}
	// Whole inputs in the same bucket: now it is held out.
	r.state.setFeature("units", "B", 40, r.clock(), nil)
	r.eng.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "B held out", func() bool {
		return len(r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeHeldOut})) == 1
	})
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions for a held-out unit", n)
	}
}

// A held-out unit is recorded once per period of its promotion's duration on every replica: r1
// records B held out; three hours (three time buckets) later a replica that did not see it (r2, or
// r1 restarted) evaluates B and must find the same decision, not record a second held-out window
// overlapping the first (the outcome measurement would count the control unit's sales twice). In
// the next period B is recorded held out again, once.
func TestHoldoutRecordedOncePerPeriodAcrossReplicas(t *testing.T) {
	var id string
	for i := 0; id == ""; i++ {
		cand := fmt.Sprintf("ho-%d", i)
		web, err := experiment.Assign(cand, "B", "web", 0.5)
		if err != nil {
			t.Fatal(err)
		}
		if web.Group == experiment.Held {
			id = cand
		}
	}
	r := newRig(t, nil)
	r.nowMu.Lock()
	r.now = time.Now().UTC().Truncate(24 * time.Hour).Add(time.Hour) // 01:00, in a 24 h promotion's period
	r.nowMu.Unlock()
	r.activate(fmt.Sprintf(holdoutRules, id))
	fresh := func(e *Engine) {
		r.state.setCover("B", "s1", 45)
		r.state.setFeature("units", "B", 40, r.clock(), nil)
		e.FeatureChanged("units", "B")
	}
	held := func() []audit.Record {
		return r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeHeldOut})
	}
	fresh(r.eng)
	testutil.WaitFor(t, 10*time.Second, "B held out by r1", func() bool { return len(held()) == 1 })

	r.advance(3 * time.Hour)
	fresh(r.eng)
	settle(t, r.eng, "r1 evaluated B again")
	e2 := r.replica("r2")
	fresh(e2)
	settle(t, e2, "r2 evaluated B")
	if recs := held(); len(recs) != 1 {
		for _, rec := range recs {
			t.Logf("held out %s at %s by %s", rec.DecisionID, rec.Time.Format(time.RFC3339), rec.Replica)
		}
		t.Fatalf("%d held-out records of B within one 24 h period, want 1", len(recs))
	}

	r.advance(24 * time.Hour) // the next period
	fresh(e2)
	fresh(r.eng)
	testutil.WaitFor(t, 10*time.Second, "B held out again in the next period", func() bool { return len(held()) >= 2 })
	settle(t, e2, "r2 evaluated B")
	settle(t, r.eng, "r1 evaluated B")
	if recs := held(); len(recs) != 2 || recs[0].DecisionID == recs[1].DecisionID {
		t.Fatalf("%d held-out records of B over two periods, want 2 with their own ids", len(recs))
	}
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions for a held-out unit", n)
	}
}
