package opcua

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// gateSink is an Emitter that blocks while its gate is closed, like a buffer under backpressure.
type gateSink struct {
	sink
	gmu     sync.Mutex
	open    chan struct{} // closed while the gate is open
	blocked int           // Emit calls waiting at the closed gate
}

func newGateSink() *gateSink {
	g := &gateSink{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gateSink) Emit(ctx context.Context, b []signal.Sample) error {
	g.gmu.Lock()
	open := g.open
	g.blocked++
	g.gmu.Unlock()
	select {
	case <-open:
	case <-ctx.Done():
	}
	g.gmu.Lock()
	g.blocked--
	g.gmu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return g.sink.Emit(ctx, b)
}

func (g *gateSink) close() {
	g.gmu.Lock()
	g.open = make(chan struct{})
	g.gmu.Unlock()
}

func (g *gateSink) release() {
	g.gmu.Lock()
	close(g.open)
	g.gmu.Unlock()
}

func (g *gateSink) waiting() int {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	return g.blocked
}

// startRunner runs one session's runner by hand (what runSession does), so a test can see the
// notification queue and the session's loss signal.
func startRunner(t *testing.T, c *Collector, emit collectors.Emitter) (*runner, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := connect(ctx, connectOptions{cfg: c.cfg, dataDir: t.TempDir(), agent: "test", logger: c.log})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c.resolveAll(s)
	r := newRunner(c, s, emit)
	if err := r.start(ctx); err != nil {
		cancel()
		s.close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() { done <- r.run(ctx); close(ended) }()
	t.Cleanup(func() {
		cancel()
		<-ended
		r.wait()
		s.close()
	})
	return r, done
}

// Notifications the client already received when the connection drops are data the server will
// not send again (it has no retransmission queue for a new session): they must be stored, not
// dropped with the session.
func TestChannelLossKeepsReceivedNotifications(t *testing.T) {
	port := testutil.FreePort(t)
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	g, stop, err := newGoServer(port, p.l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	nid := g.add("loss.A", 0.0)
	cfg := decodeConfig(t, goConfig("opc.tcp://"+p.addr(), "publishing_interval: 20ms", "  - {node: \"ns=1;s=loss.A\", signal: a}\n"))
	c, err := New("plc", cfg, collectors.Deps{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	gs := newGateSink()
	r, done := startRunner(t, c, gs)
	testutil.WaitFor(t, 10*time.Second, "initial value", func() bool { return gs.count("a") == 1 })

	// the agent's buffer is slow: the loop waits in Emit with value 1, and values 2..5 arrive
	gs.close()
	g.set(t, nid, dval(1.0))
	testutil.WaitFor(t, 20*time.Second, "emit blocked", func() bool { return gs.waiting() == 1 })
	for i := 1; i <= cap(r.notifs); i++ {
		g.set(t, nid, dval(float64(i+1)))
		testutil.WaitFor(t, 20*time.Second, fmt.Sprint(i, " notifications queued"), func() bool { return len(r.notifs) >= i })
	}
	// the connection drops while they wait
	p.Cut()
	testutil.WaitFor(t, 20*time.Second, "loss signalled", func() bool { return len(r.s.lost) == 1 })
	gs.release()
	select {
	case err := <-done:
		if err != errChannelLost {
			t.Fatalf("loop ended with %v, want errChannelLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not end after the channel was lost")
	}
	var got []float64
	for _, s := range gs.all() {
		f, _ := s.Value.Float()
		got = append(got, f)
	}
	if want := "[0 1 2 3 4 5]"; fmt.Sprint(got) != want {
		t.Errorf("stored %v, want %s: values received before the drop were lost", got, want)
	}
}

// A publishing interval longer than the watchdog is a healthy session, not a silent one: data and
// the server's heartbeat come once per interval. Rebuilding it every few intervals would store
// every node's current value again after each rebuild.
func TestWatchdogShorterThanPublishingIntervalKeepsSession(t *testing.T) {
	ns := sharedNodeServer(t)
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
publishing_interval: 1500ms
reconnect: {min_backoff: 100ms, max_backoff: 1s, watchdog: 1s}
nodes:
  - {node: "nsu=%s;s=Double", signal: d}
`, ns.url, nodeNSU))
	r := startCollector(t, cfg, t.TempDir())
	// the value changes every 100 ms: each publish brings one sample
	testutil.WaitFor(t, 60*time.Second, "five publish cycles", func() bool { return r.sink.count("d") >= 5 })
	for _, reason := range []string{"watchdog", "error", "channel_lost", "no_subscription"} {
		if n := metricValue(r.c.m.reconnects.WithLabelValues(reason)); n != 0 {
			t.Errorf("healthy session rebuilt %v times (%s)", n, reason)
		}
	}
}

// Array elements beyond max_array are counted and logged (docs/wire-format.md, Values from the
// sources): the operator learns which node is cut, and to what, without reading every metric.
func TestArrayElementsDroppedAreLogged(t *testing.T) {
	g := sharedGoServer(t)
	g.add("drop.Array", []float64{1, 2, 3, 4, 5})
	var logs testutil.Buffer
	cfg := decodeConfig(t, goConfig(g.url, "mode: poll\npoll_interval: 20ms\nmax_array: 3", "  - {node: \"ns=1;s=drop.Array\", signal: arr}\n"))
	c, err := New("plc", cfg, collectors.Deps{Logger: slog.New(slog.NewTextHandler(&logs, nil)), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &sink{}
	go func() { done <- c.Run(ctx, s) }()
	defer func() { cancel(); <-done }()
	testutil.WaitFor(t, 10*time.Second, "array elements", func() bool { return s.count("arr[2]") > 0 })
	out := logs.String()
	if !strings.Contains(out, "signal=arr") || !strings.Contains(out, "max_array=3") || !strings.Contains(out, "length=5") {
		t.Errorf("no log line names the cut array (signal, length, max_array):\n%s", out)
	}
}

// validate accepts any watchdog >= 0; a few nanoseconds must not crash the collector. (Poll mode:
// the loop and its watchdog ticker run in every mode, and the shared server's subscription ids
// collide once other tests deleted theirs.)
func TestTinyWatchdogDoesNotPanic(t *testing.T) {
	g := sharedGoServer(t)
	g.add("tiny.A", 1.0)
	cfg := decodeConfig(t, goConfig(g.url, "mode: poll\npoll_interval: 20ms\nreconnect: {watchdog: 3ns}", "  - {node: \"ns=1;s=tiny.A\", signal: a}\n"))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 10*time.Second, "a sample", func() bool { return r.sink.count("a") > 0 })
}

// While start creates the subscriptions, nobody reads the notification queue yet: a chatty first
// group fills it, gopcua's publish loop then waits, and its Subscribe waits for that loop (it
// signals a channel of two, without a context). Start must not hang, and Run must still stop.
func TestManyGroupsWithBusyFirstGroupStart(t *testing.T) {
	g, stop, err := newGoServer(testutil.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	const groups = 15
	busy := g.add("many.busy", 0.0)
	var yml strings.Builder
	fmt.Fprintf(&yml, "endpoint: %s\nsecurity: {policy: None, mode: None}\npublishing_interval: 10ms\n", g.url)
	yml.WriteString("reconnect: {min_backoff: 50ms, max_backoff: 500ms}\ngroups:\n")
	yml.WriteString("  - {name: busy, nodes: [{node: \"ns=1;s=many.busy\", signal: busy}]}\n")
	for i := range groups {
		g.add(fmt.Sprint("many.g", i), float64(i))
		fmt.Fprintf(&yml, "  - {name: g%d, nodes: [{node: \"ns=1;s=many.g%d\", signal: g%d}]}\n", i, i, i)
	}
	cfg := decodeConfig(t, yml.String())
	// the first group's node changes in every publishing interval
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			g.mu.Lock()
			g.vals["many.busy"] = dval(float64(i))
			g.mu.Unlock()
			g.srv.ChangeNotification(busy)
		}
	}()
	t.Cleanup(func() { close(stopLoad); <-loadDone })
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "every group's node", func() bool {
		for i := range groups {
			if r.sink.count(fmt.Sprint("g", i)) == 0 {
				return false
			}
		}
		return true
	})
}
