package uplink

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestCorruptRecordLastIsAcked: an unforwardable record with nothing after it (an idle stream, a
// buffer left by a newer release) is skipped and acked: the buffer must not keep it until the next
// record's PubAck, where it ages into a max_age drop the heartbeat would report as lost data.
func TestCorruptRecordLastIsAcked(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	startUplink(t, testConfig(s.URL()), src, Options{})
	testutil.WaitFor(t, 10*time.Second, "first record acked", func() bool { return src.Acked(signal.StreamSamples) == 1 })
	src.Append(signal.StreamSamples, []byte("garbage"))
	testutil.WaitFor(t, 10*time.Second, "the corrupt record acked", func() bool { return src.Acked(signal.StreamSamples) == 2 })
	src.check(t)
}

// TestHeartbeatConfigVersionAfterReload: the envelope's config_version is the config in force
// when the record was made; for a heartbeat that is the status's, which a reload changes while
// the uplink keeps running.
func TestHeartbeatConfigVersionAfterReload(t *testing.T) {
	s := natstest.JetStream(t)
	nc, _ := natstest.Connect(t, s.URL())
	sub, err := nc.SubscribeSync("gemba.plant1.gw1.status")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(s.URL())
	cfg.Heartbeat = 50 * time.Millisecond
	status := func() signal.Status { // testID was started with cv1; the agent reloaded to cv2
		return signal.Status{Agent: "gw1", Site: "plant1", Version: "1.2.3", ConfigVersion: "cv2"}
	}
	startUplink(t, cfg, newMemSource(), Options{Status: status})
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := signal.DecodeBatch(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if b.ConfigVersion != "cv2" || b.Status[0].ConfigVersion != "cv2" {
		t.Fatalf("heartbeat envelope config_version %q, status %q; want cv2 for both", b.ConfigVersion, b.Status[0].ConfigVersion)
	}
}

// TestVerifyStreamWithoutStatusSubject: a hub-made stream that captures samples and features but
// not status. Data flows, but the hub (which reads heartbeats from that stream) never sees the
// agent: /readyz must say so, and stop saying it once the subject is added.
func TestVerifyStreamWithoutStatusSubject(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	sc := jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features"}}
	if _, err := js.CreateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	cfg := testConfig(s.URL())
	cfg.NATS.CreateStream = false
	cfg.Heartbeat = 50 * time.Millisecond
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 10*time.Second, "data forwarded", func() bool { return src.Acked(signal.StreamSamples) == 1 })
	if ok, why := r.u.Health().Ready(); ok || !strings.Contains(why, "gemba.plant1.gw1.status") {
		t.Fatalf("ready %v (%q) although no heartbeat reaches the stream", ok, why)
	}
	sc.Subjects = append(sc.Subjects, "gemba.*.*.status")
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "ready once the stream captures status", func() bool {
		ok, _ := r.u.Health().Ready()
		return ok
	})
}

// TestRewindDuringCatchUpKeepsLiveAcks: live data is sent before a replayed backlog; when a
// publish then fails (the stream is full) the lane re-sends from the floor, which the backlog
// holds down. Live messages JetStream already acknowledged must not be sent again: beyond the
// duplicate window (a catch-up can take hours) each would be stored twice, and the wire format
// promises that a copy is only ever a re-send of a record not yet seen acknowledged.
func TestRewindDuringCatchUpKeepsLiveAcks(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	src := newMemSource()
	old := time.Now().Add(-time.Hour)
	const backlog, live = 200, 40
	for i := range backlog {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, old))
	}
	var once sync.Once
	src.onRead = func(n int) {
		if n == 2 { // live data appears once the replay has started
			once.Do(func() {
				for i := range live {
					src.Append(signal.StreamSamples, sampleChunk((backlog+i)*10, 10, time.Now()))
				}
			})
		}
	}
	cfg := testConfig(s.URL())
	cfg.ReadBatch, cfg.MaxInflight = 4, 8
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.>"},
		MaxMsgs: 100, Discard: jetstream.DiscardNew, Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	cfg.NATS.CreateStream = false
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 15*time.Second, "stream full", func() bool {
		_, why := r.u.Health().Ready()
		return strings.Contains(why, "refuses messages")
	})
	liveStored := 0
	for seq := range readStream(t, js, "GEMBA").seqs {
		if seq > backlog {
			liveStored++
		}
	}
	if liveStored == 0 {
		t.Fatal("no live message stored before the stream filled")
	}
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.MaxMsgs = -1
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "everything acked", func() bool { return src.Acked(signal.StreamSamples) == backlog+live })
	if d := r.u.Health().Duplicates; d != 0 {
		t.Errorf("%d acknowledged messages sent again (%d live ones were stored before the failure)", d, liveStored)
	}
	readStream(t, js, "GEMBA").exactlyOnce(t, (backlog+live)*10)
	src.check(t)
}

