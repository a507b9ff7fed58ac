package decide

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// Reconciler is what reconciling needs of the guard beyond deciding: its allowed decisions, the
// approval requests that expired or were left half-answered, and answering them.
type Reconciler interface {
	AllowedSince(ctx context.Context, since time.Time) ([]guard.Allowed, error)
	Expire(ctx context.Context, report func(guard.Request) error) (int, error)
	Pending(ctx context.Context) ([]guard.Request, error)
	Approve(ctx context.Context, id, approver, reason string) (guard.Verdict, error)
	Reject(ctx context.Context, id, approver, reason string) (guard.Verdict, error)
}

// expire records the approval requests that expired unanswered, each with an expired record beside
// its decided one, and finishes the answers a replica stopped applying (the same person's answer
// given again: approved or rejected record, and the action). A request whose record could not be
// written stays in the guard's queue and comes back at the next timer. It returns how many.
func (e *Engine) expire(ctx context.Context) (int, error) {
	rc, ok := e.deps.Guard.(Reconciler)
	if !ok {
		return 0, nil
	}
	answer := &Approver{Guard: rc, Audit: e.deps.Audit, Outbox: e.deps.Outbox, Replica: e.deps.Replica, Now: e.now}
	return rc.Expire(ctx, func(q guard.Request) error {
		id := q.Proposal.ID
		if a := q.Lapsed; a != nil {
			v, err := answer.Answer(ctx, id, a.By, a.Reason, a.Approved)
			if errors.Is(err, ErrNoRecord) {
				// Nothing on the log to answer beside: the guard alone finishes it, and reconcile
				// releases an allowed decision that has no record.
				if a.Approved {
					v, err = rc.Approve(ctx, id, a.By, a.Reason)
				} else {
					v, err = rc.Reject(ctx, id, a.By, a.Reason)
				}
			}
			if err != nil {
				return err
			}
			e.log.Warn("answer finished after the replica applying it stopped", "decision", id, "by", a.By, "approved", a.Approved, "outcome", v.Outcome)
			return nil
		}
		recs, err := e.deps.Audit.History(ctx, id)
		if err != nil {
			return err
		}
		i := -1 // the latest decided record: a kill switch suppression decided again has two
		for j, r := range recs {
			if r.Event == audit.EventDecided {
				i = j
			}
		}
		if i < 0 {
			return nil // never recorded: reconcile deals with it
		}
		rec := recs[i]
		v := q.Verdict
		rec.Event, rec.Outcome, rec.Verdict, rec.Time, rec.Replica = audit.EventExpired, audit.OutcomeExpired, &v, e.now().UTC(), e.deps.Replica
		rec.Note = "nobody answered the approval request before it expired"
		_, err = e.deps.Audit.Append(ctx, rec)
		return err
	})
}

