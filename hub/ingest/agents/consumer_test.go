package agents

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type plant struct{}

func (plant) Place(sig string) (string, string, string, bool) {
	if len(sig) > 6 && sig[:6] == "line1." {
		return "pack1", "line1", "plant1", true
	}
	return "", "", "", false
}

var defs = features.Definitions{
	{Name: "units", Signal: "*.pack.parts", Feature: "units", Key: features.BySKU, MaxAge: time.Hour},
	{Name: "availability", Signal: "*.pack.state", Feature: "availability", Key: features.ByLine, MaxAge: time.Hour},
}

// hub is one replica's ingest on a connection of its own.
type hub struct {
	nc    *nats.Conn
	feats *features.Store
	inv   *inventory.Store
	fleet *fleet.Fleet
	c     *Consumer
	m     *Metrics
	stop  context.CancelFunc
	done  chan error
}

func startHub(t *testing.T, url string) *hub {
	t.Helper()
	nc, js := natstest.Connect(t, url)
	ctx := context.Background()
	h := &hub{nc: nc, m: NewMetrics(), done: make(chan error, 1)}
	var err error
	if h.feats, err = features.Open(ctx, js, features.Config{Bucket: "F", Definitions: defs}, plant{}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.feats.Close)
	icfg := inventory.DefaultConfig()
	icfg.Now = func() time.Time { return t0.Add(time.Hour) }
	if h.inv, err = inventory.Open(ctx, js, icfg, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.inv.Close() })
	if h.fleet, err = fleet.Open(ctx, js, "FLEET", 1, time.Minute, 0, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.fleet.Close)
	dd, err := dedup.Open(ctx, js, dedup.Config{Bucket: "DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Batch = 64
	cfg.AckWait = 2 * time.Second
	cfg.Production = []Production{{Signal: "*.pack.parts", Feature: "units"}}
	h.c, err = New(cfg, Deps{JS: js, Prefix: "gemba", Dedup: dd, Features: h.feats, Stock: h.inv, Fleet: h.fleet,
		Placer: plant{}, Metrics: h.m}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	h.stop = cancel
	go func() { h.done <- h.c.Run(rctx) }()
	t.Cleanup(h.halt)
	return h
}

func (h *hub) halt() {
	if h.stop != nil {
		h.stop()
		<-h.done
		h.stop = nil
	}
}

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func stream(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "GEMBA",
		Subjects: []string{"gemba.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

// publish sends one features message as an agent would, under msgID (empty: the real id).
func publish(t *testing.T, js jetstream.JetStream, seq uint64, historical bool, msgID string, fs ...signal.Feature) {
	t.Helper()
	b := &signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "plant1", Incarnation: "aa01",
		Stream: signal.StreamFeatures, ConfigVersion: "cv", FirstSeq: seq, LastSeq: seq, Count: len(fs), Historical: historical,
		Sent: time.Now()}, Features: fs}
	m := nats.NewMsg("gemba.plant1.gw1.features")
	m.Data = signal.AppendBatch(nil, b)
	if msgID == "" {
		msgID = b.MsgID()
	}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func units(sku string, w int, n float64) signal.Feature {
	end := t0.Add(time.Duration(w) * 10 * time.Second)
	return signal.Feature{Signal: "line1.pack.parts", Name: "units", WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
		Value: n, Count: 5, Labels: signal.Labels{{Key: "sku", Value: sku}}}
}

func TestIngest(t *testing.T) {
	start := time.Now()
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	h := startHub(t, n.URL()) // starts before the stream exists: waits for it
	testutil.WaitFor(t, 5*time.Second, "waiting reason", func() bool {
		_, why := h.c.Ready()
		return why != "" && why != "not started"
	})
	stream(t, js)
	testutil.WaitFor(t, 10*time.Second, "bound", func() bool { ok, _ := h.c.Ready(); return ok })

	publish(t, js, 1, false, "", units("SKU-1", 1, 7), units("SKU-2", 1, 3),
		signal.Feature{Signal: "line1.pack.state", Name: "availability", WindowStart: t0, WindowEnd: t0.Add(10 * time.Second), Value: 0.9})
	publish(t, js, 2, true, "", units("SKU-1", 2, 5)) // historical: state still counts it
	// The same message again under another JetStream id (as after the duplicate window): dropped.
	publish(t, js, 2, true, "gw1:features:aa01:2:copy", units("SKU-1", 2, 5))
	// Garbage: terminated and counted, the consumer goes on.
	if _, err := js.Publish(context.Background(), "gemba.plant1.gw1.features", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	// An envelope on another agent's subject is refused too.
	b := signal.AppendBatch(nil, &signal.Batch{Header: signal.Header{Schema: 2, Agent: "gw9", Site: "plant1", Incarnation: "x",
		Stream: signal.StreamFeatures}})
	if _, err := js.Publish(context.Background(), "gemba.plant1.gw1.features", b); err != nil {
		t.Fatal(err)
	}
	publish(t, js, 3, false, "", units("SKU-1", 3, 1))
	// A heartbeat.
	st := signal.AppendBatch(nil, &signal.Batch{Header: signal.Header{Schema: 2, Agent: "gw1", Site: "plant1", Incarnation: "aa01",
		Stream: signal.StreamStatus, FirstSeq: 1, LastSeq: 1, Count: 1}, Status: []signal.Status{{Time: time.Now(), Agent: "gw1",
		Site: "plant1", Version: "v1", Buffer: map[string]signal.BufferState{"samples": {Records: 42}}}}})
	if _, err := js.Publish(context.Background(), "gemba.plant1.gw1.status", st); err != nil {
		t.Fatal(err)
	}

	testutil.WaitFor(t, 10*time.Second, "SKU-1 units = 13 produced", func() bool {
		p, ok := h.inv.Get("SKU-1", "plant1")
		return ok && p.Produced == 13
	})
	if p, _ := h.inv.Get("SKU-2", "plant1"); p.Produced != 3 {
		t.Errorf("SKU-2 produced %v, want 3", p.Produced)
	}
	r, ok := h.feats.Get("units", "SKU-1")
	if !ok || r.Value.Value != 1 || r.Lineage.FirstSeq != 3 || r.Lineage.Incarnation != "aa01" || r.Historical {
		t.Errorf("units SKU-1 = %+v", r)
	}
	if r, ok := h.feats.Get("availability", "line1"); !ok || r.Value.Value != 0.9 {
		t.Errorf("availability line1 = %+v %v", r, ok)
	}
	testutil.WaitFor(t, 10*time.Second, "heartbeat", func() bool {
		a, ok := h.fleet.Get("plant1", "gw1")
		return ok && a.BufferRecords == 42 && a.Incarnation == "aa01"
	})
	if d := count(h.m.duplicates); d != 1 {
		t.Errorf("duplicates %v, want 1", d)
	}
	if m := count(h.m.malformed); m != 2 {
		t.Errorf("malformed %v, want 2", m)
	}
	if hi := count(h.m.historical); hi != 1 {
		t.Errorf("historical %v, want 1", hi)
	}

	// Nothing is left pending: the malformed messages were terminated, not left for redelivery.
	cons, err := js.Consumer(context.Background(), "GEMBA", "gemba-hub")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "all settled", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	// Both latencies, from the agent's send and from the server's store, once per fresh message
	// (seq 1, 2 and 3: not the copy, the garbage or the heartbeat), none negative, none beyond the test.
	for name, hist := range map[string]prometheus.Histogram{"from the send": h.m.latency, "from the store": h.m.stored} {
		testutil.WaitFor(t, 10*time.Second, "3 latencies "+name, func() bool { n, _ := observed(hist); return n >= 3 })
		if n, sum := observed(hist); n != 3 || sum < 0 || sum > time.Since(start).Seconds()*3 {
			t.Errorf("ingest latency %s: %d observations summing to %vs, want 3 within the test's %v", name, n, sum, time.Since(start))
		}
	}
}

// TestReplicasShareTheConsumer: two replicas on one durable consumer, one stopped abruptly (its
// connection dropped mid-load, as a SIGKILL would): every produced unit is counted exactly once.
func TestReplicasShareTheConsumer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	a, b := startHub(t, n.URL()), startHub(t, n.URL())
	const msgs = 400
	want := map[string]float64{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range msgs {
			sku := fmt.Sprint("SKU-", i%7)
			q := float64(1 + i%5)
			want[sku] += q
			publish(t, js, uint64(i+1), false, "", units(sku, i, q))
			if i == msgs/3 {
				a.nc.Close() // the replica dies: what it took and did not ack comes back to b
			}
		}
	})
	wg.Wait()
	for sku, q := range want {
		testutil.WaitFor(t, 30*time.Second, "produced "+sku, func() bool {
			p, ok := b.inv.Get(sku, "plant1")
			return ok && p.Produced == q
		})
	}
	// And nothing more arrives later (no double count after redeliveries settle).
	cons, _ := js.Consumer(context.Background(), "GEMBA", "gemba-hub")
	testutil.WaitFor(t, 30*time.Second, "all settled", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	for sku, q := range want {
		if p, _ := b.inv.Get(sku, "plant1"); p.Produced != q {
			t.Errorf("%s produced %v, want %v", sku, p.Produced, q)
		}
	}
}

// TestRecreatedConsumer: the durable consumer is deleted and a replica re-creates it, so the whole
// stream is delivered again: the done markers make every message a duplicate; nothing is counted twice.
func TestRecreatedConsumer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	h := startHub(t, n.URL())
	for i := range 20 {
		publish(t, js, uint64(i+1), false, "", units("SKU-1", i, 2))
	}
	testutil.WaitFor(t, 10*time.Second, "40 produced", func() bool {
		p, ok := h.inv.Get("SKU-1", "plant1")
		return ok && p.Produced == 40
	})
	cons, _ := js.Consumer(context.Background(), "GEMBA", "gemba-hub")
	testutil.WaitFor(t, 10*time.Second, "settled", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	h.halt()
	if err := js.DeleteConsumer(context.Background(), "GEMBA", "gemba-hub"); err != nil {
		t.Fatal(err)
	}
	h2 := startHub(t, n.URL())
	testutil.WaitFor(t, 10*time.Second, "20 replayed messages seen as duplicates", func() bool { return count(h2.m.duplicates) == 20 })
	if p, _ := h2.inv.Get("SKU-1", "plant1"); p.Produced != 40 {
		t.Fatalf("after replay: produced %v, want 40", p.Produced)
	}
}

// slowFeatures delays the first flush past the ack deadline.
type slowFeatures struct {
	*features.Store
	once sync.Once
	hold time.Duration
}

func (s *slowFeatures) Flush(ctx context.Context) error {
	s.once.Do(func() { time.Sleep(s.hold) }) // the slow state write under test, not synchronisation
	return s.Store.Flush(ctx)
}

// TestSlowBatchKeepsItsMessages: a batch whose state write takes longer than ack_wait, with more
// messages waiting behind it: what the hub holds is not redelivered meanwhile (the deadlines are
// pushed back); only what the client library has pulled and not yet handed over (at most one pull,
// 2×batch) can be, and is then dropped as a duplicate.
func TestSlowBatchKeepsItsMessages(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	ctx := context.Background()
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: defs}, plant{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	dd, err := dedup.Open(ctx, js, dedup.Config{Bucket: "DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Batch, cfg.AckWait = 4, time.Second
	m := NewMetrics()
	c, err := New(cfg, Deps{JS: js, Prefix: "gemba", Dedup: dd, Features: &slowFeatures{Store: fs, hold: 3 * time.Second},
		Placer: plant{}, Metrics: m}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		publish(t, js, uint64(i+1), false, "", units("SKU-1", i, 1))
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	cons, _ := js.Consumer(ctx, "GEMBA", "gemba-hub")
	testutil.WaitFor(t, 30*time.Second, "all settled", func() bool {
		if cons == nil {
			cons, _ = js.Consumer(ctx, "GEMBA", "gemba-hub")
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Consumer >= 20
	})
	cancel()
	<-done
	r := count(m.redelivered)
	if r > float64(2*cfg.Batch) {
		t.Errorf("%v messages redelivered while the first batch was slow, want at most one pull (%d)", r, 2*cfg.Batch)
	}
	// Each message applied once: a second delivery of one (the redelivered copy, or the original if
	// the library hands the copy over first) is dropped as a duplicate.
	if got := count(m.records.WithLabelValues("features")); got != 20 {
		t.Errorf("%v records applied, want 20 (each once)", got)
	}
	if d := count(m.duplicates); d > r {
		t.Errorf("duplicates %v without as many redeliveries (%v)", d, r)
	}
}
