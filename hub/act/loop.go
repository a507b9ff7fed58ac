package act

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Run is one replica's delivery loop; it returns when ctx ends. Any number of replicas may run
// one on the same outbox: a record is delivered by the loop that claimed it with a compare-and-set
// (a lease), and a record whose owner died is taken over once the lease has passed.
//
// The loop watches the bucket, so a new record is tried at once; a poll picks up retries, the ends
// of promotions and expired leases. With a Guard, while promotions run it also reads the kill
// switch every 4 polls: each running promotion whose start went out by the switch's last throw
// with end_live is ended at once (endLive), whether or not the switch has been reset since.
func (o *Outbox) Run(ctx context.Context) error {
	w, err := o.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("act loop: watch %s: %w", o.cfg.Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	due := map[string]dueAt{} // records not final, by when they may next be tried
	tick := time.NewTicker(o.cfg.Poll)
	defer tick.Stop()
	// Attempts run on up to Workers goroutines so that one slow webhook does not hold up the
	// others; a key is attempted by one goroutine of this loop at a time, and one channel's
	// attempts leave a worker to the other channels (however many of its calls hang).
	inflight := map[string]string{} // key → channel
	busy := map[string]int{}        // channel → attempts running
	perChannel := max(1, o.cfg.Workers-1)
	finished := make(chan string, o.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Records this replica's Enqueue created claimed by this loop: delivered from what Enqueue
	// wrote, with no read or claim (see Enqueue).
	ready := o.hand.open()
	defer o.hand.close()
	own := map[string]handed{}
	start := func(k string) {
		if _, running := inflight[k]; running || len(inflight) >= o.cfg.Workers {
			return // running, or all workers busy: the next tick tries again
		}
		h, handedOver := own[k]
		ch := due[k].channel
		if handedOver {
			ch = h.rec.Action.Channel
		}
		if busy[ch] >= perChannel {
			return // its channel has all the workers it may have
		}
		inflight[k] = ch
		busy[ch]++
		if handedOver {
			delete(own, k)
			o.hand.started()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if handedOver {
				o.attemptHanded(ctx, h)
			} else {
				o.try(ctx, k)
			}
			finished <- k // buffered for every worker: never blocks
		}()
	}
	// The kill switch thrown with end_live ends every promotion running then (endLive): read every
	// endEvery while some running promotion waits for a later time, by one goroutine at a time.
	endEvery := 4 * o.cfg.Poll
	var lastEnd time.Time
	ending := false
	endDone := make(chan struct{}, 1)
	startOwn := func() {
		for k := range own {
			if len(inflight) >= o.cfg.Workers {
				return
			}
			start(k)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ready:
			for _, h := range o.hand.take() {
				own[h.key] = h
			}
			startOwn()
		case k := <-finished:
			ch := inflight[k]
			delete(inflight, k)
			if busy[ch]--; busy[ch] == 0 {
				delete(busy, ch)
			}
			startOwn()
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("act loop: watch of %s closed", o.cfg.Bucket)
			}
			if e == nil {
				continue // end of the initial values
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(due, e.Key())
				continue
			}
			var rec Record
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				o.log.Error("outbox record undecodable; skipped", "key", e.Key(), "err", err)
				delete(due, e.Key())
				continue
			}
			if !rec.active() {
				delete(due, e.Key())
				continue
			}
			at := nextTry(rec)
			due[e.Key()] = dueAt{at, rec.Action.Channel, rec.live(), rec.startedAt()}
			if !at.After(o.cfg.now()) {
				start(e.Key())
			}
		case <-endDone:
			ending = false
		case <-tick.C:
			startOwn()
			now := o.cfg.now()
			checkEnd := o.guard != nil && !ending && now.Sub(lastEnd) >= endEvery
			var later map[string]time.Time // running promotions waiting, by when they started
			for k, d := range due {
				if ctx.Err() != nil {
					return nil
				}
				if !d.at.After(now) {
					start(k)
				} else if checkEnd && d.live {
					if later == nil {
						later = map[string]time.Time{}
					}
					later[k] = d.started
				}
			}
			if len(later) > 0 {
				ending, lastEnd = true, now
				wg.Add(1)
				go func() {
					defer wg.Done()
					o.endLive(ctx, later)
					endDone <- struct{}{} // buffered, one reading at a time: never blocks
				}()
			}
		}
	}
}

