package uplink

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// forwardAll appends n sample chunks (values from..from+n*10) to a store in dir, forwards them with a
// fresh uplink until the buffer has acked them all, and closes both. It returns the incarnation.
func forwardAll(t *testing.T, dir, url string, from, n int) string {
	t.Helper()
	cfg := buffer.DefaultConfig()
	cfg.Dir = dir
	st, err := buffer.Open(cfg, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range n {
		if _, err := st.Append(context.Background(), signal.StreamSamples, sampleChunk(from+i*10, 10, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	id := testID
	id.Incarnation = "" // taken from the store
	u, err := New(testConfig(url), id, st, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	testutil.WaitFor(t, 20*time.Second, "buffer acked", func() bool {
		return st.Stats().Streams[signal.StreamSamples].Acked == uint64(n)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := u.m.collisions.Load(); c != 0 {
		t.Errorf("%d id collisions reported", c)
	}
	return st.Incarnation()
}

// TestResetBufferIsNotDeduplicated: a buffer that starts empty (lost, reset, moved aside) restarts
// its sequences at 1; its messages must still reach the stream instead of being dropped as
// duplicates of the previous buffer's messages (issue 12, point 1: 0 of 200 arrived).
func TestResetBufferIsNotDeduplicated(t *testing.T) {
	s := natstest.JetStream(t)
	dir := t.TempDir() + "/buf"
	first := forwardAll(t, dir, s.URL(), 0, 20)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	second := forwardAll(t, dir, s.URL(), 200, 20)
	if first == second || first == "" || second == "" {
		t.Fatalf("incarnations %q and %q: a new store must start a new one", first, second)
	}
	_, js := natstest.Connect(t, s.URL())
	c := readStream(t, js, "GEMBA")
	if c.msgs != 40 {
		t.Fatalf("stream holds %d messages, want 40 (20 per buffer life)", c.msgs)
	}
	for v := range int64(400) {
		if c.values[v] != 1 {
			t.Fatalf("sample %d stored %d times", v, c.values[v])
		}
	}
	incs := map[string]int{}
	for id, k := range c.ids {
		if k != 1 {
			t.Errorf("message id %s stored %d times", id, k)
		}
		incs[strings.Split(id, ":")[2]]++
	}
	if incs[first] != 20 || incs[second] != 20 {
		t.Errorf("messages per incarnation %v, want 20 for %s and %s", incs, first, second)
	}
}

// TestIDCollisionIsAnError: a PubAck that says "duplicate" for an id this incarnation never sent
// means JetStream dropped new data. It is counted, logged and shown in Health, never a silent success.
func TestIDCollisionIsAnError(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	r := startUplink(t, testConfig(s.URL()), src, Options{})
	testutil.WaitFor(t, 10*time.Second, "ready", func() bool { ok, _ := r.u.Health().Ready(); return ok })

	// Someone else publishes under the ids of sequences 1..3 before the agent has them.
	_, js := natstest.Connect(t, s.URL())
	for seq := uint64(1); seq <= 3; seq++ {
		m := nats.NewMsg("gemba.plant1.gw1.samples")
		h := signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "plant1", Incarnation: "inc1",
			Stream: signal.StreamSamples, FirstSeq: seq, LastSeq: seq}
		m.Data = signal.AppendEnvelope(nil, &h, []byte("[]"))
		m.Header.Set(jetstream.MsgIDHeader, signal.MsgID("gw1", signal.StreamSamples, "inc1", seq))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, time.Now()))
	}
	testutil.WaitFor(t, 10*time.Second, "all acked", func() bool { return src.Acked(signal.StreamSamples) == 5 })
	if c := r.u.m.collisions.Load(); c != 3 {
		t.Errorf("collisions %d, want 3", c)
	}
	if ok, why := r.u.Health().Ready(); ok || !strings.Contains(why, "never sent") {
		t.Errorf("ready %v (%q): a collision must show in /readyz", ok, why)
	}
}