// TestStuckUplinkHasAMetric: connected to NATS but unable to forward (another stream captures the
// subjects): nothing is published, so no error counter moves and gemba_uplink_connected is 1. A
// gauge must say the uplink is not forwarding, for as long as /readyz does.
func TestStuckUplinkHasAMetric(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"gemba.>"}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(s.URL())
	cfg.NATS.CreateStream = false
	reg := prometheus.NewRegistry()
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	r := startUplink(t, cfg, src, Options{Metrics: reg})
	testutil.WaitFor(t, 10*time.Second, "not-ready reason", func() bool {
		_, why := r.u.Health().Ready()
		return strings.Contains(why, "captured by stream OTHER")
	})
	if v := testutil.Metric(t, reg, "gemba_uplink_ready"); v != 0 {
		t.Fatalf("gemba_uplink_ready %v while nothing can be forwarded", v)
	}
	if err := js.DeleteStream(ctx, "OTHER"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.>"}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "forwarded", func() bool { return src.Acked(signal.StreamSamples) == 1 })
	testutil.WaitFor(t, 10*time.Second, "gemba_uplink_ready 1", func() bool { return testutil.Metric(t, reg, "gemba_uplink_ready") == 1 })
}

// TestCatchUpDoesNotHoldAckedLiveMessages: while a backlog is replayed next to live data, the
// live messages JetStream acknowledged must not pile up in memory until the backlog is done (a
// slow link can take hours to catch up). Here live data keeps coming and the backlog's share is
// tiny, so the replay never advances until the test lets it.
func TestCatchUpDoesNotHoldAckedLiveMessages(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	old := time.Now().Add(-time.Hour)
	const backlog, live = 50, 300
	for i := range backlog {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, old))
	}
	release := make(chan struct{})
	src.onRead = func(n int) {
		switch {
		case n >= 2 && n < 2+live: // one more live record per read: live data is always pending
			src.Append(signal.StreamSamples, sampleChunk((backlog+n-2)*10, 10, time.Now()))
		case n == 2+live:
			<-release
		}
	}
	cfg := testConfig(s.URL())
	cfg.ReadBatch, cfg.MaxInflight, cfg.BackfillShare = 1, 8, 1e-6
	r := startUplink(t, cfg, src, Options{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the uplink is stopped
	testutil.WaitFor(t, 20*time.Second, "live data acknowledged", func() bool { return r.u.Health().Acked >= live })
	l := r.u.lanes[0]
	l.mu.Lock()
	held, split := len(l.live), l.split
	l.mu.Unlock()
	unblock()
	if !split {
		t.Fatal("the backlog was not replayed next to live data")
	}
	if bound := cfg.MaxInflight + cfg.ReadBatch; held > bound {
		t.Errorf("%d live messages held during catch-up, want at most %d (in flight or read)", held, bound)
	}
	testutil.WaitFor(t, 20*time.Second, "everything acked", func() bool { return src.Acked(signal.StreamSamples) == backlog+live })
	_, js := natstest.Connect(t, s.URL())
	readStream(t, js, "GEMBA").exactlyOnce(t, (backlog+live)*10)
	src.check(t)
}
