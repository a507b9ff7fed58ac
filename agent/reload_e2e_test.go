package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// readSamples reads the agent's samples stream in NATS, in stream order.
func readSamples(t *testing.T, url string) []*signal.Batch {
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
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"gemba.plant1.gw-reload.samples"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*signal.Batch
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			read++
			b, err := signal.DecodeBatch(m.Data())
			if err != nil {
				t.Fatalf("stream message: %v", err)
			}
			out = append(out, b)
		}
		if n == 0 {
			break // the rest were status or features messages
		}
	}
	return out
}

// TestReloadUnderLoadAgainstRealServers is issue 18's reload acceptance test, all real: mosquitto
// with two MQTT collectors on it, gopcua's OPC UA server (a child process) with a third,
// each behind a proxy that counts TCP connections, NATS JetStream behind the real uplink, the
// Badger buffer. Under load (both topics and the PLC's counter tick every few ms) one MQTT
// collector's signal name changes:
//
//   - the other two open no connection (proxy counts, the collectors' own connect and session
//     rebuild counters) and lose no sample: every value published or counted is in the stream,
//     in order, once;
//   - the changed one reconnects and its samples carry the new name from the switch on;
//   - every batch in NATS carries one config version: the old one, then the new one;
//   - an invalid file afterwards is refused and the same three keep running untouched.
func TestReloadUnderLoadAgainstRealServers(t *testing.T) {
	dir := t.TempDir()
	ns := startNATS(t)
	broker := startMosquitto(t)
	opc := startOPC(t, testutil.FreePort(t), 40*time.Millisecond, "c1")
	pa := startProxy(t, broker)
	pb := startProxy(t, broker)

	head := fmt.Sprintf(`
agent: {id: gw-reload, site: plant1, shutdown_timeout: 10s, restart: {initial: 50ms, max: 200ms}}
http: {listen: "127.0.0.1:0"}
buffer: {dir: %s, max_bytes: 256MiB}
uplink: {nats: {servers: [%s], create_stream: true}}
collectors:
  - name: line-a
    type: mqtt
    broker: tcp://%s
    client_id: gw-reload-a
    qos: 1
    subscriptions: [{topic: plant/a, format: value, type: int, signal: a.count}]
  - name: plc
    type: opcua
    endpoint: opc.tcp://%s
    security: {policy: None, mode: None}
    publishing_interval: 10ms
    sampling: 0s
    queue_size: 1000
    nodes: [{node: "%s", signal: plc.c1}]
`, filepath.Join(dir, "buffer"), ns.ClientURL(), pa.addr(), strings.TrimPrefix(opc.url(), "opc.tcp://"), opc.node("c1"))
	lineB := func(signal string) string {
		return fmt.Sprintf(`  - name: line-b
    type: mqtt
    broker: tcp://%s
    client_id: gw-reload-b
    qos: 1
    subscriptions: [{topic: plant/b, format: value, type: int, signal: %s}]
`, pb.addr(), signal)
	}
	src := &fileSource{yml: head + lineB("b.count")}
	cfg, err := src.load()
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	a := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: ready, Reload: src.load, ConfigFile: "agent.yaml"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	defer stop()
	<-ready

	for _, name := range []string{"line-a", "line-b"} {
		testutil.WaitFor(t, 20*time.Second, name+" subscribed", func() bool {
			return a.Status().Collectors[name].State == "running"
		})
	}
	metric := func(name, coll string) float64 { return testutil.Metric(t, a.Registry(), name, "collector", coll) }
	testutil.WaitFor(t, 30*time.Second, "the PLC's counter arriving", func() bool {
		return metric("gemba_opcua_samples_total", "plc") > 20
	})

	// The load: both topics count up, QoS 1 (each acknowledged by the broker), every 2 ms, until
	// told to stop.
	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("gw-reload-publisher"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	defer pub.Disconnect(250)
	var published [2]atomic.Int64
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			for i, topic := range []string{"plant/a", "plant/b"} {
				v := published[i].Load() + 1
				tok := pub.Publish(topic, 1, false, strconv.FormatInt(v, 10))
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("publish %s %d: %v", topic, v, tok.Error())
					return
				}
				published[i].Store(v)
			}
		}
	})
	defer func() {
		select {
		case <-stopLoad:
		default:
			close(stopLoad)
		}
		load.Wait()
	}()
	testutil.WaitFor(t, 20*time.Second, "load flowing", func() bool {
		return metric("gemba_collector_samples_total", "line-a") > 200 && metric("gemba_collector_samples_total", "line-b") > 200
	})

	// What the unchanged two hold before the reload.
	// (OPC UA is not proxied: the server answers GetEndpoints only for its own URL. Its
	// connections are read from the kernel's socket table instead.)
	type conn struct {
		proxy       any
		tcp         string
		connects    float64
		rebuilds    float64
		collRestart float64
	}
	paPort, _ := strconv.Atoi(pa.addr()[strings.LastIndexByte(pa.addr(), ':')+1:])
	before := map[string]conn{
		"line-a": {pa.accepted.Load(), tcpConnsTo(t, paPort), metric("gemba_mqtt_connects_total", "line-a"), 0, metric("gemba_collector_restarts_total", "line-a")},
		"plc":    {nil, tcpConnsTo(t, opc.port), 0, promSum(t, a, "gemba_opcua_session_rebuilds_total", "plc"), metric("gemba_collector_restarts_total", "plc")},
	}
	oldVersion := a.Status().ConfigVersion
	plcAtReload := metric("gemba_collector_samples_total", "plc")
	pbBefore := pb.accepted.Load()

	src.set(head + lineB("b.total"))
	res, err := a.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Applied || strings.Join(res.Restarted, ",") != "line-b" || strings.Join(res.Unchanged, ",") != "line-a,plc" || len(res.Started)+len(res.Stopped)+len(res.RestartRequired) != 0 {
		t.Fatalf("reload: %+v", res)
	}
	testutil.WaitFor(t, 20*time.Second, "line-b back on the broker with its new config", func() bool {
		return metric("gemba_collector_samples_total", "line-b") > 200
	})

	// An invalid file is refused and changes nothing.
	src.set(head + lineB("b.total") + "  - {name: line-a, type: mqtt}\n")
	if bad, err := a.Reload(context.Background()); err != nil || bad.Applied || len(bad.Problems) == 0 {
		t.Fatalf("invalid reload: %+v %v", bad, err)
	}
	if got := testutil.Metric(t, a.Registry(), "gemba_agent_config_reloads_total", "result", "invalid"); got != 1 {
		t.Errorf("invalid reloads counted %v", got)
	}
	n := metric("gemba_collector_samples_total", "line-a")
	testutil.WaitFor(t, 20*time.Second, "line-a still collecting after the refused reload", func() bool {
		return metric("gemba_collector_samples_total", "line-a") > n+200
	})
	testutil.WaitFor(t, 20*time.Second, "the PLC still counting after both reloads", func() bool {
		return metric("gemba_collector_samples_total", "plc") > plcAtReload+25
	})
	close(stopLoad)
	load.Wait()
	lastA, lastB := published[0].Load(), published[1].Load()

	// The unchanged two kept their connections.
	after := map[string]conn{
		"line-a": {pa.accepted.Load(), tcpConnsTo(t, paPort), metric("gemba_mqtt_connects_total", "line-a"), 0, metric("gemba_collector_restarts_total", "line-a")},
		"plc":    {nil, tcpConnsTo(t, opc.port), 0, promSum(t, a, "gemba_opcua_session_rebuilds_total", "plc"), metric("gemba_collector_restarts_total", "plc")},
	}
	for name, b := range before {
		if fmt.Sprint(after[name]) != fmt.Sprint(b) {
			t.Errorf("%s: connection changed across the reload: before %+v, after %+v", name, b, after[name])
		}
	}
	if pb.accepted.Load() <= pbBefore {
		t.Errorf("line-b did not reconnect (%d connections before, %d after)", pbBefore, pb.accepted.Load())
	}

	// The stream: wait until the last values are in, then check every series.
	var batches []*signal.Batch
	testutil.WaitFor(t, 60*time.Second, "the last published values in NATS", func() bool {
		batches = readSamples(t, ns.ClientURL())
		var sawA, sawB bool
		for _, b := range batches {
			for _, s := range b.Samples {
				v, _ := s.Value.Int()
				sawA = sawA || (s.Signal == "a.count" && v == lastA)
				sawB = sawB || (s.Signal == "b.total" && v == lastB)
			}
		}
		return sawA && sawB
	})
	stop()
	seen := map[string][]int64{}
	switched := false
	for i, b := range batches {
		switch {
		case b.ConfigVersion == res.ConfigVersion:
			switched = true
		case b.ConfigVersion != oldVersion:
			t.Fatalf("batch %d: version %q, neither old %s nor new %s", i, b.ConfigVersion, oldVersion, res.ConfigVersion)
		case switched:
			t.Fatalf("batch %d: the old version after the new one", i)
		}
		for _, s := range b.Samples {
			v, _ := s.Value.Int()
			seen[s.Signal] = append(seen[s.Signal], v)
			if (s.Signal == "b.total") != switched && s.Signal[0] == 'b' {
				t.Fatalf("batch %d (version %s): %s = %d on the wrong side of the switch", i, b.ConfigVersion, s.Signal, v)
			}
		}
	}
	// line-a: 1..lastA, each once, in order.
	if got := seen["a.count"]; int64(len(got)) != lastA || !contiguous(got, 1) {
		t.Errorf("a.count: %d values for %d published; contiguous from 1: %v (%s)", len(got), lastA, contiguous(got, 1), around(got))
	}
	// The PLC: in order, no repeat, across the reload. Not "no hole": gopcua's server sends only
	// the latest value of an item per publish cycle, and under -race its cycle sometimes outlasts
	// the 40 ms count (holes of one value, before and after the reload alike). That the session
	// went on is shown above: same TCP connection, no rebuild.
	if got := seen["plc.c1"]; len(got) < 50 || !increasing(got) {
		t.Errorf("plc.c1: %d values, strictly increasing: %v (%s)", len(got), increasing(got), around(got))
	}
	// line-b: its values are split between the names, none lost or repeated (a persistent
	// session: the broker kept what was published while it reconnected).
	b := append(append([]int64(nil), seen["b.count"]...), seen["b.total"]...)
	if int64(len(b)) != lastB || !contiguous(b, 1) {
		t.Errorf("line-b: %d values (%d as b.count, %d as b.total) for %d published; contiguous: %v (%s)",
			len(b), len(seen["b.count"]), len(seen["b.total"]), lastB, contiguous(b, 1), around(b))
	}
	if len(seen["b.total"]) == 0 {
		t.Error("line-b never used its new signal name")
	}
}

