package guard

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// evaluate runs every guardrail on p for an action at time at, in a fixed order: first those that
// need no shared state (kill switch, inputs, time, discount, approval), then those that consume
// it (cooldown, the channel's day, the whole day), each reserved by compare-and-set so that
// concurrent replicas cannot pass a limit together. approved is set when an approval is applied:
// the approval guardrail and the time check (the proposal waited in the queue) are then skipped.
// touched reports whether a reservation may have been written, so that a suppressed verdict gives
// it back once recorded. kill, when set, gives the first reading of the kill switch (one taken
// alongside the claim); nil reads it here. again is set when an allowed decision reserves again
// what it gave back (Reacquire): the approval guardrail and the proposal's age are skipped as for
// an approval (it passed them when it was decided).
func (g *Guard) evaluate(ctx context.Context, p *Proposal, at time.Time, approved *Approval, again bool, kill func() (Assessment, error)) (Verdict, bool, error) {
	v := Verdict{DecisionID: p.ID, ActionTime: at.UTC(), Replica: g.replica, Approval: approved}
	var as []Assessment
	add := func(a Assessment) { as = append(as, a) }

	if kill == nil {
		kill = func() (Assessment, error) { return g.killAssessment(ctx) }
	}
	ka, err := kill()
	if err != nil {
		return Verdict{}, false, fmt.Errorf("guard: decision %s: %w", p.ID, err)
	}
	add(ka)
	add(InputsAssessment(p))
	if approved == nil && !again {
		skew := p.Time.Sub(g.cfg.now())
		add(Assessment{Guardrail: GTimeSkew, Value: skew.Seconds(), Limit: g.cfg.MaxSkew.Seconds(),
			Passed: skew.Abs() <= g.cfg.MaxSkew,
			Detail: "seconds between the proposal's time and the guard's clock"})
	}
	if p.Kind == Promote {
		add(Assessment{Guardrail: GMaxDiscount, Value: p.Discount, Limit: g.cfg.MaxDiscount,
			Passed: p.Discount <= g.cfg.MaxDiscount, Detail: "discount percent"})
		if ch, ok := g.cfg.Channels[p.Channel]; ok && ch.MaxDiscount > 0 {
			add(Assessment{Guardrail: GMaxDiscountChannel, Value: p.Discount, Limit: ch.MaxDiscount,
				Passed: p.Discount <= ch.MaxDiscount, Detail: "discount percent on channel " + p.Channel})
		}
		if approved == nil && !again && g.cfg.Approval.Above > 0 {
			add(Assessment{Guardrail: GApproval, Value: p.Discount, Limit: g.cfg.Approval.Above,
				Passed: p.Discount <= g.cfg.Approval.Above, Detail: "discounts above the limit need a person's approval"})
		}
	}
	for _, a := range as {
		if !a.Passed {
			return g.stop(v, as, a), false, nil
		}
	}
	if p.Kind != Promote {
		return g.allow(v, as), false, nil
	}

	// Shared state, one compare-and-set each. Each checks its own limit in its own write, so no
	// interleaving of replicas passes one; a later failure leaves the earlier ones reserved until
	// the suppressed verdict is recorded (finish gives them back).
	w, wDetail := g.weight(p)
	chLimits, chOK := g.cfg.Channels[p.Channel]
	if w < 0 && (g.cfg.Daily.MaxBudget > 0 || chLimits.Daily.MaxBudget > 0) {
		a := Assessment{Guardrail: GDailyBudget, Value: 0, Limit: g.cfg.Daily.MaxBudget, Detail: wDetail}
		add(a)
		return g.stop(v, as, a), false, nil
	}
	w = max(w, 0)
	reserved := false
	if g.cfg.Cooldown > 0 {
		reserved = true
		a, ok, err := g.reserveCooldown(ctx, coolKey(p.SKU, p.Channel), p.ID, at)
		if err != nil {
			return Verdict{}, true, fmt.Errorf("guard: decision %s: cooldown: %w", p.ID, err)
		}
		add(a)
		if !ok {
			return g.stop(v, as, a), true, nil
		}
	}
	day := g.day(at)
	if chOK && (chLimits.Daily.MaxPromotions > 0 || chLimits.Daily.MaxBudget > 0) {
		reserved = true
		cas, ok, err := g.reserveDay(ctx, dayKey(day, p.Channel), p.ID, at, w, chLimits.Daily, GDailyCountChannel, GDailyBudgetChannel, day+" on channel "+p.Channel)
		if err != nil {
			return Verdict{}, true, fmt.Errorf("guard: decision %s: daily caps of %s: %w", p.ID, p.Channel, err)
		}
		as = append(as, cas...)
		if !ok {
			return g.stop(v, as, firstFailed(cas)), true, nil
		}
	}
	if g.cfg.Daily.MaxPromotions > 0 || g.cfg.Daily.MaxBudget > 0 {
		reserved = true
		cas, ok, err := g.reserveDay(ctx, dayKey(day, ""), p.ID, at, w, g.cfg.Daily, GDailyCount, GDailyBudget, day+" on all channels")
		if err != nil {
			return Verdict{}, true, fmt.Errorf("guard: decision %s: daily caps: %w", p.ID, err)
		}
		as = append(as, cas...)
		if !ok {
			return g.stop(v, as, firstFailed(cas)), true, nil
		}
	}
	// The clock again: a cooldown ledger forgets promotions more than cooldown + 2 × max_skew
	// before the clock of whoever writes it, which is safe only for an action time still within
	// max_skew of the clock now (a decision stalled in retries may no longer be).
	if late := g.cfg.now().Sub(at); late > g.cfg.MaxSkew {
		a := Assessment{Guardrail: GTimeSkew, Value: -late.Seconds(), Limit: g.cfg.MaxSkew.Seconds(),
			Detail: "seconds between the action time and the guard's clock once the caps were reserved"}
		add(a)
		return g.stop(v, as, a), true, nil
	}
	if !reserved {
		// Nothing reserved: the first reading is as fresh as a second would be (the verdict's
		// write follows at once).
		return g.allow(v, as), true, nil
	}
	// The kill switch again, fresh: it may have been thrown while this decision reserved.
	if ka, err = g.killAssessment(ctx); err != nil {
		return Verdict{}, true, fmt.Errorf("guard: decision %s: %w", p.ID, err)
	}
	if !ka.Passed {
		add(ka)
		return g.stop(v, as, ka), true, nil
	}
	return g.allow(v, as), true, nil
}

