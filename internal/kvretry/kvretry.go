// Package kvretry paces the retries of JetStream KV read → compare-and-set loops: which errors are
// worth retrying, backoff after a failed request, and pacing after a lost race.
package kvretry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// IsConflict reports a lost compare-and-set: another writer changed the key since it was read.
func IsConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// Transient reports whether a failed request is worth retrying: timeouts, no responders and "no
// leader" during elections are; a closed connection, a missing bucket, an invalid key, a message
// over the limit or a cancelled context are not.
func Transient(err error) bool {
	switch {
	case errors.Is(err, context.Canceled),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, jetstream.ErrBucketNotFound),
		errors.Is(err, jetstream.ErrInvalidKey),
		errors.Is(err, nats.ErrMaxPayload):
		return false
	}
	return true
}

// Sleep waits d or until ctx ends (its error then).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retrier paces the retries of one operation until its deadline.
type Retrier struct {
	ctx       context.Context
	giveUp    time.Time
	backoff   time.Duration
	conflicts int
}

// New returns a retrier that gives up retryFor from now (or when ctx ends).
func New(ctx context.Context, retryFor time.Duration) *Retrier {
	return &Retrier{ctx: ctx, giveUp: time.Now().Add(retryFor), backoff: 10 * time.Millisecond}
}

// Expired reports whether the retrier's deadline has passed.
func (r *Retrier) Expired() bool { return !time.Now().Before(r.giveUp) }

// Failed decides whether to retry after err: nil means try again (after a jittered, doubling pause up
// to a second), otherwise the error to return.
func (r *Retrier) Failed(err error) error {
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	if !Transient(err) || !time.Now().Before(r.giveUp) {
		return err
	}
	d := r.backoff/2 + rand.N(r.backoff/2+1)
	r.backoff = min(2*r.backoff, time.Second)
	return Sleep(r.ctx, d)
}

// Conflict paces a retry after a lost race: at once twice, then after a short random pause, since
// each conflict means another writer progressed but one loser can lose many times in a row.
func (r *Retrier) Conflict(err error) error {
	r.conflicts++
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	if !time.Now().Before(r.giveUp) {
		return fmt.Errorf("still conflicting after %d attempts: %w", r.conflicts, err)
	}
	if r.conflicts > 2 {
		return Sleep(r.ctx, rand.N(time.Duration(min(r.conflicts, 20))*time.Millisecond)+time.Millisecond)
	}
	return nil
}

// Attempts runs fn with each attempt bounded by per, retrying transient failures (paced as
// Failed) until ctx ends: a request whose reply was lost (an R3 stream still electing its leader)
// costs one attempt, not the caller's whole deadline. For setup calls that are idempotent, such
// as creating or updating a stream or bucket.
func Attempts(ctx context.Context, per time.Duration, fn func(ctx context.Context) error) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	r := New(ctx, time.Until(deadline))
	for {
		actx, cancel := context.WithTimeout(ctx, per)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ferr := r.Failed(err); ferr != nil {
			if ctx.Err() != nil {
				return err // the attempt's own error says more than the context's
			}
			return ferr
		}
	}
}
