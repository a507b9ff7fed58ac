package act

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stopStart reads the kill switch before a part of a start goes out (with a Guard set). While it
// is thrown, a start nothing of which went out is cancelled for good (Killed written first, then
// finishCancel); a promotion whose NATS start went out, or may have (MaybeOut), is ended at once,
// on NATS only, keeping what it reserved; a hold whose NATS message went out (or may have) is done
// without its webhook. stopped: send nothing more now.
func (o *Outbox) stopStart(ctx context.Context, rec *Record, mark func() error) (stopped bool, err error) {
	if o.guard == nil || rec.Phase != EventStart {
		return false, nil // ends are always delivered: ending is safe
	}
	on, why, err := o.guard.Killed(ctx)
	now := o.cfg.now()
	if err != nil {
		// Whether the hub may act is not known: nothing goes out until it is.
		err = fmt.Errorf("%s: read the kill switch: %w", rec.msgID(), err)
		rec.LastError = err.Error()
		rec.Owner, rec.LeaseUntil, rec.NextAt = "", time.Time{}, now.Add(o.cfg.Retry.Initial)
		_ = mark()
		return true, err
	}
	if !on {
		return false, nil
	}
	id := rec.Action.DecisionID
	rec.Killed = "cancelled: " + why
	if !rec.Published && !rec.MaybeOut {
		// The commitment: from this mark on the start is never delivered, switch reset or not.
		rec.LastError = rec.Killed
		if err := mark(); err != nil {
			return true, err
		}
		return true, o.finishCancel(ctx, rec, mark)
	}
	// Its NATS start went out, or may have (a publish with no answer, an attempt taken over part
	// way): not cancelled in silence with its start maybe on the stream.
	out := "went out"
	if !rec.Published {
		out = "may have gone out unmarked"
	}
	if rec.Action.Kind == Promote {
		rec.Phase, rec.Published, rec.Hooked, rec.Attempts, rec.EndDue = EventEnd, rec.EndPublished, false, 0, false
		rec.FirstAt, rec.NextAt = now, now
		rec.LastError = rec.Killed + " after its NATS start " + out + ": the webhook never got the start; ended at once on NATS"
		o.log.Warn("promotion ended by the kill switch part way through its start", "decision", id, "why", why)
	} else {
		rec.State, rec.DoneAt = Done, now
		rec.LastError = rec.Killed + " after its NATS message " + out + ": the webhook was not called"
		o.log.Warn("hold stopped by the kill switch part way through", "decision", id, "why", why)
	}
	rec.Owner, rec.LeaseUntil = "", time.Time{}
	return true, mark()
}

// finishCancel gives back what a start the kill switch cancelled holds and records it cancelled.
// Killed is written already: a loop taking the record over after a crash or a failure here does
// this again (Guard.Cancelled is idempotent) and never delivers it.
func (o *Outbox) finishCancel(ctx context.Context, rec *Record, mark func() error) error {
	id := rec.Action.DecisionID
	now := o.cfg.now()
	if o.guard == nil {
		o.log.Error("action cancelled by the kill switch with no guard to give back to: its reservations stay", "decision", id)
		rec.State, rec.DoneAt, rec.LastError = Cancelled, now, rec.Killed
		rec.Owner, rec.LeaseUntil = "", time.Time{}
		return mark()
	}
	return o.guardGiveBack(ctx, rec, mark, "give back what the cancelled action holds",
		func(ctx context.Context) error { return o.guard.Cancelled(ctx, rec.Action, rec.Killed) },
		func() {
			rec.State, rec.DoneAt, rec.LastError = Cancelled, now, rec.Killed
			o.log.Warn("action cancelled by the kill switch", "decision", id, "why", rec.Killed)
		},
		func(err error) {
			// Cancelled all the same (nothing goes out), the guard's refusal on the record.
			rec.State, rec.DoneAt, rec.LastError = Cancelled, now, rec.Killed+"; its reservations were not given back: "+err.Error()
			o.log.Error("action cancelled by the kill switch; the guard refuses to give back what it holds", "decision", id, "err", err)
		},
		func(err error) { rec.LastError = rec.Killed + "; " + err.Error() })
}

