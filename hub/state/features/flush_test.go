package features

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

// pendingMeter is the real JetStream context, noting the most publishes awaiting their ack.
type pendingMeter struct {
	jetstream.JetStream
	most atomic.Int64
}

func (p *pendingMeter) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if n := int64(p.PublishAsyncPending()) + 1; n > p.most.Load() {
		p.most.Store(n)
	}
	return p.JetStream.PublishMsgAsync(m, opts...)
}

// TestFlushManyKeys: one flush of more changed keys than the connection's async publish limit
// (4,000) stores them all, never with more than maxInFlight writes unacknowledged. Unbounded, a
// flush on a busy server stalled on that limit and failed its whole batch, which was redelivered.
func TestFlushManyKeys(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	meter := &pendingMeter{JetStream: js}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, meter, Config{Bucket: "F", Definitions: defs}, testPlant, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const keys = 9000
	ins := make([]Input, 0, keys)
	for i := range keys {
		ins = append(ins, in(feat("line1.pack.parts", "units", t0, float64(i), "sku", fmt.Sprintf("SKU-%05d", i)), uint64(i)))
	}
	s.Apply(ins)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if w := s.Stats.Writes.Load(); w != keys {
		t.Errorf("%d writes, want %d", w, keys)
	}
	// Well under the connection's limit, whatever the window is tuned to.
	if m := meter.most.Load(); m > 2000 || m > maxInFlight {
		t.Errorf("%d writes awaited their ack at once, want ≤ %d and well under 4,000", m, maxInFlight)
	}
	kv, err := js.KeyValue(ctx, "F")
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Values() != keys {
		t.Errorf("bucket holds %d values, want %d", st.Values(), keys)
	}
	if r, ok := s.Get("units", "SKU-08999"); !ok || r.Value.Value != 8999 || r.Revision == 0 {
		t.Errorf("units SKU-08999 = %+v %v", r, ok)
	}
}

// TestApplyTwiceBeforeFlush: a key changed twice between flushes is written once, with the later
// window, and a reader's copy of the first change keeps its own value and labels.
func TestApplyTwiceBeforeFlush(t *testing.T) {
	n := natstest.JetStream(t)
	s := open(t, n.URL())
	s.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 5, "sku", "SKU-1", "lot", "L1"), 1)})
	first, ok := s.Get("units", "SKU-1")
	if !ok {
		t.Fatal("units SKU-1 not applied")
	}
	s.Apply([]Input{in(feat("line1.pack.parts", "units", t0.Add(10*time.Second), 7, "sku", "SKU-1", "lot", "L2"), 2),
		in(feat("line1.pack.parts", "units", t0.Add(5*time.Second), 6, "sku", "SKU-1", "lot", "L9"), 3)}) // older: ignored
	if first.Value.Value != 5 || first.Labels["lot"] != "L1" || first.Lineage.FirstSeq != 1 {
		t.Errorf("reader's copy changed: %+v", first)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := s.Stats.Writes.Load(); w != 1 {
		t.Errorf("%d writes, want 1", w)
	}
	r, _ := s.Get("units", "SKU-1")
	if r.Value.Value != 7 || r.Labels["lot"] != "L2" || r.Lineage.FirstSeq != 2 || r.Revision == 0 {
		t.Errorf("units SKU-1 = %+v", r)
	}
	// The next change after the flush goes in a new value; the stored revision is carried over.
	s.Apply([]Input{in(feat("line1.pack.parts", "units", t0.Add(20*time.Second), 8, "sku", "SKU-1"), 4)})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r2, _ := s.Get("units", "SKU-1"); r2.Value.Value != 8 || r2.Revision <= r.Revision || s.Stats.Conflicts.Load() != 0 {
		t.Errorf("after the second flush: %+v, conflicts %d", r2, s.Stats.Conflicts.Load())
	}
}
