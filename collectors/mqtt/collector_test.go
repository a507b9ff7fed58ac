package mqtt

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/testutil"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

func testConfig(broker string, subs ...Subscription) *Config {
	cfg := NewConfig()
	cfg.Broker = broker
	cfg.ConnectTimeout = 2 * time.Second
	cfg.Reconnect = Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	cfg.Subscriptions = subs
	return cfg
}

func TestJSONEndToEnd(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{
		Topic: "plant1/+/+/telemetry", Format: FormatJSON, Signal: "{topic.1}.{topic.2}.{field}",
		Fields:    []Field{{Path: "temp"}, {Path: "axes[1].load", Name: "y_load"}, {Path: "state.running", Name: "running"}},
		TimeField: "ts", TimeFormat: "unix_ms",
		Labels: map[string]string{"machine": "{topic.2}"},
	})
	em := &memEmitter{}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir()}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "plant1/line1/press/telemetry", 1, []byte(`{"ts":1700000000123,"temp":21.5,"axes":[{"load":1},{"load":7}],"state":{"running":true}}`))
	testutil.WaitFor(t, 5*time.Second, "3 samples", func() bool { return em.count() >= 3 })
	got := em.all()
	want := []signal.Sample{
		{Signal: "line1.press.temp", Value: signal.Float(21.5)},
		{Signal: "line1.press.y_load", Value: signal.Int(7)},
		{Signal: "line1.press.running", Value: signal.Bool(true)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d samples, want %d: %+v", len(got), len(want), got)
	}
	ts := time.UnixMilli(1700000000123).UTC()
	for i, w := range want {
		g := got[i]
		if g.Signal != w.Signal || !g.Value.Equal(w.Value) || !g.Time.Equal(ts) || g.Quality != signal.Good {
			t.Errorf("sample %d = %s %v %s %v, want %s %v %s good", i, g.Signal, g.Value, g.Time, g.Quality, w.Signal, w.Value, ts)
		}
		if v, _ := g.Labels.Get("machine"); v != "press" {
			t.Errorf("sample %d label machine = %q", i, v)
		}
		if g.Source != "test:plant1/line1/press/telemetry" {
			t.Errorf("source = %q", g.Source)
		}
	}
}

// blockingEmitter holds Emit until released, to look at the broker while samples are "in flight".
type blockingEmitter struct {
	memEmitter
	entered chan struct{}
	release chan struct{}
}

func (e *blockingEmitter) Emit(ctx context.Context, s []signal.Sample) error {
	select {
	case e.entered <- struct{}{}:
	default:
	}
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return e.memEmitter.Emit(ctx, s)
}

func TestAckOnlyAfterEmit(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "a/#", Format: FormatValue})
	cfg.ClientID = "ack-test"
	em := &blockingEmitter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a"}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "a/x", 1, []byte("42"))
	<-em.entered
	inflight := func() int {
		cl, ok := b.srv.Clients.Get("ack-test")
		if !ok {
			return -1
		}
		return cl.State.Inflight.Len()
	}
	// While Emit has not returned, the broker must still hold the message as unacknowledged.
	if n := inflight(); n != 1 {
		t.Fatalf("broker in-flight for collector = %d while Emit blocks, want 1", n)
	}
	close(em.release)
	testutil.WaitFor(t, 5*time.Second, "ack after Emit", func() bool { return inflight() == 0 })
	if got := em.all(); len(got) != 1 || got[0].Signal != "a.x" || !got[0].Value.Equal(signal.Int(42)) {
		t.Fatalf("samples = %+v", got)
	}
}

// TestBatchGrowsWhileEmitBlocks: what arrives during one durable write becomes the next write,
// one Emit for all of it.
func TestBatchGrowsWhileEmitBlocks(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "g/#", Format: FormatValue})
	cfg.ClientID = "grow-test"
	em := &blockingEmitter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "g/first", 1, []byte("0"))
	<-em.entered
	const more = 50
	for i := 1; i <= more; i++ {
		publish(t, pub, "g/x", 1, []byte(strconv.Itoa(i)))
	}
	testutil.WaitFor(t, 10*time.Second, "all mapped while the first Emit blocks", func() bool {
		return counterValue(t, reg, "gemba_mqtt_messages_total", nil) == more+1
	})
	close(em.release)
	testutil.WaitFor(t, 10*time.Second, "all stored", func() bool { return em.count() == more+1 })
	em.mu.Lock()
	calls := em.calls
	em.mu.Unlock()
	if calls != 2 {
		t.Fatalf("%d Emit calls, want 2: the first message, then the %d that arrived meanwhile", calls, more)
	}
	for i, s := range em.all()[1:] {
		if !s.Value.Equal(signal.Int(int64(i + 1))) {
			t.Fatalf("sample %d = %v: arrival order lost", i+1, s.Value)
		}
	}
}

func TestEmitErrorRedelivers(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "a/#", Format: FormatValue})
	cfg.ClientID = "redeliver-test"
	em := &memEmitter{failNext: 1}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "a/x", 1, []byte("7"))
	testutil.WaitFor(t, 10*time.Second, "redelivered sample", func() bool { return em.count() == 1 })
	if v := counterValue(t, reg, "gemba_mqtt_emit_errors_total", nil); v != 1 {
		t.Errorf("emit_errors_total = %v, want 1", v)
	}
	if got := em.all(); !got[0].Value.Equal(signal.Int(7)) {
		t.Errorf("sample = %+v", got[0])
	}
}

