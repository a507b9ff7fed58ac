package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Request is one decision awaiting approval.
type Request struct {
	Proposal Proposal  `json:"proposal"`
	Verdict  Verdict   `json:"verdict"` // the needs_approval verdict, with its assessments
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	// Lapsed, reported by Expire only, is the answer a replica was applying when it stopped.
	Lapsed *Approval `json:"lapsed,omitempty"`
}

// Approve applies a person's approval to a queued decision. The guardrails other than the approval
// threshold and the proposal's age are evaluated again, now, with compare-and-set on the caps and
// cooldown, counted at the approval's time: the budget may be gone since it was queued, and then
// the verdict is Suppress (with the approval recorded). Only one approval or rejection of a
// decision takes effect, whichever replica receives it.
func (g *Guard) Approve(ctx context.Context, id, approver, reason string) (Verdict, error) {
	return g.decideRequest(ctx, id, approver, reason, true)
}

// Reject refuses a queued decision; it never acts. A requester may reject their own request.
func (g *Guard) Reject(ctx context.Context, id, approver, reason string) (Verdict, error) {
	return g.decideRequest(ctx, id, approver, reason, false)
}

func (g *Guard) decideRequest(ctx context.Context, id, who, reason string, approve bool) (Verdict, error) {
	op := "reject"
	if approve {
		op = "approve"
	}
	if g.closed.Load() {
		return Verdict{}, ErrClosed
	}
	if !validID(id) {
		return Verdict{}, &InputError{ID: id, Field: "id", Msg: "not a decision id"}
	}
	if strings.TrimSpace(who) == "" {
		return Verdict{}, fmt.Errorf("guard: %s %s: the approver is required", op, id)
	}
	defer g.lock(id)()
	key := prefixDec + id
	r := g.retrier(ctx)
	for {
		cur, rev, err := g.get(ctx, key)
		if err != nil {
			return Verdict{}, fmt.Errorf("guard: %s %s: %w", op, id, err)
		}
		if rev == 0 {
			return Verdict{}, fmt.Errorf("guard: %s %s: %w", op, id, ErrNotFound)
		}
		rec, err := decodeRecord(id, cur)
		if err != nil {
			return Verdict{}, err
		}
		now := g.cfg.now()
		if (rec.Status == string(NeedsApproval) || rec.Status == statusApproving) && rec.Verdict == nil ||
			rec.Status == statusApproving && rec.Approving == nil {
			return Verdict{}, fmt.Errorf("guard: %s %s: %s record without its verdict or approval", op, id, rec.Status)
		}
		switch {
		case rec.Status == statusApproving && rec.Owner != g.replica && now.Before(rec.Lease):
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return Verdict{}, fmt.Errorf("guard: %s %s: waiting for %s: %w", op, id, rec.Owner, err)
			}
			continue
		case rec.Status == statusApproving:
			// Ours from a failed call, or lapsed: finish the approval it records, not this one.
			if rec.Owner != g.replica {
				g.Metrics.Takeovers.Add(1)
			}
			rec.Owner, rec.Lease = g.replica, now.Add(g.cfg.ClaimLease)
			b, _ := json.Marshal(rec)
			nrev, err := g.write(ctx, key, b, rev)
			if err != nil {
				if err := g.retryAfter(r, err); err != nil {
					return Verdict{}, fmt.Errorf("guard: %s %s: %w", op, id, err)
				}
				continue
			}
			mine := rec.Approving.By == who && rec.Approving.Approved == approve
			// What the earlier call reserved before it stopped is held too.
			v, err := g.applyApproval(ctx, key, rec, nrev, true)
			if err != nil || mine {
				return v, err
			}
			// Another person's approval won: this answer (a rejection, another approver) is
			// refused as it would be had that approval finished first.
			return Verdict{}, &StateError{ID: id, Op: op, Status: string(v.Outcome)}
		case rec.Status != string(NeedsApproval):
			if a := rec.Verdict; a != nil && a.Approval != nil && a.Approval.By == who && a.Approval.Approved == approve {
				return g.replay(rec) // this approver's own decision, e.g. a write whose reply was lost
			}
			return Verdict{}, &StateError{ID: id, Op: op, Status: rec.Status}
		case now.After(rec.Created.Add(g.cfg.Approval.TTL)):
			if err := g.expire(ctx, key, rec, rev); err != nil {
				if isConflict(err) {
					continue
				}
				return Verdict{}, fmt.Errorf("guard: %s %s: %w", op, id, err)
			}
			return Verdict{}, fmt.Errorf("guard: %s %s: %w (at %s)", op, id, ErrExpired, rec.Created.Add(g.cfg.Approval.TTL).Format(time.RFC3339))
		case approve && g.cfg.Approval.ForbidSelf && rec.Proposal.Requester != "" && who == rec.Proposal.Requester:
			return Verdict{}, fmt.Errorf("guard: %s %s by %s: %w", op, id, who, ErrSelfApproval)
		}
		if approve {
			// Approved while the switch is thrown, it would be recorded as a kill suppression and
			// leave the queue, not asked again in its time bucket: refused, the request waits.
			k, err := g.Kill(ctx)
			if err != nil {
				return Verdict{}, fmt.Errorf("guard: %s %s: reading the kill switch: %w", op, id, err)
			}
			if k.On {
				return Verdict{}, fmt.Errorf("guard: %s %s: %w (%s): reset it first; the request stays queued", op, id, ErrKilled, k.String())
			}
		}
		a := &Approval{By: who, Reason: reason, At: now.UTC(), Approved: approve}
		if !approve {
			v := *rec.Verdict
			v.Outcome, v.Approval, v.Decided, v.Replica = Rejected, a, now.UTC(), g.replica
			v.Guardrail, v.Reason = GApproval, "rejected by "+who
			if reason != "" {
				v.Reason += ": " + reason
			}
			rec.Status, rec.Verdict, rec.Owner = string(Rejected), &v, g.replica
			b, _ := json.Marshal(rec)
			if _, err := g.write(ctx, key, b, rev); err != nil {
				if err := g.retryAfter(r, err); err != nil {
					return Verdict{}, fmt.Errorf("guard: %s %s: %w", op, id, err)
				}
				continue
			}
			g.dequeue(ctx, id)
			return v, nil
		}
		rec.Status, rec.Owner, rec.Lease, rec.Approving = statusApproving, g.replica, now.Add(g.cfg.ClaimLease), a
		b, _ := json.Marshal(rec)
		nrev, err := g.write(ctx, key, b, rev)
		if err != nil {
			if err := g.retryAfter(r, err); err != nil {
				return Verdict{}, fmt.Errorf("guard: %s %s: %w", op, id, err)
			}
			continue
		}
		return g.applyApproval(ctx, key, rec, nrev, false)
	}
}