// weight is what p takes from a daily budget, and how it was computed; -1 when it cannot be.
func (g *Guard) weight(p *Proposal) (float64, string) {
	if g.cfg.BudgetWeight == WeightDiscountUnits {
		if p.ExpectedUnits <= 0 {
			return -1, "budget_weight is discount_x_units and the proposal has no expected units"
		}
		return p.Discount * p.ExpectedUnits, fmt.Sprintf("discount %g × expected units %g", p.Discount, p.ExpectedUnits)
	}
	return p.Discount, fmt.Sprintf("discount %g", p.Discount)
}

func firstFailed(as []Assessment) Assessment {
	for _, a := range as {
		if !a.Passed {
			return a
		}
	}
	return Assessment{}
}

func (g *Guard) allow(v Verdict, as []Assessment) Verdict {
	v.Outcome, v.Assessments, v.Decided = Allow, as, g.cfg.now().UTC()
	return v
}

// stop ends the evaluation at the failed assessment a: a suppression, or a request for approval
// when the approval threshold is what failed.
func (g *Guard) stop(v Verdict, as []Assessment, a Assessment) Verdict {
	v.Assessments, v.Decided, v.Guardrail = as, g.cfg.now().UTC(), a.Guardrail
	v.Outcome = Suppress
	if a.Guardrail == GApproval {
		v.Outcome = NeedsApproval
	}
	v.Reason = reason(a)
	return v
}

func reason(a Assessment) string {
	switch a.Guardrail {
	case GKillSwitch, GInputs:
		return a.Detail
	case GTimeSkew:
		return fmt.Sprintf("proposal dated %.0fs from the guard's clock, limit ±%.0fs", a.Value, a.Limit)
	case GApproval:
		return fmt.Sprintf("discount %g%% above the approval threshold %g%%", a.Value, a.Limit)
	case GCooldown:
		return fmt.Sprintf("another promotion of this SKU on this channel %.0fs away, cooldown %.0fs", a.Value, a.Limit)
	}
	return fmt.Sprintf("%s: %g over the limit %g (%s)", a.Guardrail, a.Value, a.Limit, a.Detail)
}

// InputsAssessment refuses any stale, historical, partial, bad-quality or drifting input, naming
// each. The engine asks it before claiming a decision (see decide.Engine), Check again.
func InputsAssessment(p *Proposal) Assessment {
	var bad []string
	for _, in := range p.Inputs {
		var why []string
		if in.Stale {
			why = append(why, "stale")
		}
		if in.Historical {
			why = append(why, "historical")
		}
		if in.Partial {
			why = append(why, "partial")
		}
		if in.BadQuality {
			why = append(why, "bad quality")
		}
		if in.Drifting {
			why = append(why, "drifting")
		}
		if len(why) > 0 {
			bad = append(bad, in.Name+" ("+strings.Join(why, ", ")+")")
		}
	}
	a := Assessment{Guardrail: GInputs, Passed: len(bad) == 0, Value: float64(len(bad)), Limit: 0,
		Detail: "inputs that are stale, historical, partial, of bad quality or drifting"}
	if len(bad) > 0 {
		a.Detail = "unusable inputs: " + strings.Join(bad, "; ")
	}
	return a
}