// endLive reads the kill switch's end-live mark (the last throw with end_live, kept through a reset)
// and makes the end of every promotion among keys that is running and started by the mark's time
// due now: its end then goes out as any other, under a lease. keys holds when each started, as the
// loop last saw it: a promotion started after the mark is not read again. Each end is one
// compare-and-set that writes EndedEarly, so the loops of every replica, which all read the mark,
// end each promotion once, and a promotion once ended is not ended again; a loop that stops part
// way leaves the rest to the others.
func (o *Outbox) endLive(ctx context.Context, keys map[string]time.Time) {
	defer o.endChecks.Add(1)
	m, err := o.guard.EndLive(ctx)
	if err != nil {
		if ctx.Err() == nil {
			o.log.Warn("kill switch not read for end_live; read again shortly", "err", err)
		}
		return
	}
	if m.At.IsZero() {
		return // never thrown with end_live
	}
	for k, started := range keys {
		if ctx.Err() != nil {
			return
		}
		if started.After(m.At) {
			continue // started after the mark: not the switch's to end
		}
		if err := o.endEarly(ctx, k, m); err != nil && ctx.Err() == nil {
			o.log.Warn("running promotion not ended for the kill switch; tried again shortly", "key", k, "err", err)
		}
	}
}

// endEarly makes the end of the record at k due now when it is a promotion running that started
// by the mark's time, saying why.
func (o *Outbox) endEarly(ctx context.Context, k string, m EndMark) error {
	why := "ended early: " + m.Why
	for {
		rec, rev, err := o.read(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		now := o.cfg.now()
		if !rec.running(now) || rec.startedAt().After(m.At) || rec.Owner != "" && now.Before(rec.LeaseUntil) {
			return nil // nothing to end, or a loop holds it: the next reading looks again
		}
		if rec.Phase == EventStart && rec.State == Pending {
			// Its NATS start went out, its webhook waits for a retry: ended now on NATS only, as
			// stopStart ends it while the switch is thrown — not by reading the switch again at
			// the next attempt, which after a reset would send the webhook its start.
			rec.Killed, rec.EndedEarly = "cancelled: "+m.Why, why
			rec.Phase, rec.Published, rec.Hooked, rec.Attempts, rec.EndDue = EventEnd, rec.EndPublished, false, 0, false
			rec.FirstAt, rec.NextAt = now, now
			rec.LastError = rec.Killed + " after its NATS start went out: the webhook never got the start; ended at once on NATS"
		} else {
			rec.EndedEarly, rec.NextAt = why, now
			if rec.State == Pending {
				rec.FirstAt = now // its retries count from now
			}
		}
		_, err = o.write(ctx, k, rec, rev)
		if isConflict(err) {
			continue // changed meanwhile (another loop ended it, or delivered something): look again
		}
		if err != nil {
			return err
		}
		o.log.Warn("running promotion ended by the kill switch", "decision", rec.Action.DecisionID, "why", why, "mark", m.Gen)
		return nil
	}
}

// live reports whether the record is a promotion whose start went out and whose end is still to
// go out, not yet ended by the kill switch: waiting for its end, for a retry of its start's webhook
// after its NATS start, or dead-lettered in its start with its NATS end still to come.
func (r *Record) live() bool {
	if r.Action.Kind != Promote || r.EndedEarly != "" {
		return false
	}
	switch r.State {
	case Pending:
		return r.Phase == EventEnd || r.Phase == EventStart && r.Published
	case Dead:
		return r.EndDue
	}
	return false
}

// running reports whether the record is live and its end not yet due.
func (r *Record) running(now time.Time) bool {
	if !r.live() {
		return false
	}
	if r.State == Pending && r.Phase == EventEnd {
		return r.FirstAt.After(now)
	}
	return r.NextAt.After(now)
}

// startedAt is when the record's start was first tried on NATS (Action.Start in a record written
// before StartedAt existed).
func (r *Record) startedAt() time.Time {
	if r.StartedAt.IsZero() {
		return r.Action.Start
	}
	return r.StartedAt
}

// dueAt is when a record may next be tried, and its channel.
type dueAt struct {
	at      time.Time
	channel string
	live    bool      // a promotion running (Record.live): the kill switch's end-live mark may end it
	started time.Time // when its start went out (Record.startedAt)
}

func nextTry(rec Record) time.Time {
	at := rec.NextAt
	if rec.Owner != "" && rec.LeaseUntil.After(at) {
		at = rec.LeaseUntil
	}
	return at
}

// errLost: another loop changed the record since this one claimed it (its lease was taken over).
var errLost = errors.New("lease lost")

// try claims one record and delivers its current phase.
func (o *Outbox) try(ctx context.Context, k string) {
	rec, rev, err := o.read(ctx, k)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
			o.log.Warn("outbox read failed", "key", k, "err", err)
		}
		return
	}
	now := o.cfg.now()
	if !rec.active() || nextTry(rec).After(now) {
		return // finished, not yet due, or leased by a live loop
	}
	if rec.Owner != "" && rec.Owner != o.cfg.Owner {
		o.log.Warn("taking over an expired lease", "decision", rec.Action.DecisionID, "from", rec.Owner)
	}
	start := rec.State == Pending && rec.Phase == EventStart && !rec.Published
	handed := false
	switch {
	case start && rec.Owner != "" && !rec.StartedAt.IsZero():
		rec.MaybeOut = true // its last attempt stopped part way: maybe after its publish
	case start && rec.Owner != "":
		// Enqueue handed it to its replica's loop, which saves its try with the publish's mark
		// (no write before the publish on the way from decision to promotion): tried or not is
		// not known. Looked for on the stream once claimed.
		handed = true
		rec.StartedAt = now
	case start && rec.StartedAt.IsZero():
		rec.StartedAt = now // its first try here, saved with the claim, before any of it is tried
	}
	rec.Owner, rec.LeaseUntil = o.cfg.Owner, now.Add(o.cfg.Lease)
	rev, err = o.write(ctx, k, rec, rev)
	if err != nil {
		if !isConflict(err) && ctx.Err() == nil {
			o.log.Warn("outbox claim failed", "key", k, "err", err)
		}
		return // another loop claimed it first
	}
	if handed {
		o.handedOver(ctx, &rec)
	}
	o.attempt(ctx, rec, rev)
}

