package features

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
)

// TestFlushManyKeys: one flush of 9,000 changed keys is a handful of log messages (a KV bucket
// took 9,000 writes), and a new replica loads every value.
func TestFlushManyKeys(t *testing.T) {
	n := natstest.JetStream(t)
	s := open(t, n.URL())
	const keys = 9000
	ins := make([]Input, 0, keys)
	for i := range keys {
		ins = append(ins, in(feat("line1.pack.parts", "units", t0, float64(i), "sku", fmt.Sprintf("SKU-%05d", i)), uint64(i)))
	}
	s.Apply(ins)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w, m := s.Stats.Writes.Load(), s.Stats.Messages.Load(); w != keys || m == 0 || m > 5 {
		t.Errorf("%d values in %d messages, want %d in a few", w, m, keys)
	}
	if r, ok := s.Get("units", "SKU-08999"); !ok || r.Value.Value != 8999 || r.Revision == 0 {
		t.Errorf("units SKU-08999 = %+v %v", r, ok)
	}
	s2 := open(t, n.URL())
	if l := s2.List("units"); len(l) != keys {
		t.Errorf("a new replica loads %d values, want %d", len(l), keys)
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
	if r2, _ := s.Get("units", "SKU-1"); r2.Value.Value != 8 || r2.Revision <= r.Revision {
		t.Errorf("after the second flush: %+v", r2)
	}
}
