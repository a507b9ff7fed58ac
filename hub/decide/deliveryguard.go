package decide

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// KillReleaser is what the delivery loop needs of the guard (guard.Guard).
type KillReleaser interface {
	Kill(ctx context.Context) (guard.KillSwitch, error)
	Release(ctx context.Context, id string) error
	Reacquire(ctx context.Context, id string) (guard.Verdict, error)
}

// DeliveryGuard is the act loop's act.Guard: the kill switch read fresh from the guard before any
// part of an action's start goes out, and a start the switch cancelled given back — the guard's
// Release, then a released record on the decision log (so that why and the KPIs say it never
// acted, and why): a release the guard refuses for good leaves no record; a failure after the
// release is retried whole, as the outbox record keeps the give-back due. A
// promotion dead-lettered before any of it went out is given back the same way (DeadLettered), and
// its replay reserves again through the guard's Reacquire.
type DeliveryGuard struct {
	Guard KillReleaser
	// Audit is the decision log; nil records nothing (the CLI, which runs no delivery loop).
	Audit   Recorder
	Replica string
	Now     func() time.Time
}

// Killed implements act.Guard.
func (d DeliveryGuard) Killed(ctx context.Context) (bool, string, error) {
	k, err := d.Guard.Kill(ctx)
	if err != nil {
		return false, "", err
	}
	return k.On, k.String(), nil
}

// EndLive implements act.Guard: the switch's end-live mark, kept through a reset.
func (d DeliveryGuard) EndLive(ctx context.Context) (act.EndMark, error) {
	k, err := d.Guard.Kill(ctx)
	if err != nil || k.Mark == nil {
		return act.EndMark{}, err
	}
	return act.EndMark{Gen: k.Mark.Gen, At: k.Mark.At, Why: k.Mark.String()}, nil
}

// Cancelled implements act.Guard. It is idempotent: the released record is deduplicated on the
// decision id and event, and releasing twice is harmless.
func (d DeliveryGuard) Cancelled(ctx context.Context, a act.Action, why string) error {
	return d.giveBack(ctx, a, guard.GKillSwitch, why)
}

// DeadLettered implements act.Guard: a promotion dead-lettered before any of it went out gives back
// its caps and cooldown, recorded released (no guardrail: delivery gave it up) with why. Idempotent
// as Cancelled.
func (d DeliveryGuard) DeadLettered(ctx context.Context, a act.Action, why string) error {
	return d.giveBack(ctx, a, "", why)
}

// Reacquire implements act.Guard: the guard's Reacquire, a refusal an error wrapping act.ErrRefused
// that names the guardrail and why.
func (d DeliveryGuard) Reacquire(ctx context.Context, a act.Action) error {
	v, err := d.Guard.Reacquire(ctx, a.DecisionID)
	if errors.Is(err, guard.ErrNotFound) {
		return fmt.Errorf("%w: the guard no longer knows decision %s (swept after its retention): it cannot be reserved again", act.ErrRefused, a.DecisionID)
	}
	if err != nil {
		return err
	}
	if v.Outcome != guard.Allow {
		return fmt.Errorf("%w by %s: %s", act.ErrRefused, v.Guardrail, v.Reason)
	}
	return nil
}

// Reacquired implements act.Guard: a reacquired record on the decision log (outcome fired, or held),
// the verdict the decision acted under allowed again as of at, answering the decision's latest
// release (Record.ReleaseStep: the n-th release is answered by the n-th reacquire). Only a release
// is answered: with no released record of the decision on the log it writes nothing (an error
// wrapping act.ErrPermanent), and once the latest release is answered it writes nothing more, so
// the call is idempotent.
func (d DeliveryGuard) Reacquired(ctx context.Context, a act.Action, at time.Time) error {
	if d.Audit == nil {
		return nil
	}
	r, recs, err := d.base(ctx, a)
	if err != nil {
		return err
	}
	step := 0
	for _, x := range recs {
		step = max(step, x.ReleaseStep())
	}
	switch {
	case step == 0:
		return fmt.Errorf("%w: decision %s: no released record of it on the decision log: its replay is not recorded "+
			"as reserved again (nothing was given back to reserve again)", act.ErrPermanent, a.DecisionID)
	case step%2 == 0:
		return nil // its latest release is answered already (a retry after a crash)
	}
	r.Event, r.Outcome = audit.EventReacquired, audit.OutcomeFired
	if a.Kind == act.Hold {
		r.Outcome = audit.OutcomeHeld
	}
	r.Replay = (step + 1) / 2 // the release at step 2n-1 (replay n-1) is answered at step 2n (replay n)
	r.Verdict.Outcome, r.Verdict.Guardrail = guard.Allow, ""
	r.Verdict.ActionTime, r.Verdict.Reason = at.UTC(), "reserved again, as of then, for the replay of its dead-lettered delivery"
	r.Note = fmt.Sprintf("released when its delivery was dead-lettered before any of it went out; reserved again at %s "+
		"(kill switch, discount, cooldown and that day's caps checked again) for its replay: allowed again, to be delivered",
		at.UTC().Format(time.RFC3339))
	if _, err := d.Audit.Append(ctx, r); err != nil {
		return fmt.Errorf("decision %s: %w", a.DecisionID, err)
	}
	return nil
}

