package commerce

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/internal/testutil"
)

// restartOn starts a server on port with store dir (JetStream on or off), stopped at cleanup.
func restartOn(t *testing.T, port int, dir string, jetStream bool) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: jetStream, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// TestConsumerBindRetried: JetStream does not answer when the consumer starts (a server back up
// but still recovering its streams, a cluster electing its leader). Run keeps trying to create the
// durable consumer instead of giving up until the hub is restarted; once JetStream answers, the
// events are applied.
func TestConsumerBindRetried(t *testing.T) {
	s := startServer(t)
	port := s.Addr().(*net.TCPAddr).Port
	dir := s.JetStreamConfig().StoreDir
	js := connect(t, s)
	ctx := context.Background()
	if _, err := EnsureStream(ctx, js, testConfig()); err != nil {
		t.Fatal(err)
	}
	markers, err := dedup.Open(ctx, js, dedup.Config{Bucket: "GEMBA_DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	c, err := NewConsumer(js, ConsumerOptions{Config: testConfig(), Markers: markers, Sink: sink, Log: quietLog(),
		FetchWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	s.WaitForShutdown()
	// Back on the same port, JetStream not (yet) there: its API has no responders.
	s2 := restartOn(t, port, dir, false)
	testutil.WaitFor(t, 20*time.Second, "reconnected", func() bool { return js.Conn().IsConnected() })
	in := func() int64 { v, _ := s2.Varz(nil); return v.InMsgs }
	sent := in()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	}()
	testutil.WaitFor(t, 20*time.Second, "the consumer's create request sent", func() bool { return in() > sent })
	s2.Shutdown()
	s2.WaitForShutdown()
	restartOn(t, port, dir, true)
	testutil.WaitFor(t, 20*time.Second, "publishing after JetStream is back", func() bool {
		pub, _ := NewPublisher(js, testConfig())
		return pub.Publish(ctx, []Event{sale("B-1", 1)})[0].Err == nil
	})
	testutil.WaitFor(t, 20*time.Second, "the event applied", func() bool { return sink.count("sale:B-1:1") == 1 })
}

// TestBindStream: BindStream binds the stream the hub made, whether it lists its channels or takes
// every commerce subject, and changes nothing; a missing stream, or one that does not take a subject
// the caller publishes to, is an error naming it.
func TestBindStream(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := context.Background()
	cfg := testConfig()
	if _, err := BindStream(ctx, js, cfg); err == nil || !strings.Contains(err.Error(), cfg.Stream+": not found") {
		t.Fatalf("no stream: %v", err)
	}
	for _, channels := range [][]string{{"web"}, nil} {
		cfg.Channels = channels
		st, err := EnsureStream(ctx, js, cfg)
		if err != nil {
			t.Fatal(err)
		}
		before := st.CachedInfo().Config
		st, err = BindStream(ctx, js, cfg, InventorySubject(cfg.Prefix), SalesSubject(cfg.Prefix, "web"))
		if err != nil {
			t.Fatalf("channels %v: %v", channels, err)
		}
		if got := st.CachedInfo().Config; !reflect.DeepEqual(got, before) {
			t.Errorf("channels %v: config changed: %+v, was %+v", channels, got, before)
		}
	}
	if _, err := BindStream(ctx, js, cfg, "shop.commerce.inventory"); err == nil ||
		!strings.Contains(err.Error(), "does not take shop.commerce.inventory") {
		t.Errorf("a subject the stream does not take: %v", err)
	}
}