// handedOver settles a start taken over from a loop that stopped with it in hand, not knowing
// whether it was tried: on the stream, or not known (the lookup failed), it is maybe out, tried
// when it was enqueued (its later lookups start there; its end passed, it is ended on NATS alone);
// not there, it was never tried (its lease has lapsed; a copy still on its way is one the stream
// drops, within the duplicate window of the publish that follows). Only after a replica's stop: a
// lookup here costs nothing on the way from a decision to its promotion.
func (o *Outbox) handedOver(ctx context.Context, rec *Record) {
	subj := o.cfg.subject(rec.Action.Kind, rec.Action.Channel)
	found, err := o.stored(ctx, rec.msgID(), subj, rec.FirstAt, true)
	if err != nil {
		o.log.Warn("start taken over from a stopped replica: whether it went out is not known, taken as maybe out",
			"decision", rec.Action.DecisionID, "err", err)
	}
	if found || err != nil {
		rec.MaybeOut, rec.StartedAt = true, rec.FirstAt
	}
}

// attemptHanded delivers a record Enqueue handed over, from what Enqueue wrote, while the lease
// written with it holds. Once that lease has run out (the record waited for a worker) another loop
// may have taken it over and delivered it, maybe longer ago than the duplicate window: it is then
// read and claimed as any other record, never published from the stale copy.
func (o *Outbox) attemptHanded(ctx context.Context, h handed) {
	if !o.cfg.now().Before(h.rec.LeaseUntil) {
		o.try(ctx, h.key)
		return
	}
	o.attempt(ctx, h.rec, h.rev)
}

// attempt delivers a record this loop has claimed at revision rev.
func (o *Outbox) attempt(ctx context.Context, rec Record, rev uint64) {
	if err := o.deliver(ctx, key(rec.Action.DecisionID), rec, rev); err != nil && ctx.Err() == nil && !errors.Is(err, errLost) {
		o.log.Warn("delivery attempt failed", "decision", rec.Action.DecisionID, "phase", rec.Phase, "err", err)
	}
}

