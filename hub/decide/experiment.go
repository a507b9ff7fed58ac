package decide

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// Experiments chooses a bandit rule's discount for one decision from the posteriors all replicas
// share (experiment.Store).
type Experiments interface {
	Choose(ctx context.Context, cfg experiment.Config, decisionID string, u experiment.Unit) (experiment.Choice, error)
}

// GuardExperimentCover names, in a suppressed decision's verdict, a bandit that found no discount the
// stock can supply.
const GuardExperimentCover = "experiment_cover"

// experimentStep is what a rule's experiment does to one promote decision before the guard sees it:
// held out (record it, act on nothing), or the discount chosen by the bandit (d.Action changed), or
// suppressed because no arm fits the cover. ref is nil for a rule without an experiment.
type experimentStep struct {
	ref      *audit.ExperimentRef
	heldOut  bool
	noArm    error // experiment.ErrNoEligibleArm, wrapped
	discount float64
}

// experiment applies rule's experiment to decision id of d. Only the acting version's promotions
// take part (a shadow decision never acts, so it neither holds out nor draws). An error is worth
// retrying (the posteriors did not answer).
func (e *Engine) experiment(ctx context.Context, rule rules.Rule, d rules.Decision, ex *explained, id string) (experimentStep, error) {
	x := rule.Experiment
	if x == nil || d.Action.Kind != rules.Promote {
		return experimentStep{discount: d.Action.Discount}, nil
	}
	st := experimentStep{ref: &audit.ExperimentRef{ID: x.ID}, discount: d.Action.Discount}
	if x.Holdout > 0 {
		a, err := experiment.Assign(x.ID, ex.in.SKU.ID, d.Channel, x.Holdout)
		if err != nil {
			return st, fmt.Errorf("experiment %s: %w", x.ID, err)
		}
		st.ref.Holdout = &a
		if a.Group == experiment.Held {
			st.heldOut = true
			return st, nil
		}
	}
	if x.Bandit == nil || e.deps.Experiments == nil {
		return st, nil
	}
	inv := ex.in.Inventory
	if !ex.invFound || !finite(inv.DailyRate) || !finite(inv.Position) {
		// Unknown stock or demand: no arm can be judged against the cover. The rule's own discount
		// stands; the guard refuses anyway if the rule reads the stock.
		return st, nil
	}
	u := experiment.Unit{
		SKU: ex.in.SKU.ID, Channel: d.Channel, Position: inv.Position,
		Baseline:    math.Max(inv.DailyRate, 0) * d.Action.Duration.Hours() / 24,
		SafetyStock: math.Max(inv.DailyRate, 0) * e.cfg.SafetyDays,
	}
	if g, ok := e.deps.Guard.(interface{ MaxDiscount(channel string) float64 }); ok {
		u.MaxDiscount = g.MaxDiscount(d.Channel)
	}
	c, err := e.deps.Experiments.Choose(ctx, *x, id, u)
	switch {
	case errors.Is(err, experiment.ErrNoEligibleArm):
		st.ref.Bandit = &c
		st.noArm = err
		return st, nil
	case err != nil:
		return st, fmt.Errorf("experiment %s: %w", x.ID, err)
	}
	st.ref.Bandit = &c
	st.discount = c.Discount
	return st, nil
}

// bandit is the bandit's choice of the step (nil without one).
func (st experimentStep) bandit() *experiment.Choice {
	if st.ref == nil {
		return nil
	}
	return st.ref.Bandit
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// holdoutID is the decision id of promotion d of rule for sku at now when the rule's experiment holds
// the unit out (ok false otherwise): derived from the period of the promotion's duration now falls in
// (UTC, aligned on multiples of the duration: a 24 h promotion's periods are UTC days) instead of
// the time bucket. Every replica, and one restarted, derives the same id for the unit within a
// period, so the unit is recorded held out once per period (the log and the done set deduplicate
// the id). A record's window may run into the next period's: the outcome measurement counts the
// overlap once (hub/monitor/outcome).
func holdoutID(version string, rule rules.Rule, d rules.Decision, sku string, now time.Time) (string, bool) {
	x := rule.Experiment
	if x == nil || x.Holdout <= 0 || d.Action.Kind != rules.Promote {
		return "", false
	}
	a, err := experiment.Assign(x.ID, sku, d.Channel, x.Holdout)
	if err != nil || a.Group != experiment.Held {
		return "", false // an error is the experiment step's to report
	}
	return guard.DecisionID(version, d.Rule, sku, d.Channel, HoldoutPeriod(now, d.Action.Duration)), true
}

// HoldoutPeriod is the start of the period a held-out decision at t of a promotion lasting dur falls
// in: periods of dur aligned on its multiples since the zero time, in UTC. The engine records a
// held-out unit once per period; the backtest does the same.
func HoldoutPeriod(t time.Time, dur time.Duration) time.Time {
	return guard.TimeBucket(t, dur)
}

// heldOut records a decision its experiment held out: eligible, and deliberately not promoted, so
// that its sales measure what the promotion changed. Nothing is claimed in the guard (no cap or
// cooldown is used up). Its id is the period's (holdoutID): the same rule does not record this
// SKU × channel again, on any replica, until the next period of the promotion's duration.
func (e *Engine) heldOut(ctx context.Context, ls *liveSets, set *rules.Set, mode string, res *rules.Result, d rules.Decision,
	rule rules.Rule, ex *explained, id string, st experimentStep, now time.Time) error {
	rec := e.record(ls, set, mode, res, d, rule, ex, now)
	rec.DecisionID, rec.Event, rec.Outcome, rec.Experiment = id, audit.EventDecided, audit.OutcomeHeldOut, st.ref
	if stored, err := e.publish(ctx, ls, ex, rec); !stored {
		return err
	}
	e.Metrics.HeldOut.Add(1)
	e.done.add(id)
	return nil
}
