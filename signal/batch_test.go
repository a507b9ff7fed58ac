package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestHeaderRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		h    Header
		want func(*Header) // the documented normalisation, if any
	}{
		{"typical", testHeader(StreamSamples, 0), nil},
		{"historical", func() Header {
			h := testHeader(StreamFeatures, 0)
			h.Historical, h.Delay = true, 3*time.Hour+1500*time.Millisecond
			return h
		}(), nil},
		{"delay truncates to ms", func() Header {
			h := testHeader(StreamSamples, 0)
			h.Historical, h.Delay = true, 2*time.Second+999999*time.Nanosecond
			return h
		}(), func(h *Header) { h.Delay = 2 * time.Second }},
		{"max sequence", func() Header {
			h := testHeader(StreamSamples, 0)
			h.FirstSeq, h.LastSeq = math.MaxUint64-1, math.MaxUint64
			return h
		}(), nil},
		{"zero times and empty strings", Header{Schema: SchemaVersion, Stream: StreamFeatures, Incarnation: "i"}, nil},
		{"odd strings", func() Header {
			h := testHeader(StreamSamples, 0)
			h.Agent, h.Site, h.ConfigVersion = "gw \"1\"", "Werk Süd", "\xff"
			return h
		}(), func(h *Header) { h.Agent, h.Site, h.ConfigVersion = "gw \"1\"", "Werk Süd", "\uFFFD" }},
		{"local times", func() Header {
			h := testHeader(StreamSamples, 0)
			h.Sent = time.Now()
			h.Oldest = t0.In(time.FixedZone("X", -7*3600))
			return h
		}(), func(h *Header) { h.Sent, h.Oldest = h.Sent.UTC(), h.Oldest.UTC() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.h
			if c.want != nil {
				c.want(&want)
			}
			got := decodeBoth(t, AppendBatch(nil, &Batch{Header: c.h}))
			for _, tm := range []struct {
				n    string
				g, w time.Time
			}{{"oldest", got.Oldest, want.Oldest}, {"newest", got.Newest, want.Newest}, {"sent", got.Sent, want.Sent}} {
				sameTime(t, tm.n, tm.g, tm.w)
			}
			got.Oldest, got.Newest, got.Sent = time.Time{}, time.Time{}, time.Time{}
			want.Oldest, want.Newest, want.Sent = time.Time{}, time.Time{}, time.Time{}
			if !reflect.DeepEqual(got.Header, want) {
				t.Fatalf("header:\n got %+v\nwant %+v", got.Header, want)
			}
		})
	}
}