func TestResubscribeAfterBrokerLosesSession(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "r/#", Format: FormatValue})
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	// A fresh broker on the same port knows nothing of the session: only a re-subscribe helps.
	b.stop()
	b.start()
	testutil.WaitFor(t, 15*time.Second, "reconnect", func() bool {
		return counterValue(t, reg, "gemba_mqtt_connects_total", nil) >= 2 && len(b.subscriptions(c.clientID)) == 1
	})
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "r/1", 1, []byte("1"))
	testutil.WaitFor(t, 5*time.Second, "sample after broker restart", func() bool { return em.count() == 1 })
}

func TestSubscriptionsReconciledAcrossRestart(t *testing.T) {
	b := startMochi(t)
	dir := t.TempDir()
	run := func(topics ...string) {
		var subs []Subscription
		for _, tp := range topics {
			subs = append(subs, Subscription{Topic: tp, Format: FormatValue})
		}
		cfg := testConfig(b.url(), subs...)
		cfg.ClientID = "reconcile-test"
		c, stop := startCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: dir}, &memEmitter{})
		testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
		stop()
	}
	run("t/a", "t/b")
	if got := b.subscriptions("reconcile-test"); !slices.Equal(got, []string{"t/a", "t/b"}) {
		t.Fatalf("broker subscriptions after first run = %v", got)
	}
	run("t/a", "t/c")
	if got := b.subscriptions("reconcile-test"); !slices.Equal(got, []string{"t/a", "t/c"}) {
		t.Fatalf("broker subscriptions after config change = %v, want [t/a t/c]", got)
	}
}

// unsubHolder is a mochi hook that allows every client and filter but deny, and holds each
// UNSUBSCRIBE (never confirming it) until release is closed.
type unsubHolder struct {
	mochi.HookBase
	deny    string
	release chan struct{}
}

func (h *unsubHolder) ID() string { return "unsub-holder" }

func (h *unsubHolder) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck || b == mochi.OnUnsubscribe
}

func (h *unsubHolder) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *unsubHolder) OnACLCheck(_ *mochi.Client, topic string, _ bool) bool { return topic != h.deny }

func (h *unsubHolder) OnUnsubscribe(_ *mochi.Client, pk packets.Packet) packets.Packet {
	<-h.release
	return pk
}

// TestUnsubscribeNotConfirmedStillReportsSubscriptions: when the broker does not confirm the
// unsubscribe of a topic removed from the config, the subscriptions just made are reported all the
// same (not "starting" forever), and the removed topic stays recorded to be retried.
func TestUnsubscribeNotConfirmedStillReportsSubscriptions(t *testing.T) {
	b := startMochi(t)
	b.stop()
	hook := &unsubHolder{deny: "t/denied", release: make(chan struct{})}
	b.startWith(hook, nil)
	t.Cleanup(func() { close(hook.release) }) // before the broker stops (cleanups run last first)

	dir := t.TempDir()
	start := func(topics ...string) (*Collector, func()) {
		var subs []Subscription
		for _, tp := range topics {
			subs = append(subs, Subscription{Topic: tp, Format: FormatValue})
		}
		cfg := testConfig(b.url(), subs...)
		cfg.ClientID = "unsub-test"
		cfg.ConnectTimeout = 500 * time.Millisecond
		return startCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: dir}, &memEmitter{})
	}
	c, stop := start("t/a", "t/removed")
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	stop()

	c, _ = start("t/a", "t/denied")
	testutil.WaitFor(t, 10*time.Second, "subscriptions reported", func() bool {
		st, _ := c.State()
		return st == "degraded" || st == "running"
	})
	st, info := c.State()
	if st != "degraded" || info["failed_subscriptions"] != "t/denied" {
		t.Errorf("state %s %v, want degraded with failed_subscriptions t/denied", st, info)
	}
	saved, err := loadState(c.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := saved.Topics["t/removed"]; !ok {
		t.Errorf("saved topics %v: t/removed no longer recorded, so never unsubscribed", saved.Topics)
	}
}

func TestStallWatchdogReconnects(t *testing.T) {
	b := startMochi(t)
	st := 100 * time.Millisecond
	cfg := testConfig(b.url(), Subscription{Topic: "live/#", Format: FormatValue, StallTimeout: &st})
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, &memEmitter{})
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	testutil.WaitFor(t, 10*time.Second, "a stall and a new connection", func() bool {
		return counterValue(t, reg, "gemba_mqtt_stalls_total", map[string]string{"subscription": "live/#"}) >= 1 &&
			counterValue(t, reg, "gemba_mqtt_connects_total", nil) >= 2
	})
}

func TestBadCredentialsArePermanent(t *testing.T) {
	b := startMochi(t)
	// Replace the allow-all broker with one that refuses everyone.
	b.stop()
	b.startWith(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: auth.AuthRules{{Username: "u", Password: "right", Allow: true}}}})
	cfg := testConfig(b.url(), Subscription{Topic: "x", Format: FormatValue})
	cfg.Username, cfg.Password = "u", config.NewSecret("wrong")
	c, err := New("test", cfg, collectors.Deps{Agent: "a"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(context.Background(), &memEmitter{})
	if !collectors.IsPermanent(err) {
		t.Fatalf("Run = %v, want a permanent error", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error leaks the password: %v", err)
	}
}
