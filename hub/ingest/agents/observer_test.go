package agents

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// recorder is an Observer that counts what it saw and fails its first flushes on demand.
type recorder struct {
	mu      sync.Mutex
	seen    map[string]int // per message id
	pending []string
	stored  map[string]int // observed and flushed
	fail    int
}

func (r *recorder) Observe(b *signal.Batch) {
	r.mu.Lock()
	r.seen[b.MsgID()]++
	r.pending = append(r.pending, b.MsgID())
	r.mu.Unlock()
}

func (r *recorder) Flush(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail-- // what failed is kept for the next flush, as the monitor's observer does
		return errors.New("monitor log unavailable")
	}
	for _, id := range r.pending {
		r.stored[id]++
	}
	r.pending = nil
	return nil
}

func (r *recorder) get(m map[string]int, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[id]
}

// The observer sees each fresh message after dedup (a re-sent copy is not observed), and a failed
// observer flush is retried in place (the batch's stock is moved by then): observed once, flushed.
func TestObserver(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	ctx := context.Background()
	feats, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: defs}, plant{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer feats.Close()
	dd, err := dedup.Open(ctx, js, dedup.Config{Bucket: "DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{seen: map[string]int{}, stored: map[string]int{}, fail: 1}
	cfg := DefaultConfig()
	cfg.AckWait = 2 * time.Second
	m := NewMetrics()
	c, err := New(cfg, Deps{JS: js, Prefix: "gemba", Dedup: dd, Features: feats, Placer: plant{}, Metrics: m, Observer: rec}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()

	publish(t, js, 1, false, "", units("SKU-1", 1, 7))
	id1 := signal.MsgID("gw1", signal.StreamFeatures, "aa01", 1)
	testutil.WaitFor(t, 15*time.Second, "message 1 observed and flushed after the failed flush", func() bool {
		return rec.get(rec.stored, id1) == 1
	})
	if n := rec.get(rec.seen, id1); n != 1 {
		t.Errorf("message 1 observed %d times, want 1 (the failed flush retried, not redelivered)", n)
	}
	if e := count(m.errors); e < 1 {
		t.Errorf("the failed flush was not counted as an error (%v)", e)
	}
	publish(t, js, 2, false, "", units("SKU-1", 2, 5))
	id2 := signal.MsgID("gw1", signal.StreamFeatures, "aa01", 2)
	testutil.WaitFor(t, 10*time.Second, "message 2 observed", func() bool { return rec.get(rec.stored, id2) == 1 })
	// The same message under another JetStream id (a re-send after the duplicate window): dedup
	// drops it before the observer.
	publish(t, js, 2, false, "gw1:features:aa01:2:copy", units("SKU-1", 2, 5))
	testutil.WaitFor(t, 10*time.Second, "the copy dropped", func() bool { return count(m.duplicates) == 1 })
	if n := rec.get(rec.seen, id2); n != 1 {
		t.Errorf("message 2 observed %d times, want 1", n)
	}
	if r, ok := feats.Get("units", "SKU-1"); !ok || r.Value.Value != 5 {
		t.Errorf("the features were not applied: %+v %v", r, ok)
	}
}