// guardGiveBack has the guard give back what rec holds (call, within a third of the lease: a call
// still running once another loop could take the record over, and a replay reserve again, would
// give back what the replay reserved) and marks its outcome: done once given back; final on a
// refusal no retry changes (ErrPermanent: logged once, never retried); on any other error failed,
// and the record is tried again after Retry.Initial, the error (saying what failed) returned.
// finishCancel and giveBack share it, so that the two give-backs stay in step.
func (o *Outbox) guardGiveBack(ctx context.Context, rec *Record, mark func() error, what string,
	call func(context.Context) error, done func(), final, failed func(error)) error {
	rec.Owner, rec.LeaseUntil = "", time.Time{}
	gctx, cancel := context.WithTimeout(ctx, o.cfg.Lease/3)
	err := call(gctx)
	cancel()
	switch {
	case errors.Is(err, ErrPermanent):
		final(err)
		return mark()
	case err != nil:
		err = fmt.Errorf("%s: %s: %w", rec.Action.DecisionID, what, err)
		failed(err)
		rec.NextAt = o.cfg.now().Add(o.cfg.Retry.Initial)
		_ = mark()
		return err
	}
	done()
	return mark()
}

// deadLetter gives the record up until a Replay. A promotion whose NATS start went out (or may
// have: MaybeOut) and whose NATS end did not keeps its NATS end due at the promotion's end (now, if
// that has passed), on NATS only: subscribers of the stream see it end whatever happened to the
// webhook or the channel's config. A promotion nothing of which went out is to give its
// reservations back (giveBack, now); one whose NATS start may have gone out unmarked keeps them,
// as expire keeps them: it may have acted.
func (o *Outbox) deadLetter(rec *Record, why string) {
	rec.State, rec.LastError, rec.Owner, rec.LeaseUntil = Dead, why, "", time.Time{}
	if rec.Action.Kind == Promote && !rec.wentOut() && !rec.MaybeOut && rec.GivenBack.IsZero() {
		rec.GiveBack, rec.NextAt = true, o.cfg.now()
	}
	// Its NATS start went out (or may have) and its NATS end did not: in its start phase
	// (published, or maybe out), or in its end phase before the end's publish (a channel that
	// left the config while it ran).
	started := rec.Phase == EventStart && (rec.Published || rec.MaybeOut) || rec.Phase == EventEnd && !rec.Published
	rec.EndDue = rec.Action.Kind == Promote && started && !rec.EndPublished
	if rec.EndDue {
		rec.NextAt = rec.Action.End
	}
	o.log.Error("action dead-lettered", "decision", rec.Action.DecisionID, "id", rec.msgID(), "attempts", rec.Attempts, "err", why)
}

// giveBack gives back to the guard what a promotion dead-lettered (or expired) before any of it
// went out holds (its daily caps and cooldown), so that a promotion that never ran spends none of
// them. The record stays dead (or cancelled), marked given back: a Replay of a dead one reserves
// again first. Any loop may do it (under its claim); after a failure or a crash it is done again
// (Guard.DeadLettered is idempotent). A refusal no retry can change (ErrPermanent) is final: the
// record keeps what the guard said, and no longer gives back.
func (o *Outbox) giveBack(ctx context.Context, rec *Record, mark func() error) error {
	id := rec.Action.DecisionID
	what, why := "dead-lettered", "dead-lettered ("+rec.LastError+")"
	if rec.State == Cancelled {
		what, why = "not started", rec.LastError
	}
	if o.guard == nil {
		o.log.Error("promotion "+what+" before any of it went out, with no guard to give back to: its reservations stay", "decision", id)
		rec.GiveBack, rec.Owner, rec.LeaseUntil = false, "", time.Time{}
		return mark()
	}
	return o.guardGiveBack(ctx, rec, mark, "give back what the "+what+" promotion holds",
		func(ctx context.Context) error { return o.guard.DeadLettered(ctx, rec.Action, why) },
		func() {
			rec.GiveBack, rec.GivenBack = false, o.cfg.now()
			o.log.Warn("promotion "+what+" before any of it went out: its caps and cooldown given back", "decision", id)
		},
		func(err error) {
			rec.GiveBack = false
			rec.LastError += "; its reservations were not given back: " + err.Error()
			o.log.Error("promotion "+what+" before any of it went out; the guard refuses to give back what it holds", "decision", id, "err", err)
		},
		func(error) {}) // its last error stays the dead letter's: it is what the give-back's retry says why with
}