// retryAfter paces the retry of a failed record write (a conflict or a failed request) and returns
// the error to give up with. After a failed request the write may have been stored; the caller
// reads the record again and continues from whatever it says.
func (g *Guard) retryAfter(r *retrier, err error) error {
	if isConflict(err) {
		return r.Conflict(err)
	}
	return r.Failed(err)
}

// applyApproval evaluates an approved decision (claimed in status approving at rev) and records it.
// held says that an earlier call may have reserved for it (a takeover): a suppression gives that back.
func (g *Guard) applyApproval(ctx context.Context, key string, rec *record, rev uint64, held bool) (Verdict, error) {
	a := rec.Approving
	v, touched, err := g.evaluate(ctx, &rec.Proposal, a.At, a, false, nil)
	if err != nil {
		return Verdict{}, err
	}
	if v.Outcome == Allow {
		v.Reason = "approved by " + a.By
	}
	v, err = g.finish(ctx, key, rec, rev, v, touched || held)
	if err == nil {
		g.dequeue(ctx, rec.Proposal.ID)
	}
	return v, err
}

// expire records that nobody decided a queued decision in time. The queue entry stays: Expire
// reports the expiry (for the decision log) and then removes it, whichever call recorded it.
func (g *Guard) expire(ctx context.Context, key string, rec *record, rev uint64) error {
	v := *rec.Verdict
	at := rec.Created.Add(g.cfg.Approval.TTL).UTC()
	v.Outcome, v.Decided, v.Replica = Expired, g.cfg.now().UTC(), g.replica
	v.Guardrail, v.Reason = GApproval, "nobody approved it before "+at.Format(time.RFC3339)
	rec.Status, rec.Verdict = string(Expired), &v
	b, _ := json.Marshal(rec)
	_, err := g.write(ctx, key, b, rev)
	return err
}

// dequeue removes a queue entry; one left behind is skipped and removed by Pending (an expired
// one by Expire, once reported). It purges the entry's key rather than deleting it: a delete leaves
// a marker for good, and every listing of the queue would stream one per request ever queued.
func (g *Guard) dequeue(ctx context.Context, id string) {
	if err := g.purgeKey(ctx, prefixQueue+id, 0); err != nil {
		g.log.Debug("queue entry not removed", "decision", id, "err", err)
	}
}