// TestEnvelopeWithEncodingJSON reads the envelope with encoding/json alone: the field names and types
// a consumer in another language relies on.
func TestEnvelopeWithEncodingJSON(t *testing.T) {
	h := testHeader(StreamSamples, 1)
	h.Historical, h.Delay, h.FirstSeq, h.LastSeq = true, 90*time.Second, 1<<63, 1<<63+5
	enc := AppendBatch(nil, &Batch{Header: h, Samples: []Sample{{Signal: "a", Time: t0, Value: Int(1)}}})
	var env struct {
		Schema        int               `json:"schema"`
		Agent         string            `json:"agent"`
		Site          string            `json:"site"`
		Stream        string            `json:"stream"`
		ConfigVersion string            `json:"config_version"`
		Incarnation   string            `json:"incarnation"`
		FirstSeq      uint64            `json:"first_seq"`
		LastSeq       uint64            `json:"last_seq"`
		Count         int               `json:"count"`
		Historical    bool              `json:"historical"`
		DelayMS       int64             `json:"delay_ms"`
		Oldest        time.Time         `json:"oldest"`
		Newest        time.Time         `json:"newest"`
		Sent          time.Time         `json:"sent"`
		Records       []json.RawMessage `json:"records"`
	}
	dec := json.NewDecoder(bytes.NewReader(enc))
	dec.DisallowUnknownFields() // the envelope has exactly these fields
	if err := dec.Decode(&env); err != nil {
		t.Fatalf("%v\n%s", err, enc)
	}
	if env.Schema != SchemaVersion || env.Agent != h.Agent || env.Site != h.Site || env.Stream != "samples" ||
		env.ConfigVersion != h.ConfigVersion || env.Incarnation != h.Incarnation || env.FirstSeq != h.FirstSeq || env.LastSeq != h.LastSeq ||
		env.Count != 1 || !env.Historical || env.DelayMS != 90000 || !env.Oldest.Equal(h.Oldest) ||
		!env.Newest.Equal(h.Newest) || !env.Sent.Equal(h.Sent) || len(env.Records) != 1 {
		t.Fatalf("encoding/json reads %+v from\n%s", env, enc)
	}
	if !strings.Contains(string(enc), `"sent":"2026-11-24T21:09:45.123456789Z"`) {
		t.Fatalf("times must be RFC 3339 UTC with nanoseconds: %s", enc)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	full := Status{
		Time: t0, Agent: "gw-line1", Site: "plant1", Version: "v0.1.0", Commit: "abc123", ConfigVersion: "cfg-1",
		Uptime: 3600.5,
		Buffer: map[string]BufferState{
			"samples":  {Records: 12, Bytes: 4096, OldestAge: 1.25, Dropped: map[string]uint64{"age": 3, "bytes": 1}},
			"features": {},
		},
		Collectors: map[string]CollectorState{
			"opcua-press": {State: "running", Restarts: 1, Samples: 99},
			"mqtt-line1":  {State: "backoff", Error: "dial tcp: connection refused", Restarts: 4},
		},
	}
	cases := []struct {
		name      string
		in, want  Status
		normalise bool
	}{
		{name: "full", in: full, want: full},
		{name: "minimal", in: Status{Time: t0, Agent: "a"}, want: Status{Time: t0, Agent: "a"}},
		{name: "zero time", in: Status{Agent: "a"}, want: Status{Agent: "a"}},
		{name: "local time reads as UTC", in: Status{Time: time.Now().In(time.FixedZone("X", 3600)), Agent: "a"}, normalise: true},
		{name: "non-finite ages read as 0", in: Status{Time: t0, Uptime: math.Inf(1),
			Buffer: map[string]BufferState{"samples": {OldestAge: math.NaN()}}},
			want: Status{Time: t0, Buffer: map[string]BufferState{"samples": {}}}},
		{name: "empty maps read as nil", in: Status{Time: t0, Buffer: map[string]BufferState{},
			Collectors: map[string]CollectorState{}}, want: Status{Time: t0}},
	}
	var all, wantAll []Status
	for _, c := range cases {
		if c.normalise {
			c.want = c.in
			c.want.Time = c.in.Time.UTC()
		}
		t.Run(c.name, func(t *testing.T) {
			got := decodeBoth(t, AppendBatch(nil, &Batch{Header: testHeader(StreamStatus, 1), Status: []Status{c.in}}))
			if len(got.Status) != 1 {
				t.Fatalf("%d status records", len(got.Status))
			}
			sameTime(t, "time", got.Status[0].Time, c.want.Time)
			got.Status[0].Time, c.want.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got.Status[0], c.want) {
				t.Fatalf("status:\n got %+v\nwant %+v", got.Status[0], c.want)
			}
		})
		all, wantAll = append(all, c.in), append(wantAll, c.want)
	}
	if got := decodeBoth(t, AppendBatch(nil, &Batch{Header: testHeader(StreamStatus, len(all)), Status: all})); len(got.Status) != len(wantAll) {
		t.Fatalf("%d status records, want %d", len(got.Status), len(wantAll))
	}
	// The caller's maps are not modified by the normalisation.
	in := map[string]BufferState{"s": {OldestAge: math.NaN()}}
	AppendStatusJSON(nil, []Status{{Buffer: in}})
	if !math.IsNaN(in["s"].OldestAge) {
		t.Fatal("AppendStatusJSON modified its input")
	}
	if got := string(AppendStatusJSON(nil, nil)); got != "[]" {
		t.Fatalf("no status records encode as %q, want []", got)
	}
}

