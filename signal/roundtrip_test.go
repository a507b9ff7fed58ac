package signal

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The normalisations below are the documented ones (docs/wire-format.md, "Normalisations"): what
// decode(encode(x)) gives back when it is not bit-for-bit x.

// wireString is s as it reads back: each byte of invalid UTF-8 becomes U+FFFD.
func wireString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // RuneError for an invalid byte, with n == 1
		i += n
	}
	return b.String()
}

// wireTime is t as it reads back: UTC, no monotonic reading, clamped to years 0000..9999; zero stays zero.
func wireTimeOf(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return wireClamp(t)
}

func wireFloatOf(f float64) float64 {
	if math.IsNaN(f) {
		return math.NaN() // every NaN payload reads back as the one NaN
	}
	return f
}

func wireValue(v Value) Value {
	switch v.Kind() {
	case KindFloat:
		f, _ := v.Float()
		return Float(wireFloatOf(f))
	case KindString:
		s, _ := v.Str()
		return String(wireString(s))
	}
	return v
}

// wireLabelsOf: empty reads as nil; a repeated key keeps its first position and its last value.
func wireLabelsOf(l Labels) Labels {
	var out Labels
	for _, kv := range l {
		k, v := wireString(kv.Key), wireString(kv.Value)
		found := false
		for i := range out {
			if out[i].Key == k {
				out[i].Value, found = v, true
			}
		}
		if !found {
			out = append(out, Label{Key: k, Value: v})
		}
	}
	return out
}

func wireSampleOf(s Sample) Sample {
	q := s.Quality
	if q > Bad {
		q = Bad
	}
	return Sample{Signal: wireString(s.Signal), Time: wireTimeOf(s.Time), Value: wireValue(s.Value),
		Quality: q, Reason: wireString(s.Reason), Source: wireString(s.Source), Labels: wireLabelsOf(s.Labels)}
}

func wireFeatureOf(f Feature) Feature {
	return Feature{Signal: wireString(f.Signal), Name: wireString(f.Name), WindowStart: wireTimeOf(f.WindowStart),
		WindowEnd: wireTimeOf(f.WindowEnd), Value: wireFloatOf(f.Value), Count: f.Count,
		Labels: wireLabelsOf(f.Labels), Partial: f.Partial}
}

// sameTime requires equal instants and a UTC location (the decoder's promise).
func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) || got.IsZero() != want.IsZero() {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", what, got.Location())
	}
}

func checkSample(t *testing.T, got, want Sample) {
	t.Helper()
	sameTime(t, "time", got.Time, want.Time)
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sample:\n got %#v\nwant %#v", got, want)
	}
}

func checkFeature(t *testing.T, got, want Feature) {
	t.Helper()
	sameTime(t, "window start", got.WindowStart, want.WindowStart)
	sameTime(t, "window end", got.WindowEnd, want.WindowEnd)
	got.WindowStart, want.WindowStart, got.WindowEnd, want.WindowEnd = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if math.Float64bits(got.Value) != math.Float64bits(want.Value) {
		t.Errorf("feature value bits: got %v (%#x), want %v (%#x)", got.Value, math.Float64bits(got.Value),
			want.Value, math.Float64bits(want.Value))
	}
	got.Value, want.Value = 0, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("feature:\n got %#v\nwant %#v", got, want)
	}
}

var t0 = time.Date(2026, 11, 24, 21, 9, 43, 123456789, time.UTC)

type valueCase struct {
	name string
	v    Value
}

