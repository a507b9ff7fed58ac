package mqtt

import (
	"flag"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

var update = flag.Bool("update", false, "rewrite golden files")

// edgeNode is a test Sparkplug B edge node that follows the specification: NBIRTH with bdSeq and
// seq 0, seq incremented per message, aliases declared in births, NDEATH with the birth's bdSeq.
type edgeNode struct {
	t     *testing.T
	cl    paho.Client
	group string
	node  string
	seq   uint64
	bdSeq uint64
	now   uint64 // ms; advanced by hand so the golden output is stable
}

type metricSpec struct {
	name     string
	alias    uint64
	dt       sparkplug.DataType
	value    any // uint32, uint64, float32, float64, bool, string, []byte, *DataSet, *Template, or nil for is_null
	hist     bool
	noName   bool // data messages refer by alias only
	tsOffset uint64
}

func (e *edgeNode) payload(metrics []metricSpec, withSeq bool) []byte {
	e.now += 1000
	ts := e.now
	p := &sparkplug.Payload{Timestamp: &ts}
	if withSeq {
		s := e.seq
		p.Seq = &s
		e.seq = (e.seq + 1) % 256
	}
	for _, m := range metrics {
		pm := &sparkplug.Payload_Metric{}
		if !m.noName {
			pm.Name = proto.String(m.name)
		}
		if m.alias != 0 {
			pm.Alias = proto.Uint64(m.alias)
		}
		if m.dt != 0 {
			pm.Datatype = proto.Uint32(uint32(m.dt))
		}
		if m.hist {
			pm.IsHistorical = proto.Bool(true)
			pm.Timestamp = proto.Uint64(ts - 60000 + m.tsOffset)
		}
		switch v := m.value.(type) {
		case uint32:
			pm.Value = &sparkplug.Payload_Metric_IntValue{IntValue: v}
		case uint64:
			pm.Value = &sparkplug.Payload_Metric_LongValue{LongValue: v}
		case float32:
			pm.Value = &sparkplug.Payload_Metric_FloatValue{FloatValue: v}
		case float64:
			pm.Value = &sparkplug.Payload_Metric_DoubleValue{DoubleValue: v}
		case bool:
			pm.Value = &sparkplug.Payload_Metric_BooleanValue{BooleanValue: v}
		case string:
			pm.Value = &sparkplug.Payload_Metric_StringValue{StringValue: v}
		case []byte:
			pm.Value = &sparkplug.Payload_Metric_BytesValue{BytesValue: v}
		case *sparkplug.Payload_DataSet:
			pm.Value = &sparkplug.Payload_Metric_DatasetValue{DatasetValue: v}
		case *sparkplug.Payload_Template:
			pm.Value = &sparkplug.Payload_Metric_TemplateValue{TemplateValue: v}
		case nil:
			pm.IsNull = proto.Bool(true)
		}
		p.Metrics = append(p.Metrics, pm)
	}
	b, err := proto.Marshal(p)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *edgeNode) send(typ, device string, metrics ...metricSpec) {
	topic := spNamespace + "/" + e.group + "/" + typ + "/" + e.node
	if device != "" {
		topic += "/" + device
	}
	publish(e.t, e.cl, topic, 1, e.payload(metrics, typ != "NDEATH"))
}

func TestSparkplugGolden(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "spBv1.0/plant1/#", Format: FormatSparkplugB, Labels: map[string]string{"edge": "{node}"}})
	cfg.Sparkplug.RebirthInterval = 0
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))

	pub := newPublisher(t, b.url(), "edge-node-1")
	var mu sync.Mutex
	var rebirths []string
	tok := pub.Subscribe("spBv1.0/plant1/NCMD/#", 1, func(_ paho.Client, m paho.Message) {
		var p sparkplug.Payload
		if err := proto.Unmarshal(m.Payload(), &p); err != nil {
			t.Errorf("NCMD payload: %v", err)
			return
		}
		for _, mt := range p.Metrics {
			if mt.GetName() == "Node Control/Rebirth" && mt.GetBooleanValue() {
				mu.Lock()
				rebirths = append(rebirths, m.Topic())
				mu.Unlock()
			}
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	e := &edgeNode{t: t, cl: pub, group: "plant1", node: "press1", bdSeq: 3, now: 1700000000000}

	e.send("NBIRTH", "",
		metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(3)},
		metricSpec{name: "Node Control/Rebirth", dt: sparkplug.Boolean, value: false},
		metricSpec{name: "Temperature", alias: 1, dt: sparkplug.Double, value: 21.5},
		metricSpec{name: "Motor/Speed", alias: 2, dt: sparkplug.Float, value: float32(1450.5)},
		metricSpec{name: "Offset", alias: 3, dt: sparkplug.Int8, value: uint32(0xFE)}, // -2 in two's complement
		metricSpec{name: "Parts", alias: 4, dt: sparkplug.UInt64, value: uint64(123456789)},
		metricSpec{name: "Running", alias: 5, dt: sparkplug.Boolean, value: true},
		metricSpec{name: "Sku", alias: 6, dt: sparkplug.String, value: "SKU-42"},
	)
	e.send("DBIRTH", "feeder",
		metricSpec{name: "Level", alias: 10, dt: sparkplug.Int32, value: uint32(0xFFFFFFFF)}, // -1
		metricSpec{name: "Jam", alias: 11, dt: sparkplug.Boolean, value: false},
	)
	e.send("NDATA", "",
		metricSpec{alias: 1, noName: true, value: 22.25},
		metricSpec{alias: 4, noName: true, value: uint64(123456790)},
		metricSpec{alias: 6, noName: true, value: nil},
	)
	e.send("DDATA", "feeder", metricSpec{alias: 10, noName: true, value: uint32(5)})
	// Historical data: stored by the node while offline and sent later.
	e.send("NDATA", "", metricSpec{alias: 1, noName: true, value: 19.0, hist: true})
	e.seq++ // the node "loses" one message: a seq gap
	e.send("NDATA", "", metricSpec{alias: 2, noName: true, value: float32(1500)})
	e.send("NDATA", "", metricSpec{alias: 99, noName: true, value: 1.0}) // unknown alias
	e.send("DDEATH", "feeder")
	// A late will from an earlier session (other bdSeq) must not kill the live node.
	stale := &edgeNode{t: t, cl: pub, group: "plant1", node: "press1", now: e.now}
	stale.send("NDEATH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(2)})
	e.now = stale.now
	e.send("NDATA", "", metricSpec{alias: 5, noName: true, value: false})
	e.send("NDEATH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(3)})

	// The last message yields 7 Bad samples (6 node metrics + 2 feeder metrics - bdSeq/control).
	testutil.WaitFor(t, 10*time.Second, "NDEATH samples", func() bool {
		s := em.all()
		return len(s) > 0 && s[len(s)-1].Reason == "NDEATH" && strings.Count(render(s), "NDEATH") >= 8
	})
	got := renderLines(em.all())
	golden := "testdata/sparkplug.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("Sparkplug samples differ from %s\n got:\n%s\nwant:\n%s", golden, got, want)
	}
	if v := counterValue(t, reg, "gemba_mqtt_sparkplug_seq_gaps_total", nil); v != 1 {
		t.Errorf("seq gaps = %v, want 1", v)
	}
	if v := counterValue(t, reg, "gemba_mqtt_bad_payloads_total", map[string]string{"reason": "unknown_alias"}); v != 1 {
		t.Errorf("unknown_alias = %v, want 1", v)
	}
	// One NCMD for the gap, one for the unknown alias (rebirth_interval 0).
	testutil.WaitFor(t, 5*time.Second, "rebirth NCMDs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(rebirths) == 2
	})
	if rebirths[0] != "spBv1.0/plant1/NCMD/press1" {
		t.Errorf("rebirth topic = %q", rebirths[0])
	}
}

func renderLines(ss []signal.Sample) string {
	var b strings.Builder
	for i := range ss {
		b.WriteString(render(ss[i : i+1]))
		b.WriteByte('\n')
	}
	return b.String()
}

// TestSparkplugBirthSurvivesRestart: NDATA queued at the broker while the agent was down refers
// to aliases only; the birth saved before it was acknowledged still names them after a restart.
func TestSparkplugBirthSurvivesRestart(t *testing.T) {
	b := startMochi(t)
	dir := t.TempDir()
	cfg := testConfig(b.url(), Subscription{Topic: "spBv1.0/plant1/#", Format: FormatSparkplugB})
	cfg.ClientID = "sp-restart"
	pub := newPublisher(t, b.url(), "edge")
	e := &edgeNode{t: t, cl: pub, group: "plant1", node: "n1", now: 1700000000000}

	run := func() (*memEmitter, *prometheus.Registry, func()) {
		em := &memEmitter{}
		reg := prometheus.NewRegistry()
		c, stop := startCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: dir, Metrics: reg}, em)
		testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
		return em, reg, stop
	}
	em, _, stop := run()
	e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "Temp", alias: 7, dt: sparkplug.Double, value: 20.0})
	testutil.WaitFor(t, 5*time.Second, "birth sample", func() bool { return em.count() == 1 })
	stop()
	e.send("NDATA", "", metricSpec{alias: 7, noName: true, value: 23.5})
	em, reg, stop := run()
	defer stop()
	testutil.WaitFor(t, 5*time.Second, "NDATA after restart", func() bool { return em.count() >= 1 })
	if got := render(withRecvTime(em.all())); got != "plant1.n1.Temp=float/23.5" {
		t.Errorf("sample after restart = %s", got)
	}
	if v := counterValue(t, reg, "gemba_mqtt_bad_payloads_total", nil); v != 0 {
		t.Errorf("bad payloads after restart = %v, want 0", v)
	}
	if v := counterValue(t, reg, "gemba_mqtt_sparkplug_rebirth_requests_total", nil); v != 0 {
		t.Errorf("rebirth requests = %v, want 0", v)
	}
}

