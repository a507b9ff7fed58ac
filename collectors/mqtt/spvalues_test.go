package mqtt

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// wireValues renders samples as the wire writes them (signal.AppendSampleJSON), without the time,
// source and labels: the value mapping only, one sample per line.
func wireValues(ss []signal.Sample) string {
	var b bytes.Buffer
	for _, s := range ss {
		s.Time, s.Source, s.Labels = time.Time{}, "", nil
		line := signal.AppendSampleJSON(nil, &s)
		b.Write(bytes.Replace(line, []byte(`,"ts":null`), nil, 1))
		b.WriteByte('\n')
	}
	return b.String()
}

// docBlock is the text between <!-- name:start --> and <!-- name:end --> in a doc, without the
// code fence around it.
func docBlock(t *testing.T, file, name string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "<!-- "+name+":start -->"), strings.Index(s, "<!-- "+name+":end -->")
	if i < 0 || j < i {
		t.Fatalf("%s: markers <!-- %s:start/end --> not found", file, name)
	}
	s = strings.TrimSpace(s[i+len("<!-- "+name+":start -->") : j])
	s = strings.TrimPrefix(strings.TrimSuffix(s, "```"), "```json")
	return strings.TrimSpace(s) + "\n"
}

// TestSparkplugValueMapping sends every Sparkplug datatype through a real broker and compares the
// collector's samples, encoded as the wire encodes them, with the table in docs/wire-format.md.
// Template and File make no sample: they are counted (bad_payloads_total{reason=sparkplug_unsupported}).
func TestSparkplugValueMapping(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "spBv1.0/plant1/#", Format: FormatSparkplugB, Signal: "{metric}"})
	cfg.Sparkplug.RebirthInterval = 0
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))

	le := binary.LittleEndian
	i16 := le.AppendUint16(le.AppendUint16(nil, uint16(0xFFFF)), 300) // -1, 300
	u64 := le.AppendUint64(le.AppendUint64(nil, 7), math.MaxUint64)
	f64 := le.AppendUint64(nil, math.Float64bits(2.5))
	dts := le.AppendUint64(nil, 1700000000123)
	bools := append(le.AppendUint32(nil, 3), 0b1010_0000) // true, false, true
	ds := &sparkplug.Payload_DataSet{
		NumOfColumns: proto.Uint64(2), Columns: []string{"sku", "qty"},
		Types: []uint32{uint32(sparkplug.String), uint32(sparkplug.UInt64)},
		Rows: []*sparkplug.Payload_DataSet_Row{
			{Elements: []*sparkplug.Payload_DataSet_DataSetValue{
				{Value: &sparkplug.Payload_DataSet_DataSetValue_StringValue{StringValue: "A-1"}},
				{Value: &sparkplug.Payload_DataSet_DataSetValue_LongValue{LongValue: 12}}}},
			{Elements: []*sparkplug.Payload_DataSet_DataSetValue{
				{Value: &sparkplug.Payload_DataSet_DataSetValue_StringValue{StringValue: "B-2"}},
				{Value: &sparkplug.Payload_DataSet_DataSetValue_LongValue{LongValue: 1 << 63}}}},
		},
	}
	pub := newPublisher(t, b.url(), "edge-values")
	e := &edgeNode{t: t, cl: pub, group: "plant1", node: "n1", now: 1700000000000}
	e.send("NBIRTH", "",
		metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "started", dt: sparkplug.DateTime, value: uint64(1700000000123)},
		metricSpec{name: "big", dt: sparkplug.UInt64, value: uint64(math.MaxUint64)},
		metricSpec{name: "small", dt: sparkplug.UInt64, value: uint64(42)},
		metricSpec{name: "raw", dt: sparkplug.Bytes, value: []byte{0, 1, 0xFE, 0xFF}},
		metricSpec{name: "i16", dt: sparkplug.Int16Array, value: i16},
		metricSpec{name: "u64", dt: sparkplug.UInt64Array, value: u64},
		metricSpec{name: "f64", dt: sparkplug.DoubleArray, value: f64},
		metricSpec{name: "dts", dt: sparkplug.DateTimeArray, value: dts},
		metricSpec{name: "flags", dt: sparkplug.BooleanArray, value: bools},
		metricSpec{name: "names", dt: sparkplug.StringArray, value: []byte("a\x00bc\x00")},
		metricSpec{name: "orders", dt: sparkplug.DataSet, value: ds},
		metricSpec{name: "udt", dt: sparkplug.Template, value: &sparkplug.Payload_Template{Version: proto.String("1")}},
		metricSpec{name: "file", dt: sparkplug.File, value: []byte("%PDF")},
	)
	const want = 19 // 4 scalars, 2+2+1+1+3+2 array elements, 4 DataSet cells (bdSeq is bookkeeping)
	testutil.WaitFor(t, 10*time.Second, "samples of the birth", func() bool { return len(em.all()) >= want })
	got := wireValues(em.all())
	doc := docBlock(t, "../../docs/wire-format.md", "sparkplug-values")
	if got != doc {
		t.Errorf("samples differ from docs/wire-format.md (sparkplug-values block)\n got:\n%s\nwant:\n%s", got, doc)
	}
	if v := counterValue(t, reg, "gemba_mqtt_bad_payloads_total", map[string]string{"reason": reasonUnsupported}); v != 2 {
		t.Errorf("sparkplug_unsupported = %v, want 2 (the Template and the File)", v)
	}
}

// TestSparkplugArrayCut: elements beyond maxSpElements are counted, not silently dropped.
func TestSparkplugArrayCut(t *testing.T) {
	b := make([]byte, 100)
	els, cut, ok, err := spElements(&sparkplug.Payload_Metric{Value: &sparkplug.Payload_Metric_BytesValue{BytesValue: b}}, sparkplug.UInt8Array)
	if !ok || err != nil || len(els) != maxSpElements || cut != 100-maxSpElements {
		t.Fatalf("UInt8Array of 100: %d elements, cut %d, ok %v, err %v", len(els), cut, ok, err)
	}
	if _, _, ok, err := spElements(&sparkplug.Payload_Metric{Value: &sparkplug.Payload_Metric_BytesValue{BytesValue: b[:3]}}, sparkplug.Int16Array); !ok || err == nil {
		t.Errorf("an Int16Array of 3 bytes was accepted")
	}
	if _, err := dateTimeValue(math.MaxUint64); err == nil {
		t.Errorf("a DateTime after year 9999 was accepted")
	}
}