func increasing(vs []int64) bool {
	for i := 1; i < len(vs); i++ {
		if vs[i] <= vs[i-1] {
			return false
		}
	}
	return true
}

func contiguous(vs []int64, from int64) bool {
	for i, v := range vs {
		if v != from+int64(i) {
			return false
		}
	}
	return true
}

// around describes where a sequence breaks.
func around(vs []int64) string {
	var breaks []string
	for i := 1; i < len(vs); i++ {
		if vs[i] != vs[i-1]+1 {
			breaks = append(breaks, fmt.Sprintf("at %d: %d then %d", i, vs[i-1], vs[i]))
		}
	}
	if len(breaks) == 0 {
		return "no break"
	}
	if len(breaks) > 5 {
		breaks = append(breaks[:5], fmt.Sprintf("and %d more", len(breaks)-5))
	}
	return "breaks " + strings.Join(breaks, "; ")
}

// promSum adds every series of a metric of one collector (all label values).
func promSum(t *testing.T, a *Agent, name, coll string) float64 {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var s float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelMap(m)["collector"] == coll && m.Counter != nil {
				s += m.Counter.GetValue()
			}
		}
	}
	return s
}

// tcpConnsTo lists this process's established TCP connections to a local port, as the kernel's
// socket table shows them ("local port"), sorted: a connection kept has the same local port.
func tcpConnsTo(t *testing.T, port int) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		_, rport, _ := strings.Cut(f[2], ":")
		if p, err := strconv.ParseUint(rport, 16, 16); err == nil && int(p) == port {
			_, lport, _ := strings.Cut(f[1], ":")
			lp, _ := strconv.ParseUint(lport, 16, 16)
			out = append(out, strconv.FormatUint(lp, 10))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
