package act

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// stored reports whether the message id, which may be on the actions stream though not marked, is
// there, when publishing it again could store it twice: since, when it was first tried (or no
// earlier than that), is older than the stream's duplicate window (read from the stream's config,
// less a lease for the clocks of the replicas and the servers). Within the window it reports false
// without looking (unless always): the stream drops the copy. It reads subj from a lease before since, headers
// only, for a message whose Nats-Msg-Id is id.
func (o *Outbox) stored(ctx context.Context, id, subj string, since time.Time, always bool) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.Lease/3)
	defer cancel()
	s, err := o.js.Stream(ctx, o.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil // gone, and what it held with it: the publish finds out (checkStream)
	}
	if err != nil {
		return false, fmt.Errorf("look for %s on stream %s: %w", id, o.cfg.Stream, err)
	}
	if !always && o.cfg.now().Sub(since) < s.CachedInfo().Config.Duplicates-o.cfg.Lease {
		return false, nil
	}
	from := since.Add(-o.cfg.Lease)
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:   "gemba-hub: looking for an action message that may have gone out unmarked",
		FilterSubject: subj, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
		AckPolicy: jetstream.AckNonePolicy, HeadersOnly: true, MemoryStorage: true, InactiveThreshold: o.cfg.Lease,
	})
	if err != nil {
		return false, fmt.Errorf("look for %s on stream %s: %w", id, o.cfg.Stream, err)
	}
	defer func() {
		// Best effort: the server removes it once inactive for a lease anyway.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.Lease/3)
		_ = s.DeleteConsumer(dctx, c.CachedInfo().Name)
		cancel()
	}()
	for pending := c.CachedInfo().NumPending; pending > 0; {
		batch, err := c.Fetch(int(min(pending, 256)), jetstream.FetchContext(ctx))
		if err != nil {
			return false, fmt.Errorf("look for %s on stream %s: %w", id, o.cfg.Stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if m.Headers().Get(jetstream.MsgIDHeader) == id {
				return true, nil
			}
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if got == 0 {
			// Not all read: whether it is there is not known.
			return false, fmt.Errorf("look for %s on stream %s: %d message(s) of %s not read (%v)", id, o.cfg.Stream, pending, subj, batch.Error())
		}
	}
	return false, nil
}

// lookFirst looks on the stream for the message of rec's phase, when it may have gone out unmarked,
// before it is published again (stored): a start that may be out (MaybeOut), since its first try;
// an end (a loop may have stopped after its publish, or a publish got no answer), since it became
// due (FirstAt: it is never tried before), once that is a lease ago (a retry sooner than that is
// within any duplicate window the config allows: no read of the stream for an end on time). A
// lookup that fails sends nothing now: the record is tried again after Retry.Initial, as after a
// publish with no answer.
func (o *Outbox) lookFirst(ctx context.Context, rec *Record, subj string, mark func() error) (bool, error) {
	var since time.Time
	switch {
	case rec.Phase == EventStart && rec.MaybeOut:
		since = rec.startedAt()
	case rec.Phase == EventEnd && o.cfg.now().Sub(rec.FirstAt) >= o.cfg.Lease:
		since = rec.FirstAt
	default:
		return false, nil
	}
	stored, err := o.stored(ctx, rec.msgID(), subj, since, false)
	if err != nil {
		rec.LastError = err.Error()
		rec.Owner, rec.LeaseUntil, rec.NextAt = "", time.Time{}, o.cfg.now().Add(o.cfg.Retry.Initial)
		_ = mark()
		return false, err
	}
	if stored {
		o.log.Info("message that may have gone out unmarked found on the stream: marked published, not sent again",
			"id", rec.msgID(), "subject", subj)
	}
	return stored, nil
}

// publish sends the NATS message of rec's phase. A publish that can never succeed dead-letters the
// record; any other failure leaves it to a retry after Retry.Initial (a start with no answer maybe
// out). Both are marked before the error is returned.
func (o *Outbox) publish(ctx context.Context, rec *Record, subj string, body []byte, mark func() error) error {
	pctx, cancel := context.WithTimeout(ctx, o.cfg.Lease/3)
	_, err := o.js.Publish(pctx, subj, body, jetstream.WithMsgID(rec.msgID()), jetstream.WithExpectStream(o.cfg.Stream))
	cancel()
	if err != nil {
		err = fmt.Errorf("publish %s on %s: %w", rec.msgID(), subj, err)
		if cause := o.permanent(ctx, subj, err); cause != "" {
			// It can never succeed: retrying would hold the action (and what it reserved)
			// forever. Counted as the phase's one attempt.
			rec.Attempts++
			o.deadLetter(rec, fmt.Sprintf("%v: %s", err, cause))
			if err := mark(); err != nil {
				return err
			}
			return err
		}
		// Not counted as a webhook attempt: NATS being away is not the receiver's failure.
		rec.LastError = err.Error()
		if rec.Phase == EventStart && !refused(err) {
			rec.MaybeOut = true // no answer: it may have been stored all the same
		}
		rec.Owner, rec.LeaseUntil, rec.NextAt = "", time.Time{}, o.cfg.now().Add(o.cfg.Retry.Initial)
		_ = mark()
		o.checkStream(ctx, err)
		return err
	}
	o.streamBack()
	if o.afterPublish != nil {
		return o.afterPublish(rec.msgID())
	}
	return nil
}
