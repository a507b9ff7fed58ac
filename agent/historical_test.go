package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// Issue 18 point 7: "historical" means sent late relative to when the agent captured the records,
// not "the value is old". Both cases of docs/wire-format.md ("Historical and delay") run through
// the real writer, the real uplink and NATS JetStream.

// historicalConfig is an agent with the real uplink on natsURL and one sequence collector.
func historicalConfig(natsURL, key, after string) string {
	return fmt.Sprintf(`
agent: {id: gw-hist, site: plant1, shutdown_timeout: 5s, linger: 1ms}
http: {listen: "127.0.0.1:0"}
buffer: {dir: /nonexistent/memory-buffer, max_bytes: 64MiB}
uplink: {historical_after: %s, nats: {servers: [%s], create_stream: true, reconnect_wait: 50ms, reconnect_max_wait: 200ms}}
collectors:
  - {name: plc, type: sequence, key: %s}
`, after, natsURL, key)
}

// startWithRealUplink is start with the NATS uplink instead of the fake (the memory buffer stays).
func startWithRealUplink(t *testing.T, yml string) *harness {
	t.Helper()
	return startWith(t, yml, func(o *Options) { o.NewUplink = nil })
}

// streamSamples reads every samples batch of gw-hist from the GEMBA stream at url.
func streamSamples(t *testing.T, url string) []*signal.Batch {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		return nil // not created yet
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"gemba.plant1.gw-hist.samples"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*signal.Batch
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			b, err := signal.DecodeBatch(m.Data())
			if err != nil {
				t.Fatalf("stream message: %v", err)
			}
			out = append(out, b)
		}
		if n == 0 {
			return out
		}
	}
}

// TestFreshSnapshotOfOldValueIsNotHistorical: what an OPC UA subscription sends first after a
// start, a value unchanged for 100 s with its 100 s old source timestamp, is forwarded at once and
// is live data: historical false, delay_ms 0, while newest keeps the old source time.
func TestFreshSnapshotOfOldValueIsNotHistorical(t *testing.T) {
	ns := startNATS(t)
	old := time.Now().UTC().Add(-100 * time.Second).Truncate(time.Millisecond)
	done := registerSeq("hist-snapshot", []signal.Sample{
		{Signal: "press.temp", Time: old, Value: signal.Float(71.25), Source: "plc:ns=2;s=Temp"},
	})
	startWithRealUplink(t, historicalConfig(ns.ClientURL(), "hist-snapshot", "30s"))
	<-done
	var got []*signal.Batch
	testutil.WaitFor(t, 20*time.Second, "the snapshot in JetStream", func() bool {
		got = streamSamples(t, ns.ClientURL())
		return len(got) > 0
	})
	b := got[0]
	if len(got) != 1 || len(b.Samples) != 1 || !b.Samples[0].Time.Equal(old) {
		t.Fatalf("stream holds %d batches, first %+v", len(got), b)
	}
	if b.Historical || b.Delay != 0 {
		t.Errorf("a fresh snapshot of an old value is marked historical=%v delay=%s", b.Historical, b.Delay)
	}
	// The rule this replaces (sent − newest > historical_after) would have marked it: the test
	// tells the two apart.
	if !b.Newest.Equal(old) || b.Sent.Sub(b.Newest) <= 30*time.Second {
		t.Errorf("newest %v, sent %v: newest must stay the old source time", b.Newest, b.Sent)
	}
}

// TestBacklogReplayedAfterOutageIsHistorical: samples captured while NATS is down wait in the
// buffer; replayed once it is back, more than historical_after after capture, they are historical
// with delay_ms at least that long, though their source times were fresh when captured.
func TestBacklogReplayedAfterOutageIsHistorical(t *testing.T) {
	port := testutil.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	const after = 300 * time.Millisecond
	captured := time.Now().UTC().Truncate(time.Millisecond)
	done := registerSeq("hist-outage", []signal.Sample{
		{Signal: "press.temp", Time: captured, Value: signal.Float(70), Source: "plc:ns=2;s=Temp"},
	})
	h := startWithRealUplink(t, historicalConfig(url, "hist-outage", after.String()))
	<-done // Emit returned: the sample is in the buffer, NATS is not there
	if ok, _ := h.agent.up.Ready(); ok {
		t.Fatal("uplink ready without a NATS server")
	}
	// Let more than historical_after pass since capture before NATS comes up.
	testutil.WaitFor(t, 10*time.Second, "historical_after passed", func() bool { return time.Since(captured) > 2*after })
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { h.stop(t); s.Shutdown(); s.WaitForShutdown() })
	var got []*signal.Batch
	testutil.WaitFor(t, 30*time.Second, "the backlog in JetStream", func() bool {
		got = streamSamples(t, url)
		return len(got) > 0
	})
	b := got[0]
	if len(got) != 1 || len(b.Samples) != 1 {
		t.Fatalf("stream holds %d batches, first %+v", len(got), b)
	}
	if !b.Historical || b.Delay < 2*after || b.Delay > b.Sent.Sub(captured)+time.Millisecond {
		t.Errorf("backlog replayed after the outage: historical=%v delay=%s (sent %s after capture)",
			b.Historical, b.Delay, b.Sent.Sub(captured))
	}
}
