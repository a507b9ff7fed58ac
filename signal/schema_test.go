package signal

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaPath = "../docs/batch.schema.json"

func compileSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	path, err := filepath.Abs(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat() // date-time is checked, not just annotated
	sch, err := c.Compile(path)
	if err != nil {
		t.Fatalf("compile %s: %v", schemaPath, err)
	}
	return sch
}

func validate(sch *jsonschema.Schema, enc []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(enc))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// schemaBatches are real encoder outputs covering every value type, quality, label shape, time edge,
// the three record kinds and the header variants.
func schemaBatches() map[string][]byte {
	var samples []Sample
	for _, c := range valueCases() {
		samples = append(samples, Sample{Signal: c.name, Time: t0, Value: c.v})
	}
	samples = append(samples,
		Sample{Signal: "bad", Time: t0, Quality: Bad, Reason: "BadCommunicationError", Source: "opcua-press/ns=2;s=T"},
		Sample{Signal: "unc", Time: t0, Value: Float(1), Quality: Uncertain, Reason: "UncertainInitialValue"},
		Sample{Signal: "zero time", Value: Int(1)},
		Sample{Signal: "year 0", Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), Value: Int(1)},
		Sample{Signal: "year 10000", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Value: Int(1)},
		Sample{Signal: "local", Time: t0.In(time.FixedZone("CET", 3600)), Value: Int(1)},
		Sample{Signal: "labels", Time: t0, Value: Bool(true), Labels: Labels{{"z", "1"}, {"a", "\xff"}, {"", ""}}},
		Sample{Signal: "odd \"\x00\xff\u2028", Time: t0, Value: String("\\"), Reason: "\n", Source: "\t"},
	)
	features := []Feature{
		{Signal: "line1.press.temperature", Name: "mean", WindowStart: t0, WindowEnd: t0.Add(time.Minute), Value: 71.3, Count: 600},
		{Signal: "s", Name: "p95", WindowStart: t0, WindowEnd: t0.Add(time.Minute), Value: math.NaN(), Count: 0, Partial: true,
			Labels: Labels{{"sku", "A-1"}}},
		{Signal: "s", Name: "rate", Value: math.Inf(1), Count: math.MinInt64},
		{Signal: "s", Name: "min", Value: -math.MaxFloat64, Count: math.MaxInt64},
	}
	status := []Status{
		{Time: t0, Agent: "gw-line1", Site: "plant1", Version: "v0.1.0", Commit: "abc", ConfigVersion: "cfg", Uptime: 12.5,
			Buffer: map[string]BufferState{"samples": {Records: 1, Bytes: math.MaxUint64, OldestAge: 0.5,
				Dropped: map[string]uint64{"age": 1}}},
			Collectors: map[string]CollectorState{"opcua": {State: "backoff", Error: "refused", Restarts: 2, Samples: 3}}},
		{Agent: "a", Uptime: math.NaN()},
	}
	hist := testHeader(StreamSamples, len(samples))
	hist.Historical, hist.Delay, hist.FirstSeq, hist.LastSeq = true, 5*time.Minute, math.MaxUint64, math.MaxUint64
	noTimes := testHeader(StreamFeatures, 0)
	noTimes.Oldest, noTimes.Newest = time.Time{}, time.Time{}
	return map[string][]byte{
		"samples":         AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, len(samples)), Samples: samples}),
		"samples typical": AppendBatch(nil, &Batch{Header: benchHeader(100), Samples: typicalSamples(100)}),
		"historical":      AppendBatch(nil, &Batch{Header: hist, Samples: samples[:3]}),
		"features":        AppendBatch(nil, &Batch{Header: testHeader(StreamFeatures, len(features)), Features: features}),
		"features empty":  AppendBatch(nil, &Batch{Header: noTimes}),
		"status":          AppendBatch(nil, &Batch{Header: testHeader(StreamStatus, len(status)), Status: status}),
		"status empty":    AppendBatch(nil, &Batch{Header: testHeader(StreamStatus, 0)}),
		"from chunk": func() []byte {
			c, err := ParseChunk(AppendChunk(nil, &Chunk{Stream: StreamSamples, Count: 2,
				Records: AppendSamplesJSON(nil, samples[:2])}))
			if err != nil {
				panic(err)
			}
			h := testHeader(c.Stream, c.Count)
			return AppendEnvelope(nil, &h, c.Records)
		}(),
	}
}

func TestSchemaAcceptsEncodedBatches(t *testing.T) {
	sch := compileSchema(t)
	for name, enc := range schemaBatches() {
		t.Run(name, func(t *testing.T) {
			if err := validate(sch, enc); err != nil {
				t.Fatalf("%s\n%v", enc, err)
			}
			if _, err := DecodeBatch(enc); err != nil {
				t.Fatalf("decoder rejects what the schema accepts: %v", err)
			}
		})
	}
}

