package signal

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"regexp"
	"testing"
	"time"
)

// The examples in docs/wire-format.md are produced by the real encoder: this test renders them and
// fails when the document differs; `go test ./signal -run TestWireFormatExamples -update-docs`
// rewrites the blocks between the BEGIN/END markers.
var updateDocs = flag.Bool("update-docs", false, "rewrite the generated examples in docs/wire-format.md")

const wireFormatDoc = "../docs/wire-format.md"

func docExamples() map[string][]byte {
	at := time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC)
	h := Header{Schema: SchemaVersion, Agent: "gw-line1", Site: "plant1", Incarnation: "5be1c0de2f6a9d31", ConfigVersion: "9f2c4e1a7b3d5608"}

	hs := h
	hs.Stream, hs.FirstSeq, hs.LastSeq, hs.Count = StreamSamples, 48213, 48213, 5
	hs.Oldest, hs.Newest, hs.Sent = at, at.Add(1900*time.Millisecond), at.Add(2*time.Second+312*time.Millisecond)
	samples := []Sample{
		{Signal: "line1.press.temperature", Time: at, Value: Float(71.25), Source: "press-opcua:ns=2;s=Temperature"},
		{Signal: "line1.press.parts", Time: at.Add(500 * time.Millisecond), Value: Int(120431), Source: "press-opcua:ns=2;s=PartCount"},
		{Signal: "line1.press.running", Time: at.Add(time.Second), Value: Bool(true), Quality: Uncertain,
			Reason: "UncertainLastUsableValue", Source: "press-opcua:ns=2;s=Running"},
		{Signal: "line1.oven.sku", Time: at.Add(1500 * time.Millisecond), Value: String("SKU-4711"),
			Source: "line1-mqtt:plant1/line1/oven/telemetry", Labels: Labels{{"machine", "oven"}, {"line", "line1"}}},
		{Signal: "line1.oven.zone2_temp", Time: at.Add(1900 * time.Millisecond), Quality: Bad,
			Reason: "BadSensorFailure", Source: "oven-opcua:ns=3;s=Zone2.Temp"},
	}

	hf := h
	hf.Stream, hf.FirstSeq, hf.LastSeq, hf.Count = StreamFeatures, 977, 977, 2
	hf.Oldest, hf.Newest = at.Add(time.Minute), at.Add(time.Minute)
	hf.Sent = at.Add(3*time.Hour + 14*time.Minute + 5*time.Second)
	hf.Historical, hf.Delay = true, hf.Sent.Sub(hf.Newest)
	features := []Feature{
		{Signal: "line1.press.temperature", Name: "mean", WindowStart: at, WindowEnd: at.Add(time.Minute),
			Value: 71.4375, Count: 600},
		{Signal: "line1.press.parts", Name: "delta", WindowStart: at, WindowEnd: at.Add(time.Minute), Value: 38,
			Count: 58, Labels: Labels{{"sku", "SKU-4711"}}, Partial: true},
	}

	ht := h
	ht.Stream, ht.FirstSeq, ht.LastSeq, ht.Count = StreamStatus, 361, 361, 1
	ht.Oldest, ht.Newest, ht.Sent = at, at, at
	status := []Status{{
		Time: at, Agent: "gw-line1", Site: "plant1", Version: "v0.1.0", Commit: "1a2b3c4", ConfigVersion: "9f2c4e1a7b3d5608",
		Uptime: 1803.2,
		Buffer: map[string]BufferState{
			"samples":  {Records: 12, Bytes: 48211, OldestAge: 0.8},
			"features": {Records: 0, Bytes: 0, OldestAge: 0, Dropped: map[string]uint64{"age": 3}},
		},
		Collectors: map[string]CollectorState{
			"press-opcua": {State: "running", Samples: 180412},
			"line1-mqtt":  {State: "backoff", Error: "dial tcp 10.0.4.2:1883: connect: connection refused", Restarts: 4},
		},
	}}

	return map[string][]byte{
		"samples":  AppendBatch(nil, &Batch{Header: hs, Samples: samples}),
		"features": AppendBatch(nil, &Batch{Header: hf, Features: features}),
		"status":   AppendBatch(nil, &Batch{Header: ht, Status: status}),
	}
}

var exampleBlock = regexp.MustCompile("(?s)(<!-- BEGIN example ([a-z]+) -->\n).*?(<!-- END example -->)")

func TestWireFormatExamples(t *testing.T) {
	examples := docExamples()
	sch := compileSchema(t)
	rendered := map[string]string{}
	for name, enc := range examples {
		if err := validate(sch, enc); err != nil {
			t.Fatalf("example %s does not match the schema: %v", name, err)
		}
		if _, err := DecodeBatch(enc); err != nil {
			t.Fatalf("example %s does not decode: %v", name, err)
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, enc, "", "  "); err != nil {
			t.Fatal(err)
		}
		rendered[name] = "```json\n" + pretty.String() + "\n```\n"
	}
	doc, err := os.ReadFile(wireFormatDoc)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	out := exampleBlock.ReplaceAllFunc(doc, func(m []byte) []byte {
		sub := exampleBlock.FindSubmatch(m)
		name := string(sub[2])
		found[name] = true
		block, ok := rendered[name]
		if !ok {
			t.Errorf("%s has an example block %q the test does not produce", wireFormatDoc, name)
			return m
		}
		return append(append(append([]byte{}, sub[1]...), block...), sub[3]...)
	})
	for name := range rendered {
		if !found[name] {
			t.Errorf("%s has no block for example %q", wireFormatDoc, name)
		}
	}
	if *updateDocs {
		if err := os.WriteFile(wireFormatDoc, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(out, doc) {
		t.Errorf("examples in %s are stale; run go test ./signal -run TestWireFormatExamples -update-docs", wireFormatDoc)
	}
}
