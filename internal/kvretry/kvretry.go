// Package kvretry paces JetStream retries: read → compare-and-set loops (which errors, backoff,
// pacing after a lost race) and setup calls repeated while unanswered.
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

// SetupAttempt bounds one attempt of a setup call (Attempts, KeyValue, Stream); SetupFor is how
// long unanswered attempts are repeated when the caller's context has no deadline.
const (
	SetupAttempt = 10 * time.Second
	SetupFor     = time.Minute
)

// Unanswered reports a request that got no answer, or "try again" from a cluster still electing:
// an idempotent setup call is worth repeating then. A server's definite refusal (overlapping
// subjects, a config it rejects, not enough peers) is not.
func Unanswered(err error) bool {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse):
		return true
	case errors.As(err, &api):
		return api.ErrorCode == jsClusterNotAvailable
	}
	return false
}

// jsClusterNotAvailable is JetStream's "system temporarily unavailable" (no meta leader yet).
const jsClusterNotAvailable = 10008

// Attempts runs fn with each attempt bounded by per, repeating unanswered ones (paced as Failed)
// until ctx ends, or for SetupFor when it has no deadline: a request whose reply was lost (an R3
// stream still electing its leader) costs one attempt, not the caller's whole deadline. For setup
// calls that are idempotent, such as creating or updating a stream or bucket.
func Attempts(ctx context.Context, per time.Duration, fn func(ctx context.Context) error) error {
	giveUp := time.Now().Add(SetupFor)
	if d, ok := ctx.Deadline(); ok {
		giveUp = d
	}
	r := New(ctx, time.Until(giveUp))
	for {
		actx, cancel := context.WithTimeout(ctx, per)
		err := fn(actx)
		cancel()
		if err == nil || !Unanswered(err) || ctx.Err() != nil || r.Expired() {
			return err
		}
		if ferr := r.Failed(err); ferr != nil {
			return err // the attempt's own error says more than the context's
		}
	}
}

// KeyValue creates or updates a bucket (jetstream.CreateOrUpdateKeyValue) with Attempts.
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return setup(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateOrUpdateKeyValue(ctx, cfg) })
}

// Stream creates or updates a stream (jetstream.CreateOrUpdateStream) with Attempts.
func Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return setup(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, cfg) })
}

func setup[T any](ctx context.Context, create func(context.Context) (T, error)) (T, error) {
	var out T
	err := Attempts(ctx, SetupAttempt, func(ctx context.Context) (err error) {
		out, err = create(ctx)
		return err
	})
	return out, err
}