// After a broker restart, redelivered device data can arrive after the node's new NBIRTH but before
// the device's DBIRTH: the device's aliases must still resolve, since the data was acknowledged to
// its publisher.
func TestSparkplugDeviceAliasesSurviveNodeRebirth(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "spBv1.0/plant1/#", Format: FormatSparkplugB})
	cfg.ClientID = "sp-rebirth"
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir(), Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))

	e := &edgeNode{t: t, cl: newPublisher(t, b.url(), "edge"), group: "plant1", node: "n1", now: 1700000000000}
	e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "Uptime", alias: 1, dt: sparkplug.Double, value: 1.0})
	e.send("DBIRTH", "press", metricSpec{name: "Temp", alias: 2, dt: sparkplug.Double, value: 20.0})
	testutil.WaitFor(t, 5*time.Second, "births", func() bool { return em.count() == 2 })
	e.seq = 0 // the node restarts: a new NBIRTH with seq 0, then old device data, then the DBIRTH
	e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(1)},
		metricSpec{name: "Uptime", alias: 1, dt: sparkplug.Double, value: 0.0})
	e.send("DDATA", "press", metricSpec{alias: 2, noName: true, value: 21.5})
	testutil.WaitFor(t, 5*time.Second, "device data", func() bool { return em.count() == 4 })
	if got := render(withRecvTime(em.all()[3:])); got != "plant1.n1.press.Temp=float/21.5" {
		t.Errorf("device data after node rebirth = %s", got)
	}
	if v := counterValue(t, reg, "gemba_mqtt_bad_payloads_total", nil); v != 0 {
		t.Errorf("bad payloads = %v, want 0", v)
	}
}
