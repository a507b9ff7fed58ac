package decide

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// Approver applies people's answers to decisions awaiting approval: the guard decides (once, on
// any replica), the answer is recorded on the decision log, and an approval that the guardrails
// still allow goes to the outbox under the decision's id.
type Approver struct {
	Guard interface {
		Approve(ctx context.Context, id, approver, reason string) (guard.Verdict, error)
		Reject(ctx context.Context, id, approver, reason string) (guard.Verdict, error)
	}
	Audit interface {
		History(ctx context.Context, decisionID string) ([]audit.Record, error)
		Append(ctx context.Context, rec audit.Record) (uint64, error)
	}
	Outbox  Outbox
	Replica string
	Now     func() time.Time
}

// ErrNoRecord: the decision log has no record of the decision (never decided here, or past its
// retention).
var ErrNoRecord = errors.New("no decision record")

// Answer approves (approve=true) or rejects a queued decision as by, for reason, and returns the
// guard's verdict. Repeating an answer is harmless: the guard returns the recorded verdict, the
// record and the action are deduplicated on the decision id.
func (a *Approver) Answer(ctx context.Context, id, by, reason string, approve bool) (guard.Verdict, error) {
	recs, err := a.Audit.History(ctx, id)
	if err != nil {
		return guard.Verdict{}, fmt.Errorf("decision %s: %w", id, err)
	}
	var first *audit.Record // the latest decided record: the round the request belongs to
	for i := range recs {
		if recs[i].Event == audit.EventDecided {
			first = &recs[i]
		}
	}
	if first == nil {
		return guard.Verdict{}, fmt.Errorf("decision %s: %w", id, ErrNoRecord)
	}
	var v guard.Verdict
	if approve {
		v, err = a.Guard.Approve(ctx, id, by, reason)
	} else {
		v, err = a.Guard.Reject(ctx, id, by, reason)
	}
	if err != nil {
		return v, err
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	rec := *first
	rec.Time, rec.Replica, rec.Verdict = now().UTC(), a.Replica, &v
	rec.Event = audit.EventRejected
	if approve {
		rec.Event = audit.EventApproved
	}
	rec.Outcome = Outcome(rec.Action.Kind, v)
	rec.Note = "answered by " + by
	if reason != "" {
		rec.Note += ": " + reason
	}
	if _, err := a.Audit.Append(ctx, rec); err != nil {
		return v, fmt.Errorf("decision %s: %w", id, err)
	}
	if v.Acts() {
		p := guard.Proposal{
			ID: id, RuleVersion: first.RuleSet.Version, Rule: first.Rule.Name, SKU: first.SKU, Site: first.Site,
			Channel: first.Channel, Kind: guard.Kind(first.Action.Kind), Discount: first.Action.Discount,
			Duration: guard.Duration(first.Action.Duration), Time: first.Time,
		}
		if _, err := a.Outbox.Enqueue(ctx, Action(p, first.Action, v)); err != nil {
			return v, fmt.Errorf("decision %s: outbox: %w", id, err)
		}
	}
	return v, nil
}
