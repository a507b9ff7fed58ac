package quality

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A flush that fails (the monitor log unavailable) keeps what it took: the ingest retries it in
// place once the batch's stock is moved, and the next flush stores it. Past a bound, a pile of
// failed messages is dropped instead (their batches are observed again when redelivered).
func TestFailedFlushKept(t *testing.T) {
	js := jetStream(t)
	const subj = "gemba_monitor_test.log"
	o := newObserver(js, subj, defs, nil, time.Hour)
	a := &agent{id: "a1", inc: "i1"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	o.Observe(a.batch(mean("line1.oven.temp", t0, 10)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Flush(ctx); err == nil {
		t.Fatal("a flush with no stream for the log succeeded")
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MONTEST", Subjects: []string{subj}})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 || o.Stats.Messages.Load() != 1 {
		t.Fatalf("%d messages on the log, %d counted, want the failed flush's one", info.State.Msgs, o.Stats.Messages.Load())
	}
	// Past the bound, what failed is dropped.
	if err := js.DeleteStream(ctx, "MONTEST"); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	for range maxKept + 1 {
		o.pending = append(o.pending, []byte("{}"))
	}
	o.mu.Unlock()
	if err := o.Flush(ctx); err == nil {
		t.Fatal("a flush with no stream for the log succeeded")
	}
	o.mu.Lock()
	left := len(o.pending)
	o.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d messages kept after a failed flush of more than %d", left, maxKept)
	}
}
