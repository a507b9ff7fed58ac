package decide

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/testutil"
)

// earlierCall judges each promotion's id first at another discount, as an earlier call of the same
// decision did before it died (or before its record could be written): the engine's own call then
// finds the verdict recorded (Replayed) and acts on the judged proposal.
type earlierCall struct {
	Guard
	mu   sync.Mutex
	arms map[string]float64 // decision id → the discount the earlier call was judged at
}

func (g *earlierCall) Check(ctx context.Context, p guard.Proposal) (guard.Verdict, error) {
	if p.Kind == guard.Promote {
		earlier := p
		earlier.Discount = 5
		if p.Discount == 5 {
			earlier.Discount = 11
		}
		if _, err := g.Guard.Check(ctx, earlier); err != nil {
			return guard.Verdict{}, err
		}
		g.mu.Lock()
		g.arms[p.ID] = earlier.Discount
		g.mu.Unlock()
	}
	return g.Guard.Check(ctx, p)
}

// A bandit decision whose verdict was recorded for another arm (an earlier call drew another arm
// before the posterior moved) acts on the judged arm; its record's choice must name that arm, since
// the outcome measured is credited to the choice's discount (hub/monitor/outcome): crediting the
// arm drawn now would teach the bandit the sales of another discount.
func TestBanditReplayedVerdictKeepsTheArmThatRan(t *testing.T) {
	eg := &earlierCall{arms: map[string]float64{}}
	r := newRigWith(t, testGraph, nil, nil, func(g Guard) Guard { eg.Guard = g; return eg })
	r.activate(banditRules)
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "A promoted", func() bool { return len(r.actions()) == 1 })
	m := r.actions()[0]
	fired := r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})
	if len(fired) != 1 || fired[0].Experiment == nil || fired[0].Experiment.Bandit == nil {
		t.Fatalf("fired records of A: %+v", fired)
	}
	eg.mu.Lock()
	judged := eg.arms[fired[0].DecisionID]
	eg.mu.Unlock()
	if m.Discount != judged || fired[0].Action.Discount != judged {
		t.Fatalf("promotion at %v%%, record's action %v%%, want the judged %v%%", m.Discount, fired[0].Action.Discount, judged)
	}
	if c := fired[0].Experiment.Bandit; c.Discount != m.Discount {
		t.Errorf("the promotion ran at %v%% but its record's bandit choice says %v%% (reason %s): its outcome would be credited to that arm",
			m.Discount, c.Discount, c.Reason)
	}
}

// An arm above the guard's max discount can never run, so it never gets an outcome: with a floor,
// it stays below its share forever and the floor would choose it for every decision, each one
// suppressed by max_discount — the experiment would stop promoting for good once another arm had
// an outcome. The bandit chooses among the arms the guardrails allow.
func TestBanditNeverChoosesAnArmAboveMaxDiscount(t *testing.T) {
	r := newRig(t, nil) // max discount 20
	r.activate(`name: b
hit_policy: first
rules:
  - name: promote-any
    when: has(features.units) && features.units.value > 0.0
    promote: {channels: [web], discount: 10, duration: 24h}
    experiment: {bandit: {arms: [5, 25], floor: 0.3, pool: channel}}
`)
	cfg := experiment.Config{ID: "promote-any", Bandit: &experiment.BanditConfig{Arms: []float64{5, 25}, Floor: 0.3, Pool: experiment.PoolChannel}}
	if _, err := r.exps.Record(r.ctx, cfg, experiment.Outcome{ID: "earlier", SKU: "B", Channel: "web", Discount: 5, Units: 12,
		Baseline: 10, End: r.clock().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "A decided", func() bool { return len(r.records(audit.Filter{SKU: "A"})) > 0 })
	rec := r.records(audit.Filter{SKU: "A"})[0]
	if rec.Outcome != audit.OutcomeFired || rec.Action.Discount != 5 {
		g := ""
		if rec.Verdict != nil {
			g = rec.Verdict.Guardrail
		}
		t.Fatalf("A's decision: %s %s at %v%% (%s); want fired at 5%%, the one arm the guard allows", rec.Event, rec.Outcome, rec.Action.Discount, g)
	}
}