// reconcile completes or releases allowed decisions that nothing delivers: a replica that stopped
// between the guard's verdict and the outbox leaves one behind, and when no evaluation of the same
// SKU in the same bucket comes after (the input changed, the bucket ended) nothing else would.
// Each allowed decision older than the grace period (a live replica finishes or gives up on its
// own decision well within it) and without an outbox record is
//   - enqueued, when its decided (or approved) record is on the decision log: the decision was
//     recorded and only the action is missing;
//   - released otherwise (what it reserved is given back, a released record says why): a decision
//     with no record of its inputs is never acted on. Its outbox record is created cancelled
//     first, so that a replica deciding the same id again at that moment either enqueued it
//     first (it acts, nothing is released) or enqueues nothing; then the released record, then
//     the guard's release, so that a pass stopped on the way is finished by the next.
//
// A decision whose outbox record the delivery loop cancelled (expired, or by the kill switch) and
// is still giving back is left to that loop.
//
// It returns how many it enqueued and released.
func (e *Engine) reconcile(ctx context.Context) (enqueued, released int, err error) {
	rc, ok := e.deps.Guard.(Reconciler)
	if !ok {
		return 0, 0, nil
	}
	now := e.now().UTC()
	grace := 3*e.cfg.OpTimeout + time.Minute
	allowed, err := rc.AllowedSince(ctx, now.Add(-grace-10*e.cfg.Timer-e.cfg.Bucket))
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	for _, a := range allowed {
		id := a.Proposal.ID
		if e.done.has(id) || now.Sub(a.Verdict.Decided) < grace {
			continue
		}
		ob, err := e.deps.Outbox.Get(ctx, id)
		switch {
		case err == nil && ob.State != act.Cancelled:
			e.done.add(id)
			continue
		case err == nil && (ob.GiveBack || ob.Killed != ""):
			// Cancelled by the delivery loop (expired, or by the kill switch), which gives back
			// what it holds with a released record of its own saying why: not this pass's, whose
			// record would say the deciding replica stopped and stand in place of the loop's.
			continue
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			errs = append(errs, fmt.Errorf("decision %s: outbox: %w", id, err))
			continue
		}
		if err != nil { // no outbox record (cancelled: an earlier pass stopped before releasing)
			recs, err := e.deps.Audit.History(ctx, id)
			if err != nil {
				errs = append(errs, fmt.Errorf("decision %s: %w", id, err))
				continue
			}
			var rec *audit.Record
			for i := range recs {
				if ev := recs[i].Event; ev == audit.EventDecided || ev == audit.EventApproved {
					rec = &recs[i]
				}
			}
			if rec != nil {
				if _, err := e.deps.Outbox.Enqueue(ctx, Action(a.Proposal, rec.Action, a.Verdict)); err != nil {
					errs = append(errs, fmt.Errorf("decision %s: outbox: %w", id, err))
					continue
				}
				e.log.Warn("allowed decision completed by reconcile: its action was not in the outbox", "decision", id, "sku", a.Proposal.SKU, "channel", a.Proposal.Channel)
				enqueued++
				e.done.add(id)
				continue
			}
			// The outbox key first: a replica deciding the id again meanwhile (the guard replays
			// its allow) records and enqueues it, and then its action stands and nothing is
			// released; otherwise its enqueue is a no-op.
			created, err := e.deps.Outbox.Cancel(ctx, Action(a.Proposal, rules.Action{}, a.Verdict), "released by reconcile: the deciding replica stopped before recording it")
			if err != nil {
				errs = append(errs, fmt.Errorf("decision %s: outbox: %w", id, err))
				continue
			}
			if !created {
				e.done.add(id)
				continue
			}
		}
		// The released record first: once the guard says released, this decision is no longer
		// listed as allowed, and a record that failed after it would never be written. Written
		// again (deduplicated on id and event) when the release fails and is retried.
		v := a.Verdict
		v.Outcome = guard.Released
		p := a.Proposal
		r := audit.Record{
			DecisionID: id, Event: audit.EventReleased, Outcome: audit.OutcomeReleased, Mode: audit.ModeActive,
			Time: now, Replica: e.deps.Replica, RuleSet: audit.RuleSetRef{Version: p.RuleVersion}, Rule: audit.RuleRef{Name: p.Rule},
			SKU: p.SKU, Site: p.Site, Channel: p.Channel, Verdict: &v,
			Note: "allowed, but the deciding replica stopped before recording it: released by reconcile, never acted on",
		}
		r.Action.Kind, r.Action.Channels, r.Action.Discount, r.Action.Duration = ruleKind(p.Kind), []string{p.Channel}, p.Discount, time.Duration(p.Duration)
		if _, err := e.deps.Audit.Append(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("decision %s: %w", id, err))
			continue
		}
		if err := e.deps.Guard.Release(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("decision %s: release: %w", id, err))
			continue
		}
		e.log.Warn("allowed decision released by reconcile: it was never recorded", "decision", id, "sku", p.SKU, "channel", p.Channel)
		e.Metrics.Released.Add(1)
		released++
		e.done.add(id)
	}
	return enqueued, released, errors.Join(errs...)
}
