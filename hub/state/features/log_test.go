package features

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// Compaction: a snapshot replaces the messages it covers while another replica keeps writing; the
// log shrinks, and a new replica loads exactly the state of the writers.
func TestCompactWhileWriting(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	const rounds, keys = 60, 50
	write := func(s *Store, r int) {
		var ins []Input
		for k := range keys {
			ins = append(ins, in(feat("line1.pack.parts", "units", t0.Add(time.Duration(r)*time.Second), float64(r), "sku", fmt.Sprint("S", k)), uint64(r*keys+k)))
		}
		s.Apply(ins)
		if err := s.Flush(context.Background()); err != nil {
			t.Error(err)
		}
	}
	for r := range rounds / 2 {
		write(a, r)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for r := rounds / 2; r < rounds; r++ {
			write(b, r)
		}
	})
	testutil.WaitFor(t, 10*time.Second, "a folded its own writes", func() bool { a.mu.RLock(); defer a.mu.RUnlock(); return a.applied > 0 })
	if _, err := a.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := a.Compact(context.Background()); err != nil { // a second one, after b's writes
		t.Fatal(err)
	}
	info, err := a.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs >= uint64(rounds) {
		t.Errorf("the log still holds %d messages after compaction (%d flushes)", info.State.Msgs, rounds)
	}
	c := open(t, n.URL())
	for k := range keys {
		sku := fmt.Sprint("S", k)
		for name, s := range map[string]*Store{"a": a, "b": b, "new": c} {
			testutil.WaitFor(t, 10*time.Second, name+" holds the last window of "+sku, func() bool {
				r, ok := s.Get("units", sku)
				return ok && r.Value.Value == rounds-1
			})
		}
	}
	if a.Stats.Snapshots.Load() != 2 {
		t.Errorf("%d snapshots, want 2", a.Stats.Snapshots.Load())
	}
}

// Two sources of one key closing a window at the same instant: every replica keeps the same value
// (the later agents' stream message), whichever order its writes came in.
func TestSameWindowTieBreak(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	a.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 10, "sku", "X"), 7)})
	b.Apply([]Input{in(feat("line2.pack.parts", "units", t0, 20, "sku", "X"), 3)})
	for _, s := range []*Store{b, a} {
		if err := s.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c := open(t, n.URL())
	for name, s := range map[string]*Store{"a": a, "b": b, "new": c} {
		testutil.WaitFor(t, 10*time.Second, name+" keeps the later message", func() bool {
			r, ok := s.Get("units", "X")
			return ok && r.Value.Value == 10 && r.Lineage.FirstSeq == 7
		})
	}
}

// A log message that does not decode is skipped, counted and logged with its subject and
// sequence; the values around it load.
func TestUnreadableLogEntry(t *testing.T) {
	n := natstest.JetStream(t)
	s := open(t, n.URL())
	s.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 1, "sku", "A"), 1)})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	nc, _ := natstest.Connect(t, n.URL())
	if err := nc.Publish(s.subj+"d", []byte("{not json\n")); err != nil {
		t.Fatal(err)
	}
	s.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 2, "sku", "B"), 2)})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := open(t, n.URL())
	if _, ok := c.Get("units", "A"); !ok {
		t.Error("A lost")
	}
	if _, ok := c.Get("units", "B"); !ok {
		t.Error("B lost")
	}
	if c.Stats.Unreadable.Load() != 1 {
		t.Errorf("%d unreadable, want 1", c.Stats.Unreadable.Load())
	}
}

// A flush larger than one log message is split over several, each value in exactly one, and another
// replica reads all of them.
func TestFlushSplitsLargeWrites(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	const keys = 4000 // ~350 bytes each: about two messages of maxMessage
	var ins []Input
	for k := range keys {
		ins = append(ins, in(feat("line1.pack.parts", "units", t0, float64(k), "sku", fmt.Sprint("S", k)), uint64(k+1)))
	}
	a.Apply(ins)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := a.Stats.Messages.Load(); m < 2 {
		t.Fatalf("%d log messages for %d values: want the flush split", m, keys)
	}
	if w, d := a.Stats.Writes.Load(), a.Stats.Dropped.Load(); w != keys || d != 0 {
		t.Fatalf("%d written, %d dropped: want %d and 0", w, d, keys)
	}
	info, err := a.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > uint64(info.State.Msgs)*(maxMessage+1024) {
		t.Errorf("%d bytes in %d messages: a message over %d bytes", info.State.Bytes, info.State.Msgs, maxMessage)
	}
	testutil.WaitFor(t, 10*time.Second, "b read every stored value", func() bool {
		for k := range keys {
			r, ok := b.Get("units", fmt.Sprint("S", k))
			if !ok || r.Value.Value != float64(k) {
				return false
			}
		}
		return true
	})
}

// A message in a format this version cannot read (written by a newer replica during a rolling
// upgrade) is skipped here, but its values are not in this replica's snapshot: compaction must not
// purge it, or a replica that can read it loses them.
func TestCompactKeepsFutureFormat(t *testing.T) {
	n := natstest.JetStream(t)
	a := open(t, n.URL())
	a.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 1, "sku", "A"), 1)})
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	plain, _ := encodeValue(&Value{Name: "units", Key: "P", Value: 7, WindowStart: t0, WindowEnd: t0, Lineage: Lineage{Agent: "gw1", StreamSeq: 9000}})
	m := nats.NewMsg(a.subj + "d")
	m.Data = append(plain, '\n')
	m.Header.Set(encodingHeader, "zstd")
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	a.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 2, "sku", "B"), 2)})
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a skipped the future message", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return a.applied > ack.Sequence && a.Stats.Unreadable.Load() == 1
	})
	if _, err := a.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "F")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetMsg(ctx, ack.Sequence); err != nil {
		t.Errorf("the message this version cannot read is gone after its compaction: %v", err)
	}
	if _, err := st.GetMsg(ctx, 1); err == nil {
		t.Error("the messages before it were not compacted")
	}
	// Nothing more can be purged until it is: a second compaction writes no snapshot.
	before, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.Msgs != before.State.Msgs || a.Stats.Snapshots.Load() != 1 {
		t.Errorf("a compaction that can purge nothing: %d messages then %d, %d snapshots", before.State.Msgs, after.State.Msgs, a.Stats.Snapshots.Load())
	}
	c := open(t, n.URL())
	for _, k := range []string{"A", "B"} {
		if _, ok := c.Get("units", k); !ok {
			t.Errorf("%s lost", k)
		}
	}
}

// A replica opening on a log whose last message is gone (deleted by an operator, or expired since
// the stream's info) is ready once it has read what the log holds: it waited for the last
// sequence the info named, which never came, and Open hung until its context ended.
func TestOpenWhenTheLastLogMessageIsGone(t *testing.T) {
	n := natstest.JetStream(t)
	s := open(t, n.URL())
	for i, sku := range []string{"A", "B"} {
		s.Apply([]Input{in(feat("line1.pack.parts", "units", t0, float64(i+1), "sku", sku), uint64(i+1))})
		if err := s.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.stream.DeleteMsg(ctx, info.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, n.URL())
	c, err := Open(ctx, js, Config{Bucket: "F", Definitions: defs}, testPlant, nil)
	if err != nil {
		t.Fatalf("a replica opening on a log without its last message: %v", err)
	}
	defer c.Close()
	if _, ok := c.Get("units", "A"); !ok {
		t.Error("A, on the log, not read")
	}
}