func TestEmptyBatches(t *testing.T) {
	for _, s := range []Stream{StreamSamples, StreamFeatures, StreamStatus} {
		got := decodeBoth(t, AppendBatch(nil, &Batch{Header: testHeader(s, 0)}))
		if got.Stream != s || len(got.Samples)+len(got.Features)+len(got.Status) != 0 {
			t.Fatalf("%v: %+v", s, got)
		}
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	good := string(AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, 1),
		Samples: []Sample{{Signal: "a", Time: t0, Value: Float(1)}}}))
	recs := func(r string) string { // good envelope, other records
		i := strings.Index(good, `"records":`)
		return good[:i] + `"records":` + r + `}`
	}
	head := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%q not in %s", old, good)
		}
		return strings.Replace(good, old, new, 1)
	}
	cases := []struct {
		name, data, want string
	}{
		{"empty", ``, "unexpected end"},
		{"not JSON", `hello`, "invalid character"},
		{"array", `[]`, "cannot unmarshal array"},
		{"truncated", good[:len(good)-1], "unexpected end"},
		{"trailing brace", good + `}`, "after top-level value"},
		{"trailing garbage", good + ` x`, "after top-level value"},
		{"two batches", good + good, "after top-level value"},
		{"schema missing", head(`"schema":2,`, ``), "schema 0 unsupported"},
		{"schema newer", head(`"schema":2`, `"schema":3`), "schema 3 unsupported"},
		{"schema fraction", head(`"schema":2`, `"schema":1.5`), "schema"},
		{"incarnation missing", head(`"incarnation":"5be1c0de2f6a9d31",`, ``), "incarnation missing"},
		{"incarnation empty", head(`"incarnation":"5be1c0de2f6a9d31"`, `"incarnation":""`), "incarnation missing"},
		{"incarnation with separator", head(`"incarnation":"5be1c0de2f6a9d31"`, `"incarnation":"a:b"`), "cannot hold"},
		{"stream unknown", head(`"stream":"samples"`, `"stream":"logs"`), `unknown stream "logs"`},
		{"stream missing", head(`"stream":"samples",`, ``), `unknown stream ""`},
		{"seq negative", head(`"first_seq":10`, `"first_seq":-1`), "first_seq"},
		{"records missing", head(good[strings.Index(good, `,"records"`):], `}`), "records missing"},
		{"records null", recs(`null`), "records missing"},
		{"records object", recs(`{}`), "cannot unmarshal object"},
		{"two values", recs(`[{"sig":"a","f":1,"i":1}]`), "record 0 (a): more than one value field"},
		{"bad quality", recs(`[{"sig":"a","q":"meh"}]`), `record 0 (a): unknown quality "meh"`},
		{"bad time", recs(`[{"sig":"a","ts":"yesterday"}]`), "time"},
		{"time number", recs(`[{"sig":"a","ts":12}]`), "time"},
		{"bad float string", recs(`[{"sig":"a","f":"nan"}]`), `unexpected string "nan"`},
		{"float out of range", recs(`[{"sig":"a","f":1e999}]`), "out of range"},
		{"int fraction", recs(`[{"sig":"a","i":1.5}]`), "int64"},
		{"int too big", recs(`[{"sig":"a","i":9223372036854775808}]`), "int64"},
		{"bool as string", recs(`[{"sig":"a","b":"true"}]`), "bool"},
		{"label not string", recs(`[{"sig":"a","lbl":{"k":1}}]`), "labels"},
		{"labels array", recs(`[{"sig":"a","lbl":["k"]}]`), "labels"},
		{"sample not object", recs(`[1]`), "cannot unmarshal number"},
		{"control char", recs("[{\"sig\":\"a\x01\"}]"), "invalid character"},
		{"feature bad v", strings.Replace(recs(`[{"sig":"a","v":true}]`), `"stream":"samples"`, `"stream":"features"`, 1), "float"},
		{"status bad", strings.Replace(recs(`[{"time":"x"}]`), `"stream":"samples"`, `"stream":"status"`, 1), "cannot parse"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := DecodeBatch([]byte(c.data))
			if err == nil {
				t.Fatalf("accepted %s as %+v", c.data, b)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error does not wrap ErrCorrupt: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if _, ok := decodeBatchFast([]byte(c.data)); ok {
				t.Errorf("fast path accepted what the general decoder rejects: %s", c.data)
			}
		})
	}
}