// purgeKey removes what the bucket holds of key, leaving no delete marker: everything, or with upTo
// set, only up to that revision (the value or delete marker read at upTo, not one written after it).
func (g *Guard) purgeKey(ctx context.Context, key string, upTo uint64) error {
	req := map[string]any{"filter": g.subjPrefix + key}
	if upTo > 0 {
		req["seq"] = upTo + 1 // up to, not including
	}
	b, _ := json.Marshal(req)
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
	defer cancel()
	msg, err := g.nc.RequestWithContext(opCtx, g.purge, b)
	if err != nil {
		return err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("undecodable reply to a purge: %w", err)
	}
	if resp.Error != nil {
		return fmt.Errorf("purge: %s (%d)", resp.Error.Description, resp.Error.Code)
	}
	return nil
}

// Pending lists the decisions awaiting approval, oldest first. Requests past their expiry are
// recorded as expired on the way and left out (Expire reports them). It reads every queued
// request's decision: a view of the queue pages with PendingPage.
func (g *Guard) Pending(ctx context.Context) ([]Request, error) {
	out, _, err := g.pending(ctx, nil)
	return out, err
}

// Expire records every request past its expiry as expired, and hands report each expired request
// (with its expired verdict), whichever call recorded the expiry (Expire, Pending, a late Approve or
// Reject, Sweep), so that the caller can say so in its own records; the request leaves the queue
// once report returns nil for it, and is reported again at the next call otherwise. It also reports
// each approval whose replica stopped while applying it, its lease lapsed (Request.Lapsed: the answer
// to finish, by giving it again as that person; see Approve). It returns how many reports returned
// nil. Any replica may run it: two at once may report one request twice.
func (g *Guard) Expire(ctx context.Context, report func(Request) error) (int, error) {
	_, n, err := g.pending(ctx, report)
	return n, err
}

// maxMarkerPurges bounds the old delete markers one Expire removes from the queue, and one Sweep
// from the bucket.
const maxMarkerPurges = 1000