// undoReacquire gives back what a Replay reserved again (Guard.Reacquire) when its write of the
// record then failed other than by a conflict (its context ended, NATS did not answer): the record
// stays dead and given back, so the guard must not hold its caps and cooldown. The write may have
// landed all the same (its answer lost): the dead record is first written again at the revision
// the replay read, which the replay's write can then never land on; written, what was reserved is
// given back (Guard.DeadLettered, as a dead letter gives back). Found changed, the record is read
// back: the replay's write landed (Reacquired is at), and nil is returned. Whatever else, the error
// says whether the guard still holds them. It works on a context of its own, for a lease/3: the
// replay's may be what failed.
func (o *Outbox) undoReacquire(ctx context.Context, k string, dead Record, rev uint64, at time.Time, wErr error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.Lease/3)
	defer cancel()
	held := "what the guard reserved again for it may stay reserved while it stays dead: replay it again " +
		"(reserving again is then a no-op), or have the guard release it"
	_, err := o.write(ctx, k, dead, rev)
	if isConflict(err) {
		if rec, _, rerr := o.read(ctx, k); rerr == nil && rec.Reacquired.Equal(at) {
			return nil // the replay's write landed
		}
		return fmt.Errorf("%w; the record changed meanwhile (another replay?): what the guard reserved again is left as it is", wErr)
	}
	if err != nil {
		return fmt.Errorf("%w; whether the replay was recorded is not known (%v): %s", wErr, err, held)
	}
	why := "dead-lettered (" + dead.LastError + "); reserved again for a replay whose record was not written (" + wErr.Error() + ")"
	if err := o.guard.DeadLettered(ctx, dead.Action, why); err != nil {
		return fmt.Errorf("%w; giving back what it reserved again failed (%v): %s", wErr, err, held)
	}
	o.log.Warn("replay not recorded: what it reserved again was given back", "decision", dead.Action.DecisionID, "err", wErr)
	return fmt.Errorf("%w; not replayed: what it reserved again was given back", wErr)
}

// logReacquired has the guard record on the decision log that a replay reserved the record's
// decision again; the mark goes with the attempt's next one. A failure sends nothing now and is
// retried; a refusal no retry changes (ErrPermanent) is logged once and the delivery goes on.
func (o *Outbox) logReacquired(ctx context.Context, rec *Record, mark func() error) error {
	if o.guard != nil {
		err := o.guard.Reacquired(ctx, rec.Action, rec.Reacquired)
		if errors.Is(err, ErrPermanent) {
			o.log.Error("replay reserved again, not recorded on the decision log", "decision", rec.Action.DecisionID, "err", err)
		} else if err != nil {
			err = fmt.Errorf("%s: record its reservations taken again for its replay: %w", rec.Action.DecisionID, err)
			rec.LastError = err.Error()
			rec.Owner, rec.LeaseUntil, rec.NextAt = "", time.Time{}, o.cfg.now().Add(o.cfg.Retry.Initial)
			_ = mark()
			return err
		}
	}
	rec.ReacquireLogged = true
	return nil
}