// TestDecodeLenient: layouts other than the encoder's (whitespace, key order, nulls, unknown fields
// added by a newer minor version) are valid JSON and decode through the general path.
func TestDecodeLenient(t *testing.T) {
	data := `{ "records": [ {"ts": null, "f": "NaN", "sig": "a", "extra": [1,2], "lbl": {"b":"1","a":"2"}},
	                        {"sig":"b","i":null,"s":"x\u00e9","lbl":{}} ],
	           "stream": "samples", "schema": 1, "agent": "g", "future_field": {"x": 1} }`
	b, err := DecodeBatch([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{
		{Signal: "a", Value: Float(math.NaN()), Labels: Labels{{"b", "1"}, {"a", "2"}}},
		{Signal: "b", Value: String("xé")},
	}
	if !reflect.DeepEqual(b.Samples, want) || b.Agent != "g" {
		t.Fatalf("got %+v", b)
	}
}

func TestDecodeRecords(t *testing.T) {
	for _, bad := range []string{``, `{}`, `[`, `[{"sig":1}]`, `[{"sig":"a","i":1.5}]`, `[{"sig":"a"}]x`} {
		if _, err := DecodeSamples([]byte(bad)); err == nil || !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeSamples(%q): %v, want ErrCorrupt", bad, err)
		}
	}
	for _, bad := range []string{``, `{}`, `[`, `[{"sig":1}]`, `[{"sig":"a","n":1.5}]`, `[{"v":"Infinity"}]`} {
		if _, err := DecodeFeatures([]byte(bad)); err == nil || !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeFeatures(%q): %v, want ErrCorrupt", bad, err)
		}
	}
	// Unknown fields are ignored (a newer minor version may add some).
	if s, err := DecodeSamples([]byte(`[{"sig":"a","n":1.5}]`)); err != nil || len(s) != 1 || s[0].Signal != "a" {
		t.Errorf("unknown field: %+v, %v", s, err)
	}
}

func TestMsgIDAndSubject(t *testing.T) {
	cases := []struct {
		agent  string
		stream Stream
		inc    string
		seq    uint64
		want   string
	}{
		{"gw-line1", StreamSamples, "9f3a", 1, "gw-line1:samples:9f3a:1"},
		{"gw-line1", StreamFeatures, "9f3a", 42, "gw-line1:features:9f3a:42"},
		{"gw-line1", StreamFeatures, "77b0", 42, "gw-line1:features:77b0:42"}, // a reset buffer: same seq, new id
		{"a", StreamStatus, "x", math.MaxUint64, "a:status:x:18446744073709551615"},
	}
	for _, c := range cases {
		if got := MsgID(c.agent, c.stream, c.inc, c.seq); got != c.want {
			t.Errorf("MsgID = %q, want %q", got, c.want)
		}
	}
	if got := Subject("gemba", "plant1", "gw-line1", StreamFeatures); got != "gemba.plant1.gw-line1.features" {
		t.Errorf("Subject = %q", got)
	}
	if got := Subject("acme.gemba", "p", "a", StreamStatus); got != "acme.gemba.p.a.status" {
		t.Errorf("Subject with a dotted prefix = %q", got)
	}
	for name, ok := range map[string]bool{"gw-line1": true, "plant_1": true, "": false, "a.b": false,
		"a*": false, "a>": false, "a b": false, "a\tb": false, "a\nb": false} {
		if err := CheckToken(name); (err == nil) != ok {
			t.Errorf("CheckToken(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	for _, s := range []Stream{StreamSamples, StreamFeatures, StreamStatus} {
		if got, err := ParseStream(s.String()); err != nil || got != s {
			t.Errorf("ParseStream(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseStream("stream(7)"); err == nil {
		t.Error("ParseStream accepted an unknown stream")
	}
}

// TestDecodeSchema1: batches of agents from before incarnations still decode, with none.
func TestDecodeSchema1(t *testing.T) {
	enc := string(AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, 1),
		Samples: []Sample{{Signal: "a", Time: t0, Value: Float(1)}}}))
	old := strings.Replace(strings.Replace(enc, `"schema":2`, `"schema":1`, 1), `"incarnation":"5be1c0de2f6a9d31",`, ``, 1)
	if old == enc {
		t.Fatal("test did not build a schema-1 batch")
	}
	b, err := DecodeBatch([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if b.Schema != 1 || b.Incarnation != "" || len(b.Samples) != 1 || b.MsgID() != "gw-line1:samples::10" {
		t.Errorf("schema-1 batch decoded as %+v (id %s)", b.Header, b.MsgID())
	}
}
