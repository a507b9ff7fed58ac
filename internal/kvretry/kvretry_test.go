package kvretry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassifies(t *testing.T) {
	for _, c := range []struct {
		err                 error
		transient, conflict bool
	}{
		{context.DeadlineExceeded, true, false},
		{nats.ErrTimeout, true, false},
		{nats.ErrNoResponders, true, false},
		{fmt.Errorf("put: %w", jetstream.ErrKeyExists), true, true},
		{jetstream.ErrKeyRevisionMismatch, true, true},
		{context.Canceled, false, false},
		{nats.ErrConnectionClosed, false, false},
		{fmt.Errorf("open: %w", jetstream.ErrBucketNotFound), false, false},
		{jetstream.ErrInvalidKey, false, false},
		{nats.ErrMaxPayload, false, false},
	} {
		if got := Transient(c.err); got != c.transient {
			t.Errorf("Transient(%v) = %v", c.err, got)
		}
		if got := IsConflict(c.err); got != c.conflict {
			t.Errorf("IsConflict(%v) = %v", c.err, got)
		}
	}
}

// A retrier retries transient errors until its deadline, then returns the error; never a permanent
// one; and gives up at once when its context ends.
func TestRetrier(t *testing.T) {
	r := New(context.Background(), time.Hour)
	for range 3 {
		if err := r.Failed(nats.ErrTimeout); err != nil {
			t.Fatalf("transient error not retried: %v", err)
		}
	}
	if err := r.Failed(nats.ErrConnectionClosed); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("permanent error: %v", err)
	}
	if err := New(context.Background(), 0).Failed(nats.ErrTimeout); !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("past the deadline: %v", err)
	}
	for range 5 {
		if err := r.Conflict(jetstream.ErrKeyExists); err != nil {
			t.Fatalf("conflict not retried: %v", err)
		}
	}
	if err := New(context.Background(), 0).Conflict(jetstream.ErrKeyExists); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Errorf("conflict past the deadline: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New(ctx, time.Hour).Failed(nats.ErrTimeout); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// A first attempt whose reply never comes is cut at its own bound and tried again; a permanent
// error is returned at once; a parent context that ends stops the attempts with the attempt's error.
func TestAttempts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := 0
	err := Attempts(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		calls++
		if calls == 1 {
			<-ctx.Done() // the lost reply
			return ctx.Err()
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("lost reply: %v after %d calls, want nil after 2", err, calls)
	}

	calls = 0
	err = Attempts(ctx, time.Second, func(context.Context) error { calls++; return jetstream.ErrBucketNotFound })
	if !errors.Is(err, jetstream.ErrBucketNotFound) || calls != 1 {
		t.Fatalf("permanent error: %v after %d calls", err, calls)
	}

	overlap := &jetstream.APIError{Code: 400, ErrorCode: 10065, Description: "subjects overlap with an existing stream"}
	calls = 0
	err = Attempts(ctx, time.Second, func(context.Context) error { calls++; return fmt.Errorf("create: %w", overlap) })
	if !errors.As(err, new(*jetstream.APIError)) || calls != 1 {
		t.Fatalf("a server's refusal: %v after %d calls, want it at once", err, calls)
	}
	if !Unanswered(&jetstream.APIError{Code: 503, ErrorCode: 10008}) || !Unanswered(jetstream.ErrNoStreamResponse) || !Unanswered(nats.ErrNoResponders) {
		t.Error("an election's 10008, no stream response and no responders are worth another attempt")
	}

	short, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer stop()
	calls = 0
	err = Attempts(short, 30*time.Millisecond, func(ctx context.Context) error { calls++; <-ctx.Done(); return ctx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) || calls < 2 {
		t.Fatalf("parent deadline: %v after %d calls, want the deadline after several attempts", err, calls)
	}
}