// giveBack has the guard give back what the decision holds, then records it released on the log
// (stopped by guardrail, "" for none, because of why). The release first: a release the guard
// refuses for good leaves no released record saying it was given back. The outbox record keeps
// the give-back due until this returns nil, so a record that failed after the release is written
// by the retry (Release again is a no-op).
func (d DeliveryGuard) giveBack(ctx context.Context, a act.Action, guardrail, why string) error {
	err := d.Guard.Release(ctx, a.DecisionID)
	switch {
	case errors.Is(err, guard.ErrNotFound):
		// Nothing reserved under this id (its record swept, or never the guard's).
	case errors.Is(err, guard.ErrState), errors.Is(err, guard.ErrInvalid):
		return fmt.Errorf("%w: %w", act.ErrPermanent, err) // no retry changes it
	case err != nil:
		return err
	}
	if d.Audit == nil {
		return nil
	}
	return d.record(ctx, a, guardrail, why)
}

func (d DeliveryGuard) record(ctx context.Context, a act.Action, guardrail, why string) error {
	r, recs, err := d.base(ctx, a)
	if err != nil {
		return err
	}
	r.Event, r.Outcome = audit.EventReleased, audit.OutcomeReleased
	r.Note = "allowed, but its start was " + why + " before any of it went out: never acted; caps and cooldown given back"
	for _, x := range recs {
		if x.Event == audit.EventReacquired {
			r.Replay++ // released again after a replay reserved it again: a record of its own
		}
	}
	r.Verdict.Outcome, r.Verdict.Guardrail, r.Verdict.Reason = guard.Released, guardrail, why
	if _, err := d.Audit.Append(ctx, r); err != nil {
		return fmt.Errorf("decision %s: %w", a.DecisionID, err)
	}
	return nil
}

// base is a record of a later event of a's decision (event and outcome to fill), with the verdict
// the decision acted under (decided or approved; its copy, to change), and the decision's records.
func (d DeliveryGuard) base(ctx context.Context, a act.Action) (audit.Record, []audit.Record, error) {
	if !audit.ValidID(a.DecisionID) {
		return audit.Record{}, nil, fmt.Errorf("%w: decision id %q is not one the decision log takes", act.ErrPermanent, a.DecisionID)
	}
	recs, err := d.Audit.History(ctx, a.DecisionID)
	if err != nil {
		return audit.Record{}, nil, fmt.Errorf("decision %s: %w", a.DecisionID, err)
	}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	r := audit.Record{
		DecisionID: a.DecisionID, Mode: audit.ModeActive,
		Time: now().UTC(), Replica: d.Replica, RuleSet: audit.RuleSetRef{Version: a.RuleSetVersion}, Rule: audit.RuleRef{Name: a.Rule},
		SKU: a.SKU, Site: a.Site, Channel: a.Channel,
	}
	r.Action.Kind, r.Action.Channels, r.Action.Discount, r.Action.Audience = ruleKind(guard.Kind(a.Kind)), []string{a.Channel}, a.Discount, a.Audience
	if !a.End.IsZero() {
		r.Action.Duration = a.End.Sub(a.Start)
	}
	// The verdict the decision acted under (decided or approved): why shows its assessments with
	// the later event.
	v := &guard.Verdict{DecisionID: a.DecisionID}
	for _, x := range recs {
		if x.Verdict != nil && (x.Event == audit.EventDecided || x.Event == audit.EventApproved) {
			cp := *x.Verdict
			v = &cp
			if x.Mode != audit.ModeShadow {
				r.Mode = x.Mode
			}
		}
	}
	r.Verdict = v
	return r, recs, nil
}