// pending reads the queue: the requests still waiting and, when report is set, what Expire reports.
func (g *Guard) pending(ctx context.Context, report func(Request) error) (out []Request, reported int, err error) {
	if g.closed.Load() {
		return nil, 0, ErrClosed
	}
	var ids []string
	var markers []queueEntry
	var listed map[string]bool
	err = g.listMeta(ctx, prefixQueue+">", func() { ids, markers, listed = nil, nil, map[string]bool{} }, func(e jetstream.KeyValueEntry) {
		id := strings.TrimPrefix(e.Key(), prefixQueue)
		switch {
		case e.Operation() != jetstream.KeyValuePut:
			markers = append(markers, queueEntry{id: id, rev: e.Revision()})
		case !listed[id]: // a key written while it is listed may come twice
			listed[id] = true
			ids = append(ids, id)
		}
	})
	if err != nil {
		return nil, 0, fmt.Errorf("guard: pending: %w", err)
	}
	if report != nil {
		// Delete markers: left by an earlier release's dequeue (or a replica of one). Removed a
		// bounded number a call, up to the revision listed (not an entry queued since).
		for _, m := range markers[:min(len(markers), maxMarkerPurges)] {
			if err := g.purgeKey(ctx, prefixQueue+m.id, m.rev); err != nil {
				g.log.Debug("queue delete marker not removed", "decision", m.id, "err", err)
			}
		}
	}
	var errs []error
	for _, id := range ids {
		q, waiting, ok, rerr, err := g.queued(ctx, id, report)
		if err != nil {
			return nil, reported, fmt.Errorf("guard: pending: %w", errors.Join(append(errs, err)...))
		}
		if rerr != nil {
			errs = append(errs, rerr)
		}
		if ok {
			reported++
		}
		if waiting {
			out = append(out, q)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	if len(errs) > 0 {
		return out, reported, fmt.Errorf("guard: expire: %w", errors.Join(errs...))
	}
	return out, reported, nil
}

// queued reads the decision of one queue entry: the request, and whether it still waits. A request
// past its expiry is recorded as expired (and does not wait); with report set (Expire), an expired
// request or a lapsed answer is handed to report (reported: it returned nil, rerr: what it returned
// otherwise) and an expired one leaves the queue once reported. An entry whose decision is gone or
// final leaves the queue. err is a failed read.
func (g *Guard) queued(ctx context.Context, id string, report func(Request) error) (q Request, waiting, reported bool, rerr, err error) {
	cur, rev, err := g.get(ctx, prefixDec+id)
	if err != nil {
		return q, false, false, nil, err
	}
	if rev == 0 {
		g.dequeue(ctx, id)
		return q, false, false, nil, nil
	}
	rec, err := decodeRecord(id, cur)
	if err != nil {
		g.log.Warn("pending request skipped", "decision", id, "err", err)
		return q, false, false, nil, nil
	}
	exp := rec.Created.Add(g.cfg.Approval.TTL)
	q = Request{Proposal: rec.Proposal, Created: rec.Created, Expires: exp}
	if rec.Verdict != nil {
		q.Verdict = *rec.Verdict
	}
	if report != nil && rec.Status == statusApproving && rec.Approving != nil && g.cfg.now().After(rec.Lease) {
		// The replica applying an answer stopped, and nobody answers again (the request is no
		// longer listed): the caller gives the answer again, which finishes it and records it.
		a := *rec.Approving
		q.Lapsed = &a
		if err := report(q); err != nil {
			return q, false, false, fmt.Errorf("decision %s: %w", id, err), nil
		}
		return q, false, true, nil, nil
	}
	if rec.Status == string(NeedsApproval) && rec.Verdict != nil && g.cfg.now().After(exp) {
		if err := g.expire(ctx, prefixDec+id, rec, rev); err != nil {
			if !isConflict(err) {
				g.log.Warn("expired request not recorded", "decision", id, "err", err)
			}
			return q, false, false, nil, nil
		}
		q.Verdict = *rec.Verdict // expire set it
	}
	if rec.Status == string(Expired) && rec.Verdict != nil {
		if report == nil {
			return q, false, false, nil, nil
		}
		if err := report(q); err != nil {
			return q, false, false, fmt.Errorf("decision %s: %w", id, err), nil
		}
		g.dequeue(ctx, id)
		return q, false, true, nil, nil
	}
	if rec.Status != string(NeedsApproval) || rec.Verdict == nil {
		if rec.final() {
			g.dequeue(ctx, id) // decided; the entry outlived a crash
		}
		return q, false, false, nil, nil
	}
	return q, true, false, nil, nil
}

// Release gives back what an allowed decision consumed (its cooldown and the day's count and
// budget) when its action was not delivered after all — refused for good by the channel, or
// cancelled by the kill switch or dead-lettered before any of its start went out (the act loop;
// Reacquire takes them again for the replay of such a dead letter). The decision becomes Released and never acts; its id stays
// claimed, so it is not decided again. Releasing twice is harmless. Not needed for a delivery
// that is merely late: the act layer's outbox retries it under the same id.
func (g *Guard) Release(ctx context.Context, id string) error {
	if g.closed.Load() {
		return ErrClosed
	}
	if !validID(id) {
		return &InputError{ID: id, Field: "id", Msg: "not a decision id"}
	}
	defer g.lock(id)()
	key := prefixDec + id
	var rec *record
	skip := false
	_, err := g.modify(ctx, key, func(cur []byte) ([]byte, bool, error) {
		skip = false
		if cur == nil {
			return nil, false, ErrNotFound
		}
		var err error
		if rec, err = decodeRecord(id, cur); err != nil {
			return nil, false, err
		}
		if rec.Verdict == nil {
			return nil, false, fmt.Errorf("%s record without a verdict", rec.Status)
		}
		switch rec.Status {
		case string(Released):
			if rec.Reacquiring {
				// A replay is reserving it again (Reacquire): what the ledgers hold under this
				// id is that call's, and given back by it if refused.
				skip = true
			}
			return nil, false, nil
		case string(Allow):
		default:
			return nil, false, &StateError{ID: id, Op: "release", Status: rec.Status}
		}
		v := *rec.Verdict
		v.Outcome, v.Reason = Released, "action not delivered; caps and cooldown given back"
		rec.Status, rec.Verdict = string(Released), &v
		b, err := json.Marshal(rec)
		return b, true, err
	})
	if err != nil {
		return fmt.Errorf("guard: release %s: %w", id, err)
	}
	if skip {
		return nil
	}
	// After the record says released: a crash here leaves the reservations, and a second Release
	// gives them back.
	if rec.Proposal.Kind == Promote {
		for _, k := range g.resourceKeys(&rec.Proposal, rec.Verdict.ActionTime) {
			if err := g.release(ctx, k, id); err != nil {
				return fmt.Errorf("guard: release %s: %w", id, err)
			}
		}
	}
	g.Metrics.Released.Add(1)
	return nil
}
