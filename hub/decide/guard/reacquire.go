package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Reacquire reserves again, as of now, what Release gave back from an allowed decision whose action
// was dead-lettered before any of it went out, so that a replay of it delivers it within the limits
// of today: the kill switch, the maximum discounts, the cooldown and today's caps (count and budget)
// are evaluated again at the guard's clock, each reservation a compare-and-set on the same ledgers
// Check uses (the approval threshold and the proposal's age are not: the decision passed them when
// it was decided). Allowed, the decision is Allow again, its verdict's ActionTime now (a later
// Release gives back what this took). Refused, it stays Released, what was reserved for it is given
// back, and the returned verdict is a Suppress naming the guardrail. A decision that is Allow
// already is returned as it is (nothing to take again). One call at a time, on any replica,
// reserves for a decision: it claims the record first; another waits for it, or takes the claim
// over once its lease has lapsed. ErrNotFound: the guard no longer knows the decision (swept).
func (g *Guard) Reacquire(ctx context.Context, id string) (Verdict, error) {
	if g.closed.Load() {
		return Verdict{}, ErrClosed
	}
	if !validID(id) {
		return Verdict{}, &InputError{ID: id, Field: "id", Msg: "not a decision id"}
	}
	defer g.lock(id)()
	key := prefixDec + id
	r := g.retrier(ctx)
	for {
		cur, rev, err := g.get(ctx, key)
		if err != nil {
			return Verdict{}, fmt.Errorf("guard: reacquire %s: %w", id, err)
		}
		if rev == 0 {
			return Verdict{}, fmt.Errorf("guard: reacquire %s: %w", id, ErrNotFound)
		}
		rec, err := decodeRecord(id, cur)
		if err != nil {
			return Verdict{}, err
		}
		if rec.Verdict == nil {
			return Verdict{}, fmt.Errorf("guard: reacquire %s: %s record without a verdict", id, rec.Status)
		}
		now := g.cfg.now()
		switch {
		case rec.Status == string(Allow):
			return *rec.Verdict, nil // it holds its reservations
		case rec.Status != string(Released):
			return Verdict{}, &StateError{ID: id, Op: "reacquire", Status: rec.Status}
		case rec.Reacquiring && rec.Owner != g.replica && now.Before(rec.Lease):
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return Verdict{}, fmt.Errorf("guard: reacquire %s: waiting for %s: %w", id, rec.Owner, err)
			}
			continue
		}
		rec.Reacquiring, rec.Owner, rec.Lease = true, g.replica, now.Add(g.cfg.ClaimLease)
		b, _ := json.Marshal(rec)
		nrev, err := g.write(ctx, key, b, rev)
		if err != nil {
			if err := g.retryAfter(r, err); err != nil {
				return Verdict{}, fmt.Errorf("guard: reacquire %s: %w", id, err)
			}
			continue
		}
		// A failure here leaves the claim: the next call (or, once it lapses, any) goes on from it.
		v, _, err := g.evaluate(ctx, &rec.Proposal, now, rec.Verdict.Approval, true, nil)
		if err != nil {
			return Verdict{}, err
		}
		v.Round = rec.Round
		rec.Reacquiring = false
		if v.Outcome != Allow {
			// Still released: nothing may hold this id (this call's reservations, or a lapsed one's
			// at about the same time).
			g.releaseAll(ctx, &rec.Proposal, now)
			b, _ := json.Marshal(rec)
			if _, err := g.write(ctx, key, b, nrev); err != nil {
				g.log.Debug("reacquire claim not dropped; it lapses", "decision", id, "err", err)
			}
			g.log.Info("released decision not reserved again", "decision", id, "guardrail", v.Guardrail, "reason", v.Reason)
			return v, nil
		}
		v.Reason = "reserved again, as of now, for the replay of its dead-lettered delivery"
		rec.Status, rec.Verdict, rec.Attempt = string(Allow), &v, attempt()
		b, _ = json.Marshal(rec)
		if _, err := g.write(ctx, key, b, nrev); err != nil {
			// Lost the claim (taken over after it lapsed), or a write that may have been stored:
			// read it again; the reservations, made under this id, are found held.
			if err := g.retryAfter(r, err); err != nil {
				return Verdict{}, fmt.Errorf("guard: reacquire %s: %w", id, err)
			}
			continue
		}
		g.log.Info("released decision reserved again", "decision", id, "action_time", now)
		return v, nil
	}
}
