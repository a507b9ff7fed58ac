package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"google.golang.org/protobuf/proto"

	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/internal/testutil"
)

type received struct {
	mu   sync.Mutex
	msgs map[string][][]byte // by topic
}

func (r *received) add(topic string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[topic] = append(r.msgs[topic], b)
}

func (r *received) get(topic string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[topic]
}

// TestProtocols runs the default plant against an embedded broker and its own OPC UA server and reads
// every protocol back with real clients.
func TestProtocols(t *testing.T) {
	mqttPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	opcPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := StartBroker(fmt.Sprintf("127.0.0.1:%d", mqttPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	url := fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)

	rx := &received{msgs: map[string][][]byte{}}
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("sim-test-sub").SetConnectTimeout(2 * time.Second))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	for _, f := range []string{"plant1/#", "spBv1.0/plant1/#"} {
		if tok := sub.Subscribe(f, 1, func(_ paho.Client, m paho.Message) { rx.add(m.Topic(), m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}

	s, err := New(Options{Plant: Config{Seed: 1, Tick: 100 * time.Millisecond, Speed: 10}, OPCUA: fmt.Sprintf("127.0.0.1:%d", opcPort), Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 5 {
		s.Step()
	}
	testutil.WaitFor(t, 10*time.Second, "JSON telemetry of line2.press", func() bool { return len(rx.get("plant1/line2/press/telemetry")) >= 5 })

	// JSON: every field, typed, with the message time.
	var doc map[string]any
	if err := json.Unmarshal(rx.get("plant1/line2/press/telemetry")[4], &doc); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ts", "state", "sku", "parts", "fault", "temperature", "vibration", "power"} {
		if _, ok := doc[f]; !ok {
			t.Errorf("JSON payload without %q: %v", f, doc)
		}
	}
	if _, ok := doc["state"].(string); !ok {
		t.Errorf("state is %T", doc["state"])
	}

	// Sparkplug: a birth per node and device (the connect triggers one), then data by alias, with
	// aliases unique across the node.
	testutil.WaitFor(t, 10*time.Second, "DDATA of line1.pack", func() bool { return len(rx.get("spBv1.0/plant1/DDATA/edge1/line1.pack")) >= 4 })
	if len(rx.get("spBv1.0/plant1/NBIRTH/edge1")) != 1 {
		t.Fatalf("NBIRTH count = %d, want 1", len(rx.get("spBv1.0/plant1/NBIRTH/edge1")))
	}
	aliases := map[uint64]string{}
	for _, dev := range []string{"line1.pack", "line2.pack"} {
		births := rx.get("spBv1.0/plant1/DBIRTH/edge1/" + dev)
		if len(births) != 1 {
			t.Fatalf("DBIRTH of %s: %d", dev, len(births))
		}
		var p sparkplug.Payload
		if err := proto.Unmarshal(births[0], &p); err != nil {
			t.Fatal(err)
		}
		for _, m := range p.Metrics {
			if other, dup := aliases[m.GetAlias()]; dup {
				t.Fatalf("alias %d used by %s and %s/%s", m.GetAlias(), other, dev, m.GetName())
			}
			aliases[m.GetAlias()] = dev + "/" + m.GetName()
		}
	}
	var data sparkplug.Payload
	if err := proto.Unmarshal(rx.get("spBv1.0/plant1/DDATA/edge1/line1.pack")[0], &data); err != nil {
		t.Fatal(err)
	}
	if len(data.Metrics) != basePoints || data.Metrics[0].Name != nil || !strings.HasPrefix(aliases[data.Metrics[0].GetAlias()], "line1.pack/") {
		t.Fatalf("DDATA metrics: %v", data.Metrics)
	}

	// A host's rebirth request brings a new NBIRTH with seq 0.
	cmd, _ := proto.Marshal(&sparkplug.Payload{Metrics: []*sparkplug.Payload_Metric{{Name: proto.String("Node Control/Rebirth"),
		Datatype: proto.Uint32(uint32(sparkplug.Boolean)), Value: &sparkplug.Payload_Metric_BooleanValue{BooleanValue: true}}}})
	sub.Publish("spBv1.0/plant1/NCMD/edge1", 1, false, cmd).WaitTimeout(5 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "NBIRTH after the rebirth request", func() bool {
		s.Step()
		return len(rx.get("spBv1.0/plant1/NBIRTH/edge1")) == 2
	})
	var nb sparkplug.Payload
	if err := proto.Unmarshal(rx.get("spBv1.0/plant1/NBIRTH/edge1")[1], &nb); err != nil || nb.GetSeq() != 0 {
		t.Fatalf("rebirth NBIRTH seq %d, err %v", nb.GetSeq(), err)
	}

	// OPC UA: the server holds the plant's current values.
	c, err := opcua.NewClient(s.OPCUAEndpoint(), opcua.SecurityMode(ua.MessageSecurityModeNone))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ns, err := c.FindNamespace(ctx, NamespaceURI)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	var press *Machine
	for _, m := range s.plant.Machines {
		if m.Signal("") == "line1.press." {
			press = m
		}
	}
	wantParts := press.Points[pParts].I
	s.mu.Unlock()
	resp, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewStringNodeID(ns, "line1.press.parts"), AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Results[0].Value.Value(); got != wantParts {
		t.Fatalf("OPC UA line1.press.parts = %v, want %d", got, wantParts)
	}

	// The ledger holds what the broker acknowledged: every JSON and Sparkplug device message.
	s.Close()
	st := s.Stats()
	if st.MQTTAcked == 0 || st.MQTTFailed != 0 || st.AckedSamples == 0 {
		t.Fatalf("stats %+v", st)
	}
	snap := s.Ledger().Snapshot()
	if got := len(snap["line2.press"].Times); got < 5 {
		t.Fatalf("ledger holds %d line2.press messages, want >= 5", got)
	}
	for src, l := range snap {
		for i := 1; i < len(l.Times); i++ {
			if l.Times[i] == l.Times[i-1] {
				t.Fatalf("%s: two messages at %d ms: times must identify samples", src, l.Times[i])
			}
		}
	}
}

func TestCollectorsYAMLNamesEveryOPCUASignal(t *testing.T) {
	p := NewPlant(DefaultConfig())
	y := CollectorsYAML(p, "opc.tcp://127.0.0.1:4840", "tcp://127.0.0.1:1883")
	for _, m := range p.Machines {
		if m.Protocol != OPCUA {
			continue
		}
		for _, pt := range m.Points {
			if !strings.Contains(y, "s="+m.Signal(pt.Field)+"\"") {
				t.Errorf("no node for %s", m.Signal(pt.Field))
			}
		}
	}
	for _, want := range []string{"format: json", "format: sparkplugb", "plant1/+/+/telemetry"} {
		if !strings.Contains(y, want) {
			t.Errorf("collectors YAML without %q", want)
		}
	}
}

// TestStartOPCUAAfterClose: a StartOPCUA that comes after Close (a chaos scenario ending while the
// simulator shuts down) must not start a server that nobody closes.
func TestStartOPCUAAfterClose(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s, err := New(Options{Plant: Config{Seed: 1, Tick: 100 * time.Millisecond, Speed: 10}, OPCUA: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	listening := func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	if !listening() {
		t.Fatal("OPC UA server not listening after New")
	}
	s.StopOPCUA()
	s.Close()
	if err := s.StartOPCUA(); err == nil {
		t.Error("StartOPCUA after Close: no error")
	}
	if listening() {
		t.Error("an OPC UA server is listening after Close")
	}
}