func valueCases() []valueCase {
	return []valueCase{
		{"none", Value{}},
		{"float zero", Float(0)},
		{"float negative zero", Float(math.Copysign(0, -1))},
		{"float fraction", Float(71.25)},
		{"float tenth", Float(0.1)},
		{"float third", Float(1.0 / 3)},
		{"float negative", Float(-273.15)},
		{"float max", Float(math.MaxFloat64)},
		{"float -max", Float(-math.MaxFloat64)},
		{"float smallest subnormal", Float(math.SmallestNonzeroFloat64)},
		{"float -smallest subnormal", Float(-math.SmallestNonzeroFloat64)},
		{"float largest subnormal", Float(math.Float64frombits(0x000fffffffffffff))},
		{"float smallest normal", Float(0x1p-1022)},
		{"float 2^53+2", Float(1<<53 + 2)},
		{"float 1e21", Float(1e21)},
		{"float 1e-7", Float(1e-7)},
		{"float NaN", Float(math.NaN())},
		{"float +Inf", Float(math.Inf(1))},
		{"float -Inf", Float(math.Inf(-1))},
		{"int zero", Int(0)},
		{"int -1", Int(-1)},
		{"int max", Int(math.MaxInt64)},
		{"int min", Int(math.MinInt64)},
		{"int 2^53+1", Int(1<<53 + 1)},
		{"bool true", Bool(true)},
		{"bool false", Bool(false)},
		{"string empty", String("")},
		{"string plain", String("SKU-4711")},
		{"string quotes", String(`say "hi" \ 'there'`)},
		{"string backslash end", String(`C:\`)},
		{"string controls", String("\x00\x01\x08\x0b\x0c\x1f\x7f")},
		{"string newline tab", String("a\nb\r\tc")},
		{"string html", String("<b>&amp;</b>")},
		{"string unicode", String("Grüße, 日本語, 🏭")},
		{"string line separators", String("a\u2028b\u2029c")},
		{"string replacement char", String("\uFFFD")},
		{"string invalid utf8", String("a\xffb\xc3")},
		{"string surrogate bytes", String("\xed\xa0\x80")},
		{"string truncated rune", String("\xe6\x97")},
	}
}

func TestValueRoundTrip(t *testing.T) {
	for _, c := range valueCases() {
		t.Run(c.name, func(t *testing.T) {
			in := []Sample{{Signal: "s", Time: t0, Value: c.v}}
			enc := AppendSamplesJSON(nil, in)
			if !json.Valid(enc) {
				t.Fatalf("invalid JSON: %s", enc)
			}
			got, err := DecodeSamples(enc)
			if err != nil {
				t.Fatalf("decode %s: %v", enc, err)
			}
			want := wireValue(c.v)
			if got[0].Value != want {
				t.Fatalf("got %#v, want %#v (wire %s)", got[0].Value, want, enc)
			}
			if c.v.Kind() == KindString && utf8.ValidString(c.v.Text()) && got[0].Value != c.v {
				t.Fatalf("valid UTF-8 must round-trip exactly: got %q want %q", got[0].Value.Text(), c.v.Text())
			}
			checkAgainstEncodingJSON(t, enc, c.v)
		})
	}
}

// checkAgainstEncodingJSON decodes the encoder's output with encoding/json alone and checks that an
// independent reader sees the value the contract promises.
func checkAgainstEncodingJSON(t *testing.T, enc []byte, v Value) {
	t.Helper()
	var recs []map[string]any
	dec := json.NewDecoder(bytes.NewReader(enc))
	dec.UseNumber()
	if err := dec.Decode(&recs); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	r := recs[0]
	present := 0
	for _, k := range []string{"f", "i", "b", "s"} {
		if _, ok := r[k]; ok {
			present++
		}
	}
	if want := map[bool]int{true: 0, false: 1}[v.Kind() == KindNone]; present != want {
		t.Fatalf("%d value fields in %s, want %d", present, enc, want)
	}
	switch v.Kind() {
	case KindFloat:
		f, _ := v.Float()
		switch {
		case math.IsNaN(f):
			assertEq(t, r["f"], any("NaN"))
		case math.IsInf(f, 1):
			assertEq(t, r["f"], any("Inf"))
		case math.IsInf(f, -1):
			assertEq(t, r["f"], any("-Inf"))
		default:
			n, ok := r["f"].(json.Number)
			if !ok {
				t.Fatalf("f is %T, want a JSON number", r["f"])
			}
			g, err := strconv.ParseFloat(string(n), 64)
			if err != nil || math.Float64bits(g) != math.Float64bits(f) {
				t.Fatalf("encoding/json reads f=%s as %v (%v), want %v", n, g, err, f)
			}
		}
	case KindInt:
		i, _ := v.Int()
		n, ok := r["i"].(json.Number)
		if !ok {
			t.Fatalf("i is %T, want a JSON number", r["i"])
		}
		if g, err := n.Int64(); err != nil || g != i {
			t.Fatalf("encoding/json reads i=%s as %d (%v), want %d", n, g, err, i)
		}
	case KindBool:
		b, _ := v.Bool()
		assertEq(t, r["b"], any(b))
	case KindString:
		s, _ := v.Str()
		assertEq(t, r["s"], any(wireString(s)))
	}
}

func assertEq(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
}

func TestSampleRoundTrip(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	cases := []struct {
		name string
		s    Sample
	}{
		{"minimal", Sample{Signal: "a", Time: t0, Value: Float(1)}},
		{"zero time", Sample{Signal: "a", Value: Int(7)}},
		{"empty signal", Sample{Time: t0, Value: Bool(true)}},
		{"good with reason", Sample{Signal: "a", Time: t0, Value: Float(1), Reason: "GoodLocalOverride"}},
		{"uncertain", Sample{Signal: "a", Time: t0, Value: Float(2), Quality: Uncertain, Reason: "UncertainLastUsableValue"}},
		{"bad without value", Sample{Signal: "a", Time: t0, Quality: Bad, Reason: "BadNodeIdUnknown"}},
		{"bad parse error", Sample{Signal: "a", Time: t0, Quality: Bad, Reason: `parse "x": invalid syntax`, Source: "mqtt/t"}},
		{"unknown quality reads as bad", Sample{Signal: "a", Time: t0, Value: Int(1), Quality: Quality(9), Reason: "r"}},
		{"source", Sample{Signal: "line1.press.temperature", Time: t0, Value: Float(71.5), Source: "opcua-press/ns=2;s=Temperature"}},
		{"labels keep order", Sample{Signal: "a", Time: t0, Value: Float(1),
			Labels: Labels{{"zone", "z"}, {"area", "a"}, {"machine", "m"}}}},
		{"labels unicode and empty", Sample{Signal: "a", Time: t0, Value: Float(1),
			Labels: Labels{{"", ""}, {"ключ", "значение \"q\""}, {"k\xff", "v\x00"}}}},
		{"labels empty slice", Sample{Signal: "a", Time: t0, Value: Float(1), Labels: Labels{}}},
		{"labels repeated key", Sample{Signal: "a", Time: t0, Value: Float(1),
			Labels: Labels{{"a", "1"}, {"b", "2"}, {"a", "3"}}}},
		{"local time", Sample{Signal: "a", Time: time.Date(2026, 1, 2, 3, 4, 5, 6, paris), Value: Float(1)}},
		{"monotonic time", Sample{Signal: "a", Time: time.Now(), Value: Float(1)}},
		{"unix epoch", Sample{Signal: "a", Time: time.Unix(0, 0), Value: Float(1)}},
		{"before 1970", Sample{Signal: "a", Time: time.Date(1601, 1, 1, 0, 0, 0, 1, time.UTC), Value: Float(1)}},
		{"year 0", Sample{Signal: "a", Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), Value: Float(1)}},
		{"year 9999", Sample{Signal: "a", Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), Value: Float(1)}},
		{"year 10000 clamps", Sample{Signal: "a", Time: time.Date(10000, 6, 1, 0, 0, 0, 0, time.UTC), Value: Float(1)}},
		{"year -5 clamps", Sample{Signal: "a", Time: time.Date(-5, 6, 1, 0, 0, 0, 0, time.UTC), Value: Float(1)}},
		{"everything odd", Sample{Signal: "sig \"\xff\"\n", Time: t0, Value: String("\x00"), Quality: Uncertain,
			Reason: "\u2028", Source: "src\\", Labels: Labels{{"\t", "\n"}}}},
	}
	var all []Sample
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := AppendSampleJSON(nil, &c.s)
			if !json.Valid(enc) {
				t.Fatalf("invalid JSON: %s", enc)
			}
			got, err := DecodeSamples(append(append([]byte{'['}, enc...), ']'))
			if err != nil {
				t.Fatalf("decode %s: %v", enc, err)
			}
			checkSample(t, got[0], wireSampleOf(c.s))
			checkLabelsWithEncodingJSON(t, enc, wireLabelsOf(c.s.Labels))
		})
		if c.name != "labels repeated key" { // valid, but outside the fast path's form; decodeBoth checks that
			all = append(all, c.s)
		}
	}
	for _, c := range valueCases() {
		all = append(all, Sample{Signal: c.name, Time: t0, Value: c.v})
	}
	t.Run("all in one batch", func(t *testing.T) {
		b := &Batch{Header: testHeader(StreamSamples, len(all)), Samples: all}
		enc := AppendBatch(nil, b)
		got := decodeBoth(t, enc)
		if len(got.Samples) != len(all) {
			t.Fatalf("%d samples, want %d", len(got.Samples), len(all))
		}
		for i := range all {
			checkSample(t, got.Samples[i], wireSampleOf(all[i]))
		}
	})
}

// checkLabelsWithEncodingJSON reads "lbl" with encoding/json's tokenizer and checks keys, values and order.
func checkLabelsWithEncodingJSON(t *testing.T, enc []byte, want Labels) {
	t.Helper()
	var rec struct {
		Lbl json.RawMessage `json:"lbl"`
	}
	if err := json.Unmarshal(enc, &rec); err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		if rec.Lbl != nil {
			t.Fatalf("lbl written for no labels: %s", rec.Lbl)
		}
		return
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Lbl))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var got Labels
	for dec.More() {
		k, err1 := dec.Token()
		v, err2 := dec.Token()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		got = append(got, Label{Key: k.(string), Value: v.(string)})
	}
	if !reflect.DeepEqual(wireLabelsOf(got), want) {
		t.Fatalf("encoding/json reads labels %q, want %q", got, want)
	}
}

func TestFeatureRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		f    Feature
	}{
		{"full", Feature{Signal: "line1.press.temperature", Name: "mean", WindowStart: t0, WindowEnd: t0.Add(time.Minute),
			Value: 71.3125, Count: 600, Labels: Labels{{"sku", "A-1"}, {"line", "1"}}}},
		{"partial", Feature{Signal: "s", Name: "p95", WindowStart: t0, WindowEnd: t0.Add(time.Minute), Value: 1, Count: 3, Partial: true}},
		{"zero times", Feature{Signal: "s", Name: "delta"}},
		{"NaN", Feature{Signal: "s", Name: "stddev", WindowStart: t0, WindowEnd: t0, Value: math.NaN(), Count: 1}},
		{"Inf", Feature{Signal: "s", Name: "rate", WindowStart: t0, WindowEnd: t0, Value: math.Inf(-1)}},
		{"negative zero", Feature{Signal: "s", Name: "delta", WindowStart: t0, WindowEnd: t0, Value: math.Copysign(0, -1)}},
		{"subnormal", Feature{Signal: "s", Name: "min", Value: math.SmallestNonzeroFloat64, Count: math.MaxInt64}},
		{"count min", Feature{Signal: "s", Name: "n", Value: -math.MaxFloat64, Count: math.MinInt64}},
		{"odd strings", Feature{Signal: "\xff\"", Name: "time_in_state\n", Labels: Labels{{"state", "RUNNING\u2029"}}}},
	}
	var all []Feature
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := AppendFeaturesJSON(nil, []Feature{c.f})
			if !json.Valid(enc) {
				t.Fatalf("invalid JSON: %s", enc)
			}
			got, err := DecodeFeatures(enc)
			if err != nil {
				t.Fatalf("decode %s: %v", enc, err)
			}
			checkFeature(t, got[0], wireFeatureOf(c.f))
		})
		all = append(all, c.f)
	}
	t.Run("all in one batch", func(t *testing.T) {
		got := decodeBoth(t, AppendBatch(nil, &Batch{Header: testHeader(StreamFeatures, len(all)), Features: all}))
		if len(got.Features) != len(all) || got.Samples != nil || got.Status != nil {
			t.Fatalf("got %d features, %d samples, %d status; want %d features only",
				len(got.Features), len(got.Samples), len(got.Status), len(all))
		}
		for i := range all {
			checkFeature(t, got.Features[i], wireFeatureOf(all[i]))
		}
	})
}

func testHeader(s Stream, n int) Header {
	return Header{Schema: SchemaVersion, Agent: "gw-line1", Site: "plant1", Incarnation: "5be1c0de2f6a9d31", Stream: s, ConfigVersion: "cfg-1a2b",
		FirstSeq: 10, LastSeq: 12, Count: n, Oldest: t0, Newest: t0.Add(time.Second), Sent: t0.Add(2 * time.Second)}
}

// decodeBoth decodes with DecodeBatch and with the general decoder, requires both to succeed with the
// same result, and requires valid JSON. For samples and features it also requires that the fast path
// took the encoder's output (otherwise the benchmark would measure the wrong decoder).
func decodeBoth(t *testing.T, enc []byte) *Batch {
	t.Helper()
	if !json.Valid(enc) {
		t.Fatalf("invalid JSON: %s", enc)
	}
	got, err := DecodeBatch(enc)
	if err != nil {
		t.Fatalf("DecodeBatch: %v\n%s", err, enc)
	}
	ref, err := decodeBatchJSON(enc)
	if err != nil {
		t.Fatalf("general decoder: %v\n%s", err, enc)
	}
	if !batchesEqual(got, ref) {
		t.Fatalf("DecodeBatch and the general decoder differ:\n%#v\n%#v", got, ref)
	}
	if got.Stream != StreamStatus {
		if _, ok := decodeBatchFast(enc); !ok {
			t.Fatalf("fast path refused the encoder's output:\n%s", enc)
		}
	}
	return got
}

// batchesEqual compares batches exactly (NaN equal to NaN, times by instant and location).
func batchesEqual(a, b *Batch) bool {
	norm := func(x *Batch) *Batch {
		c := *x
		c.Samples = append([]Sample(nil), x.Samples...)
		c.Features = append([]Feature(nil), x.Features...)
		for i := range c.Features {
			c.Features[i].Value = math.Float64frombits(math.Float64bits(c.Features[i].Value)) // keep bits
		}
		return &c
	}
	a, b = norm(a), norm(b)
	if len(a.Features) != len(b.Features) {
		return false
	}
	for i := range a.Features {
		if math.Float64bits(a.Features[i].Value) != math.Float64bits(b.Features[i].Value) {
			return false
		}
		a.Features[i].Value, b.Features[i].Value = 0, 0
	}
	return reflect.DeepEqual(a, b)
}