// deliver runs the claimed phase: NATS, then the webhook, each marked once acknowledged. Every
// mark is a compare-and-set on the claim's revision, so a loop that lost its lease stops there.
func (o *Outbox) deliver(ctx context.Context, k string, rec Record, rev uint64) error {
	mark := func() error {
		r, err := o.write(ctx, k, rec, rev)
		if isConflict(err) {
			return errLost
		}
		if err != nil {
			return fmt.Errorf("mark %s: %w", rec.msgID(), err)
		}
		rev = r
		return nil
	}
	if !rec.Reacquired.IsZero() && !rec.ReacquireLogged {
		// Before anything else of the replay (a give-back again included): the decision log
		// says in order that it was released, then reserved again.
		if err := o.logReacquired(ctx, &rec, mark); err != nil {
			return err
		}
	}
	if rec.GiveBack {
		return o.giveBack(ctx, &rec, mark) // dead, or expired, before any of it went out
	}
	if rec.State == Dead {
		return o.deadEnd(ctx, &rec, mark) // only a dead record's NATS end is ever due
	}
	if rec.Killed != "" && rec.Phase == EventStart {
		return o.finishCancel(ctx, &rec, mark) // the switch stopped it before anything went out
	}
	if now := o.cfg.now(); rec.pastEnd(now) {
		return o.expire(ctx, &rec, mark, now) // its end passed before its start is known to have gone out
	}
	if _, ok := o.cfg.Channels[rec.Action.Channel]; !ok {
		// The channel left the config after the action was enqueued: nowhere to deliver it.
		o.deadLetter(&rec, fmt.Sprintf("channel %q is no longer configured", rec.Action.Channel))
		return mark()
	}
	body, err := json.Marshal(Message{ID: rec.msgID(), Event: rec.Phase, Action: rec.Action})
	if err != nil {
		return err
	}
	// A start whose NATS end went out already (a maybe-out dead letter ended on NATS, replayed) is
	// not published after it: NATS has it ended.
	if !rec.Published && !(rec.Phase == EventStart && rec.EndPublished) {
		if rec.Phase == EventStart && rec.StartedAt.IsZero() {
			// Saved before the switch is read and before the publish (a claim by try saves it; a
			// record Enqueue handed over has none yet): a mark thrown once it was read, the start
			// going out after it, still ends this promotion; a loop taking the record over knows
			// the start was tried (MaybeOut), and from when to look for it on the stream.
			rec.StartedAt = o.cfg.now()
		}
		if stopped, err := o.stopStart(ctx, &rec, mark); stopped || err != nil {
			return err
		}
		subj := o.cfg.subject(rec.Action.Kind, rec.Action.Channel)
		stored, err := o.lookFirst(ctx, &rec, subj, mark)
		if err != nil {
			return err
		}
		if !stored {
			if err := o.publish(ctx, &rec, subj, body, mark); err != nil {
				return err
			}
		}
		rec.Published = true
		if err := mark(); err != nil {
			return err
		}
	}
	// The end of a promotion the kill switch stopped part way goes only where its start went: NATS.
	if hook := o.cfg.Channels[rec.Action.Channel].Webhook; hook != nil && !rec.Hooked && !(rec.Phase == EventEnd && (rec.Killed != "" || rec.NATSOnly)) {
		if stopped, err := o.stopStart(ctx, &rec, mark); stopped || err != nil {
			return err
		}
		// Renew the lease first: the call may take up to its timeout (at most half a lease), and
		// another loop must not take the record over while it runs.
		rec.LeaseUntil = o.cfg.now().Add(o.cfg.Lease)
		if err := mark(); err != nil {
			return err
		}
		res := o.post(ctx, hook, o.keys[rec.Action.Channel], rec.msgID(), body)
		if res.err != nil {
			now := o.cfg.now()
			rec.Attempts++
			rec.LastError = res.err.Error()
			rec.Owner, rec.LeaseUntil = "", time.Time{}
			switch {
			case res.gone:
				o.deadLetter(&rec, rec.LastError)
			case rec.Attempts >= o.cfg.Retry.MaxAttempts:
				o.deadLetter(&rec, fmt.Sprintf("%d attempts; last: %s", rec.Attempts, rec.LastError))
			default:
				next := now.Add(o.backoff(rec.Attempts))
				if res.retryAfter > 0 {
					next = now.Add(res.retryAfter)
				}
				if next.Sub(rec.FirstAt) > o.cfg.Retry.MaxAge {
					o.deadLetter(&rec, fmt.Sprintf("older than %s after %d attempts; last: %s", o.cfg.Retry.MaxAge, rec.Attempts, rec.LastError))
				} else {
					rec.NextAt = next
				}
			}
			if err := mark(); err != nil {
				return err
			}
			return res.err
		}
		rec.Hooked = true
	}
	// The phase is delivered: a promotion waits for its end, anything else is done.
	if rec.Phase == EventStart && rec.Action.Kind == Promote {
		// The NATS end may have gone out while the start's webhook was dead-lettered.
		rec.Phase, rec.Published, rec.Hooked, rec.Attempts, rec.LastError = EventEnd, rec.EndPublished, false, 0, ""
		rec.EndDue = false
		// The end is due at the promotion's end, or now if the start came later than that: its
		// retries (max_age) count from when it could first be delivered.
		rec.FirstAt, rec.NextAt = rec.Action.End, rec.Action.End
		if now := o.cfg.now(); now.After(rec.FirstAt) {
			rec.FirstAt = now
		}
	} else {
		rec.State, rec.DoneAt = Done, o.cfg.now()
	}
	rec.Owner, rec.LeaseUntil = "", time.Time{}
	return mark()
}