// expire cancels for good a promotion whose end passed before any of it went out (NATS refused its
// start until then, or no loop ran): started now, it would run a promotion nobody decided for now.
// The commitment is written first, under the claim (a loop taking it over, whatever its clock,
// only gives back); then what it reserved is given back as for a dead letter (giveBack). One whose
// NATS start may have gone out unmarked (MaybeOut) is ended on NATS instead, keeping what it holds:
// a replayed dead letter whose NATS end went out already (deadEnd) is then done with nothing sent.
func (o *Outbox) expire(ctx context.Context, rec *Record, mark func() error, now time.Time) error {
	why := fmt.Sprintf("expired: its end %s had passed when its start could go out (due since %s)",
		rec.Action.End.UTC().Format(time.RFC3339), rec.FirstAt.UTC().Format(time.RFC3339))
	if rec.LastError != "" {
		why += "; last error: " + rec.LastError
	}
	if rec.MaybeOut {
		// Its NATS start may be on the stream: ended there at once, as a start the kill switch
		// stopped part way; the webhook never got the start and gets nothing. It may have acted:
		// its reservations stay. A replayed dead letter's NATS end may be out already (deadEnd):
		// not sent again.
		end := "its NATS end goes out"
		if rec.EndPublished {
			end = "its NATS end went out when it was dead-lettered"
		}
		rec.Phase, rec.Published, rec.Hooked, rec.Attempts, rec.NATSOnly = EventEnd, rec.EndPublished, false, 0, true
		rec.EndDue, rec.FirstAt, rec.NextAt, rec.Owner, rec.LeaseUntil = false, now, now, "", time.Time{}
		rec.LastError = why + "; its NATS start may have gone out unmarked (an attempt stopped part way, or a publish got no answer): " +
			end + ", the webhook gets nothing"
		o.log.Warn("promotion past its end, its NATS start maybe out: ended on NATS", "decision", rec.Action.DecisionID, "end", rec.Action.End)
		return mark()
	}
	rec.State, rec.DoneAt, rec.LastError, rec.GiveBack, rec.NextAt = Cancelled, now, why, true, now
	o.log.Warn("promotion not started: its end passed before its start could go out", "decision", rec.Action.DecisionID, "end", rec.Action.End)
	if err := mark(); err != nil {
		return err
	}
	return o.giveBack(ctx, rec, mark)
}

// deadEnd publishes the NATS end of a promotion dead-lettered after its NATS start went out (or may
// have: MaybeOut) and before its NATS end did. The record stays dead (listed, replayable); a replay
// then sends no NATS end again, nor a NATS start after it.
func (o *Outbox) deadEnd(ctx context.Context, rec *Record, mark func() error) error {
	id := rec.Action.DecisionID + ":end"
	body, err := json.Marshal(Message{ID: id, Event: EventEnd, Action: rec.Action})
	if err != nil {
		return err
	}
	subj := o.cfg.subject(Promote, rec.Action.Channel)
	pctx, cancel := context.WithTimeout(ctx, o.cfg.Lease/3)
	_, err = o.js.Publish(pctx, subj, body, jetstream.WithMsgID(id), jetstream.WithExpectStream(o.cfg.Stream))
	cancel()
	rec.Owner, rec.LeaseUntil = "", time.Time{}
	if err != nil {
		err = fmt.Errorf("publish %s on %s: %w", id, subj, err)
		if cause := o.permanent(ctx, subj, err); cause != "" {
			rec.EndDue = false
			rec.LastError += fmt.Sprintf("; its NATS end was not published: %v: %s", err, cause)
			o.log.Error("NATS end of a dead-lettered promotion given up", "decision", rec.Action.DecisionID, "err", err, "cause", cause)
		} else {
			rec.NextAt = o.cfg.now().Add(o.cfg.Retry.Initial)
		}
		_ = mark()
		o.checkStream(ctx, err)
		return err
	}
	o.streamBack()
	rec.EndDue, rec.EndPublished = false, true
	o.log.Info("NATS end of a dead-lettered promotion published", "decision", rec.Action.DecisionID)
	return mark()
}

// API error codes of publishes that no retry can make succeed (nats-server's
// JSStreamMessageExceedsMaximumErr, JSStreamHeaderExceedsMaximumErr, JSStreamNotMatchErr).
const (
	errCodeMsgTooBig    = 10054
	errCodeHdrTooBig    = 10097
	errCodeStreamNotYou = 10060
)

