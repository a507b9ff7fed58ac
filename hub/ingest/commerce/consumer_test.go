package commerce

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/internal/testutil"
)

type consumerEnv struct {
	reg  *prometheus.Registry
	logs *logSink
	stop func() error
}

// runConsumer starts a Consumer on js with sink and stops it (checking Run returns promptly) at cleanup.
func runConsumer(t *testing.T, js jetstream.JetStream, sink Sink, mod func(*ConsumerOptions)) *consumerEnv {
	t.Helper()
	ctx := context.Background()
	markers, err := dedup.Open(ctx, js, dedup.Config{Bucket: "GEMBA_DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logSink{}
	o := ConsumerOptions{Config: testConfig(), Markers: markers, Sink: sink, Log: slog.New(slog.NewTextHandler(logs, nil)), Metrics: m,
		LogEvery: time.Hour}
	if mod != nil {
		mod(&o)
	}
	c, err := NewConsumer(js, o)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
			return nil
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return &consumerEnv{reg: reg, logs: logs, stop: stop}
}

func (e *consumerEnv) consumed(t *testing.T, outcome string) float64 {
	return testutil.Metric(t, e.reg, "gemba_commerce_events_consumed_total", "outcome", outcome)
}

// publishRaw stores data on subject with a Nats-Msg-Id of our choosing (to bypass JetStream's window).
func publishRaw(t *testing.T, js jetstream.JetStream, subject, msgID string, data []byte) uint64 {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func publishEvents(t *testing.T, js jetstream.JetStream, events ...Event) {
	t.Helper()
	pub, err := NewPublisher(js, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pub.Publish(context.Background(), events) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

func consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(context.Background(), "COMMERCE", testConfig().Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// settled waits until the consumer has nothing pending or unacknowledged.
func settled(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "every message settled", func() bool {
		info := consumerInfo(t, js)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
}

func TestConsumerDuplicatesBeyondWindow(t *testing.T) {
	js, _ := startJS(t)
	sink := newFakeSink()
	e := runConsumer(t, js, sink, nil)
	s1, s2, sn := sale("A-1", 1), sale("A-1", 2), snapshot("erp-1", "plant1", "SKU-1", 10)
	publishEvents(t, js, s1, s2, sn)
	testutil.WaitFor(t, 10*time.Second, "three events applied", func() bool { n, _ := sink.calls(); return n == 3 })
	// The same identities again under other Nats-Msg-Ids: JetStream stores them, the markers catch them.
	publishRaw(t, js, SalesSubject("gemba", "web"), "resent-1", mustEncode(t, s1))
	publishRaw(t, js, InventorySubject("gemba"), "", mustEncode(t, sn))
	publishEvents(t, js, sale("A-1", 3))
	testutil.WaitFor(t, 10*time.Second, "the new sale applied", func() bool { return sink.count("sale:A-1:3") == 1 })
	settled(t, js)
	if total, most := sink.calls(); total != 4 || most != 1 {
		t.Fatalf("sink calls %d (max %d per id), want 4 distinct", total, most)
	}
	if n := e.consumed(t, "duplicate"); n != 2 {
		t.Fatalf("duplicates counted %v, want 2", n)
	}
	if n := e.consumed(t, "applied"); n != 4 {
		t.Fatalf("applied counted %v, want 4", n)
	}
	sink.mu.Lock()
	order := strings.Join(sink.order, " ")
	sink.mu.Unlock()
	if order != "sale:A-1:1 sale:A-1:2 inv:erp-1:plant1:SKU-1 sale:A-1:3" {
		t.Fatalf("applied in order %s", order)
	}
}

func TestConsumerMalformed(t *testing.T) {
	js, _ := startJS(t)
	sink := newFakeSink()
	e := runConsumer(t, js, sink, nil)
	web := SalesSubject("gemba", "web")
	publishRaw(t, js, web, "m1", []byte(`{"schema":1`))
	publishRaw(t, js, web, "m2", []byte(with(goodSale, "quantity", "0")))
	publishRaw(t, js, SalesSubject("gemba", "retail"), "m3", []byte(goodSale)) // channel differs from the subject's
	publishRaw(t, js, InventorySubject("gemba"), "m4", []byte(goodSale))
	publishRaw(t, js, "gemba.commerce.returns", "m5", []byte(goodSale))
	publishEvents(t, js, sale("B-1", 1))
	testutil.WaitFor(t, 10*time.Second, "the good sale applied after the bad ones", func() bool { return sink.count("sale:B-1:1") == 1 })
	settled(t, js)
	if n := e.consumed(t, "malformed"); n != 5 {
		t.Fatalf("malformed counted %v, want 5", n)
	}
	info := consumerInfo(t, js)
	if info.NumRedelivered != 0 || info.AckFloor.Stream != 6 {
		t.Fatalf("consumer %+v: malformed messages must be terminated, not redelivered", info)
	}
	// Logged once per subject (the interval is an hour here), with the stream sequence.
	var lines []string
	for _, l := range e.logs.all() {
		if strings.Contains(l, "malformed") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 4 {
		t.Fatalf("%d malformed log lines, want 4 (one per subject): %v", len(lines), lines)
	}
	if !strings.Contains(lines[0], "stream_seq=1") || !strings.Contains(lines[0], "subject=gemba.commerce.sales.web") {
		t.Fatalf("log line lacks subject or sequence: %s", lines[0])
	}
	if !strings.Contains(lines[1], "stream_seq=3") || !strings.Contains(lines[1], `differs from the subject's channel`) {
		t.Fatalf("log line %s", lines[1])
	}
}

func TestConsumerSinkFailureRetried(t *testing.T) {
	js, _ := startJS(t)
	sink := newFakeSink()
	sink.failN = 3
	sink.reject["sale:R-1:1"] = true
	e := runConsumer(t, js, sink, nil)
	publishEvents(t, js, sale("R-1", 1), sale("A-1", 1), snapshot("s", "p", "k", 1))
	testutil.WaitFor(t, 10*time.Second, "both events applied despite sink failures", func() bool { n, _ := sink.calls(); return n == 2 })
	settled(t, js)
	if total, most := sink.calls(); total != 2 || most != 1 {
		t.Fatalf("sink calls %d (max %d per id)", total, most)
	}
	if n := e.consumed(t, "sink_error"); n != 3 {
		t.Fatalf("sink errors counted %v, want 3", n)
	}
	if n := e.consumed(t, "rejected"); n != 1 {
		t.Fatalf("rejected counted %v, want 1", n)
	}
}

// Two hub replicas on one durable consumer: every event applied once, re-published copies included.
func TestConsumerTwoReplicas(t *testing.T) {
	s := startServer(t)
	js1, js2 := connect(t, s), connect(t, s)
	if _, err := EnsureStream(context.Background(), js1, testConfig()); err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	small := func(o *ConsumerOptions) { o.Config.Batch = 7 }
	e1 := runConsumer(t, js1, sink, small)
	e2 := runConsumer(t, js2, sink, small)
	const n = 300
	var events []Event
	for i := range n {
		if i%3 == 0 {
			events = append(events, snapshot("erp-1", "plant1", fmt.Sprintf("SKU-%d", i), float64(i)))
		} else {
			events = append(events, sale(fmt.Sprintf("O-%d", i), 1))
		}
	}
	publishEvents(t, js1, events...)
	for i := 0; i < n; i += 5 { // copies beyond JetStream's window
		data := mustEncode(t, events[i])
		subj := events[i].subject("gemba")
		publishRaw(t, js2, subj, fmt.Sprintf("copy-%d", i), data)
	}
	testutil.WaitFor(t, 20*time.Second, "every event applied", func() bool { c, _ := sink.calls(); return c >= n })
	settled(t, js1)
	if total, most := sink.calls(); total != n || most != 1 {
		t.Fatalf("sink calls %d (max %d per id), want %d once each", total, most, n)
	}
	dups := e1.consumed(t, "duplicate") + e2.consumed(t, "duplicate")
	if dups != n/5 {
		t.Fatalf("duplicates %v, want %d", dups, n/5)
	}
	t.Logf("replica 1 applied %v, replica 2 %v", e1.consumed(t, "applied"), e2.consumed(t, "applied"))
}

// The same order posted twice over HTTP: one stream message, one Sink call.
func TestHTTPToSinkOnce(t *testing.T) {
	e := startHTTP(t, nil)
	sink := newFakeSink()
	ce := runConsumer(t, e.js, sink, nil)
	for range 2 {
		if code, r := e.postEvents(t, SalesPath, goodSale); code != 200 {
			t.Fatalf("%d %+v", code, r)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the sale applied", func() bool { return sink.count("sale:A-1001:1") == 1 })
	settled(t, e.js)
	if n := streamMsgs(t, e.js); n != 1 {
		t.Fatalf("%d stream messages, want 1", n)
	}
	if total, _ := sink.calls(); total != 1 || ce.consumed(t, "applied") != 1 {
		t.Fatalf("sink calls %d", total)
	}
}

func TestConsumerLifecycle(t *testing.T) {
	s := startServer(t)
	js := connect(t, s)
	markers, err := dedup.Open(context.Background(), js, dedup.Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewConsumer(js, ConsumerOptions{Config: testConfig(), Markers: markers, Log: quietLog()}); err == nil {
		t.Fatal("consumer without a sink")
	}
	c, err := NewConsumer(js, ConsumerOptions{Config: testConfig(), Markers: markers, Sink: newFakeSink(), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "COMMERCE") {
		t.Fatalf("Run without the stream: %v", err)
	}
	// Started and stopped at once, while idle in a fetch: returns promptly (runConsumer's cleanup
	// fails the test after 10s) and leaves no goroutine (goleak).
	if _, err := EnsureStream(context.Background(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	e := runConsumer(t, js, newFakeSink(), func(o *ConsumerOptions) { o.FetchWait = time.Minute })
	testutil.WaitFor(t, 5*time.Second, "the durable consumer created", func() bool {
		cons, err := js.Consumer(context.Background(), "COMMERCE", testConfig().Consumer)
		return err == nil && cons != nil
	})
	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Run returned %v after cancel", time.Since(start))
}

func TestStreamConfig(t *testing.T) {
	s := startServer(t)
	js := connect(t, s)
	ctx := context.Background()
	// The agents' stream on the same prefix: the wildcard cannot coexist with it, the listed channels can.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	if _, err := EnsureStream(ctx, js, cfg); err == nil || !strings.Contains(err.Error(), "commerce.channels") {
		t.Fatalf("overlap: %v", err)
	}
	cfg.Channels = []string{"web", "retail"}
	st, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	if got := strings.Join(info.Config.Subjects, " "); got != "gemba.commerce.inventory gemba.commerce.sales.web gemba.commerce.sales.retail" ||
		info.Config.Duplicates != 2*time.Hour || info.Config.MaxAge != 30*24*time.Hour || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream config %+v", info.Config)
	}
	// Adding a channel updates the stream; the consumer's filter covers it.
	cfg.Channels = append(cfg.Channels, "wholesale")
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	runConsumer(t, js, sink, func(o *ConsumerOptions) { o.Config.Channels = cfg.Channels })
	ws := sale("W-1", 1)
	ws.Channel = "wholesale"
	publishEvents(t, js, ws, snapshot("e", "p", "k", 1))
	testutil.WaitFor(t, 10*time.Second, "events applied", func() bool { n, _ := sink.calls(); return n == 2 })

	for _, bad := range []func(*Config){
		func(c *Config) { c.Channels = []string{"status"} },
		func(c *Config) { c.Channels = []string{"web", "web"} },
		func(c *Config) { c.Channels = []string{"a.b"} },
		func(c *Config) { c.Prefix = "" },
		func(c *Config) { c.Prefix = "a.*" },
		func(c *Config) { c.Replicas = 2 },
		func(c *Config) { c.MaxAge = time.Minute },
		func(c *Config) { c.Batch = 0 },
		func(c *Config) { c.Stream = "A.B" },
	} {
		c := testConfig()
		bad(&c)
		if err := c.check(false); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	// Validate reports through config with the field path.
	var doc struct {
		Commerce Config `yaml:"commerce"`
	}
	doc.Commerce = DefaultConfig()
	err = config.NewDecoder().Unmarshal([]byte("commerce:\n  batch: 0\n  channels: [web, status]\n"), &doc)
	if err == nil || !strings.Contains(err.Error(), "commerce.batch") || !strings.Contains(err.Error(), "commerce.channels[1]") {
		t.Fatalf("validation: %v", err)
	}
}

// slowSink takes longer than AckWait for its first event.
type slowSink struct {
	*fakeSink
	delay time.Duration
	once  sync.Once
}

func (s *slowSink) ApplySale(ctx context.Context, sl Sale) error {
	s.once.Do(func() { time.Sleep(s.delay) }) // simulated slow work (a KV leader election), not synchronisation
	return s.fakeSink.ApplySale(ctx, sl)
}

// A Sink slower than AckWait does not get its batch redelivered meanwhile (InProgress keeps it),
// which would let the idle second replica apply it too.
func TestConsumerSlowSinkKeepsMessages(t *testing.T) {
	js, s := startJS(t)
	sink := &slowSink{fakeSink: newFakeSink(), delay: 4 * time.Second}
	short := func(o *ConsumerOptions) { o.Config.AckWait = time.Second; o.FetchWait = 200 * time.Millisecond }
	runConsumer(t, js, sink, short)
	runConsumer(t, connect(t, s), sink, short)
	publishEvents(t, js, sale("S-1", 1), sale("S-1", 2))
	testutil.WaitFor(t, 20*time.Second, "both applied", func() bool { n, _ := sink.calls(); return n >= 2 })
	settled(t, js)

	if info := consumerInfo(t, js); info.NumRedelivered != 0 {
		t.Fatalf("%d redelivered while the sink worked on them", info.NumRedelivered)
	}
	if total, most := sink.calls(); total != 2 || most != 1 {
		t.Fatalf("sink calls %d (max %d per id)", total, most)
	}
}

// The server gone: Run keeps retrying, and still returns once its context ends; back up, it resumes.
func TestConsumerOutage(t *testing.T) {
	s := startServer(t)
	port := s.Addr().(*net.TCPAddr).Port
	dir := s.JetStreamConfig().StoreDir
	js := connect(t, s)
	if _, err := EnsureStream(context.Background(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	sink := newFakeSink()
	e := runConsumer(t, js, sink, func(o *ConsumerOptions) { o.FetchWait = 300 * time.Millisecond })
	publishEvents(t, js, sale("O-1", 1))
	testutil.WaitFor(t, 10*time.Second, "applied before the outage", func() bool { return sink.count("sale:O-1:1") == 1 })
	s.Shutdown()
	s.WaitForShutdown()
	s2, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s2.Start()
	if !s2.ReadyForConnections(10 * time.Second) {
		t.Fatal("restarted server not ready")
	}
	t.Cleanup(func() { s2.Shutdown(); s2.WaitForShutdown() })
	testutil.WaitFor(t, 20*time.Second, "publishing again after the restart", func() bool {
		pub, _ := NewPublisher(js, testConfig())
		return pub.Publish(context.Background(), []Event{sale("O-2", 1)})[0].Err == nil
	})
	testutil.WaitFor(t, 20*time.Second, "applied after the restart", func() bool { return sink.count("sale:O-2:1") == 1 })
	s2.Shutdown()
	s2.WaitForShutdown()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if total, most := sink.calls(); total != 2 || most != 1 {
		t.Fatalf("sink calls %d (max %d)", total, most)
	}
}