// TestSchemaRejectsMangledBatches: the schema is not vacuous; each mangling of a real batch fails.
func TestSchemaRejectsMangledBatches(t *testing.T) {
	sch := compileSchema(t)
	samples := string(AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, 1),
		Samples: []Sample{{Signal: "a", Time: t0, Value: Float(1.5), Labels: Labels{{"k", "v"}}}}}))
	features := string(AppendBatch(nil, &Batch{Header: testHeader(StreamFeatures, 1),
		Features: []Feature{{Signal: "a", Name: "mean", WindowStart: t0, WindowEnd: t0, Value: 1, Count: 1}}}))
	status := string(AppendBatch(nil, &Batch{Header: testHeader(StreamStatus, 1),
		Status: []Status{{Time: t0, Agent: "a", Collectors: map[string]CollectorState{"c": {State: "running"}}}}}))
	if err := validate(sch, []byte(samples)); err != nil {
		t.Fatalf("the unmangled batch must be valid: %v", err)
	}
	mangle := func(doc, old, new string) string {
		t.Helper()
		if !strings.Contains(doc, old) {
			t.Fatalf("%q not in %s", old, doc)
		}
		return strings.Replace(doc, old, new, 1)
	}
	cases := map[string]string{
		"schema 1":               mangle(samples, `"schema":2`, `"schema":1`),
		"schema missing":         mangle(samples, `"schema":2,`, ``),
		"incarnation missing":    mangle(samples, `"incarnation":"5be1c0de2f6a9d31",`, ``),
		"incarnation with colon": mangle(samples, `"incarnation":"5be1c0de2f6a9d31"`, `"incarnation":"5b:e1"`),
		"unknown stream":         mangle(samples, `"stream":"samples"`, `"stream":"logs"`),
		"agent with a dot":       mangle(samples, `"agent":"gw-line1"`, `"agent":"gw.line1"`),
		"negative seq":           mangle(samples, `"first_seq":10`, `"first_seq":-10`),
		"seq above uint64":       mangle(samples, `"first_seq":10`, `"first_seq":18446744073709551616`),
		"count as string":        mangle(samples, `"count":1`, `"count":"1"`),
		"extra envelope field":   mangle(samples, `"count":1`, `"count":1,"priority":9`),
		"records missing":        samples[:strings.Index(samples, `,"records"`)] + `}`,
		"sent with offset":       mangle(samples, `"sent":"2026-11-24T21:09:45.123456789Z"`, `"sent":"2026-11-24T22:09:45.123456789+01:00"`),
		"sent not a date":        mangle(samples, `"sent":"2026-11-24T21:09:45.123456789Z"`, `"sent":"2026-13-24T21:09:45Z"`),
		"sample without ts":      mangle(samples, `,"ts":"2026-11-24T21:09:43.123456789Z"`, ``),
		"sample two values":      mangle(samples, `"f":1.5`, `"f":1.5,"i":1`),
		"sample NaN lower case":  mangle(samples, `"f":1.5`, `"f":"nan"`),
		"sample int fraction":    mangle(samples, `"f":1.5`, `"i":1.5`),
		"sample int above int64": mangle(samples, `"f":1.5`, `"i":9223372036854775808`),
		"sample quality unknown": mangle(samples, `"f":1.5`, `"f":1.5,"q":"ok"`),
		"sample label number":    mangle(samples, `"k":"v"`, `"k":1`),
		"sample unknown field":   mangle(samples, `"f":1.5`, `"f":1.5,"unit":"C"`),
		"feature in samples":     mangle(features, `"stream":"features"`, `"stream":"samples"`),
		"feature without n":      mangle(features, `,"n":1`, ``),
		"feature partial string": mangle(features, `"n":1`, `"n":1,"partial":"yes"`),
		"sample in features":     mangle(samples, `"stream":"samples"`, `"stream":"features"`),
		"status null time":       mangle(status, `"time":"2026-11-24T21:09:43.123456789Z"`, `"time":null`),
		"status collector bad":   mangle(status, `"restarts":0`, `"restarts":-1`),
		"status collector state": mangle(status, `"state":"running"`, `"state":"connected"`),
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := validate(sch, []byte(doc)); err == nil {
				t.Fatalf("schema accepted %s", doc)
			}
		})
	}
}

// TestSchemaCollectorStatesAreTheCodes: the schema's enum of collector states is exactly
// CollectorStates (what the agent writes), and docs/wire-format.md names each of them.
func TestSchemaCollectorStatesAreTheCodes(t *testing.T) {
	raw, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Defs struct {
			CollectorState struct {
				Properties struct {
					State struct {
						Enum []string `json:"enum"`
					} `json:"state"`
				} `json:"properties"`
			} `json:"collectorState"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if got := doc.Defs.CollectorState.Properties.State.Enum; !slices.Equal(got, CollectorStates) {
		t.Errorf("schema enum %v, code %v", got, CollectorStates)
	}
	wire, err := os.ReadFile("../docs/wire-format.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range CollectorStates {
		if !bytes.Contains(wire, []byte("| `"+st+"` |")) {
			t.Errorf("docs/wire-format.md has no row for collector state %q", st)
		}
	}
}