// permanent says why a publish error can never succeed by retrying, or "" when it may: a message
// larger than the server or the stream takes, a subject the stream does not take.
func (o *Outbox) permanent(ctx context.Context, subj string, err error) string {
	if errors.Is(err, nats.ErrMaxPayload) {
		return "the message is larger than the server's max_payload"
	}
	if api := (*jetstream.APIError)(nil); errors.As(err, &api) {
		switch api.ErrorCode {
		case errCodeMsgTooBig, errCodeHdrTooBig, errCodeStreamNotYou:
			return fmt.Sprintf("stream %s refuses it whatever the retry", o.cfg.Stream)
		}
		return ""
	}
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		return ""
	}
	// No stream answered: JetStream may be electing a leader (retried), or the stream no longer
	// takes the subject (an operator changed it). Only its config tells.
	sctx, cancel := context.WithTimeout(ctx, o.cfg.Lease/3)
	defer cancel()
	s, err := o.js.Stream(sctx, o.cfg.Stream)
	if err != nil {
		return ""
	}
	subs := s.CachedInfo().Config.Subjects
	if slices.ContainsFunc(subs, func(p string) bool { return subjectMatch(p, subj) }) {
		return ""
	}
	return fmt.Sprintf("stream %s does not take %s (its subjects: %s)", o.cfg.Stream, subj, strings.Join(subs, " "))
}

// refused reports whether a publish error says the message was not stored (the server or the
// stream answered no, or nothing listened); any other (a timeout, a lost connection) leaves it
// unknown.
func refused(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrMaxPayload)
}

// subjectMatch reports whether subject subj matches pattern (tokens, '*' one, '>' the rest).
func subjectMatch(pattern, subj string) bool {
	ps, ss := strings.Split(pattern, "."), strings.Split(subj, ".")
	for i, p := range ps {
		if p == ">" {
			return len(ss) > i
		}
		if i >= len(ss) || p != "*" && p != ss[i] {
			return false
		}
	}
	return len(ps) == len(ss)
}

// streamPause is how long the actions stream stays missing before the outbox creates it again: an
// operator re-creating it by hand, with settings of their own, is not raced.
const streamPause = 2 * time.Second

// Problem says why the outbox cannot deliver ("" when it can): the actions stream is gone.
func (o *Outbox) Problem() string {
	if p := o.missing.Load(); p != nil {
		return *p
	}
	return ""
}

// checkStream follows a publish no stream answered. When the actions stream is gone (deleted while
// the hub runs), the outbox says so (Problem, an ERROR) and, streamPause later, creates it again
// with its configured settings, as a restart would: the stream is an output, and what it held left
// with it; every record that says published stays so, and the others are published to the new one.
func (o *Outbox) checkStream(ctx context.Context, pubErr error) {
	if !errors.Is(pubErr, jetstream.ErrNoStreamResponse) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Lease/3)
	defer cancel()
	if _, err := o.js.Stream(ctx, o.cfg.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return // there (it did not answer in time), or JetStream not answering: a retry will tell
	}
	o.streamMu.Lock()
	defer o.streamMu.Unlock()
	now := o.cfg.now()
	if o.missing.Load() == nil {
		o.missingAt = now
		why := fmt.Sprintf("act stream %s not found (deleted while the hub runs?): no action is published; it is created again in %s",
			o.cfg.Stream, streamPause)
		o.missing.Store(&why)
		o.log.Error("act stream not found: actions wait; creating it again shortly", "stream", o.cfg.Stream, "in", streamPause)
		return
	}
	if now.Sub(o.missingAt) < streamPause {
		return
	}
	if err := o.createStream(ctx); err != nil {
		why := fmt.Sprintf("act stream %s not found, and creating it again failed: %v", o.cfg.Stream, err)
		o.missing.Store(&why)
		o.log.Error("act stream not found, creating it again failed; retried", "stream", o.cfg.Stream, "err", err)
		return
	}
	o.missing.Store(nil)
	o.log.Warn("act stream created again with its configured settings; its earlier messages are gone", "stream", o.cfg.Stream)
}

// streamBack clears the missing stream's reason once a publish is stored again.
func (o *Outbox) streamBack() {
	if o.missing.Load() == nil {
		return
	}
	o.streamMu.Lock()
	o.missing.Store(nil)
	o.streamMu.Unlock()
}
