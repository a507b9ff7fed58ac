package signal

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The committed corpus under testdata/fuzz/ is generated from real encoder output by
// `go test ./signal -run TestFuzzCorpus -update-corpus` (plus any crashers the fuzzer found, which
// are kept as they were written). Without the flag the test checks the corpus is there.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the generated seed corpus under testdata/fuzz")

// FuzzDecodeBatch: DecodeBatch never panics; whatever the fast path accepts, the general decoder
// accepts with the same result; and a decoded batch is a fixed point of encode+decode.
func FuzzDecodeBatch(f *testing.F) {
	for _, enc := range schemaBatches() {
		f.Add(enc)
	}
	for _, enc := range smallBatches() {
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		fast, fastOK := decodeBatchFast(data)
		ref, refErr := decodeBatchJSON(data)
		if fastOK {
			if refErr != nil {
				t.Fatalf("fast path accepted what the general decoder rejects (%v):\n%q", refErr, data)
			}
			if !batchesEqual(fast, ref) {
				t.Fatalf("fast path and general decoder differ on %q:\n%#v\n%#v", data, fast, ref)
			}
		}
		if (err == nil) != (refErr == nil) {
			t.Fatalf("DecodeBatch err=%v, general decoder err=%v", err, refErr)
		}
		if err != nil {
			return
		}
		again, err := DecodeBatch(AppendBatch(nil, b))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v\n%q", err, data)
		}
		normStatus(b)
		normStatus(again)
		if !batchesEqual(b, again) {
			t.Fatalf("decode(encode(decode(x))) != decode(x) for %q:\n%#v\n%#v", data, b, again)
		}
	})
}

// normStatus treats empty status maps like absent ones (encoding/json omits them when empty).
func normStatus(b *Batch) {
	for i := range b.Status {
		s := &b.Status[i]
		if len(s.Buffer) == 0 {
			s.Buffer = nil
		}
		for k, v := range s.Buffer {
			if len(v.Dropped) == 0 {
				v.Dropped = nil
				s.Buffer[k] = v
			}
		}
		if len(s.Collectors) == 0 {
			s.Collectors = nil
		}
	}
}

// FuzzParseChunk: ParseChunk never panics, a parsed chunk re-encodes to an equal chunk, and the
// records it hands out decode (or are rejected) without panicking.
func FuzzParseChunk(f *testing.F) {
	for _, c := range corpusChunks() {
		f.Add(AppendChunk(nil, &c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseChunk(data)
		if err != nil {
			return
		}
		again, err := ParseChunk(AppendChunk(nil, &c))
		if err != nil {
			t.Fatalf("re-encoded chunk does not parse: %v", err)
		}
		if again.Stream != c.Stream || again.ConfigVersion != c.ConfigVersion || again.Count != c.Count ||
			!again.Oldest.Equal(c.Oldest) || !again.Newest.Equal(c.Newest) || !again.Captured.Equal(c.Captured) || !bytes.Equal(again.Records, c.Records) {
			t.Fatalf("chunk changed on re-encoding:\n%+v\n%+v", c, again)
		}
		switch c.Stream {
		case StreamSamples:
			_, _ = DecodeSamples(c.Records)
		case StreamFeatures:
			_, _ = DecodeFeatures(c.Records)
		}
	})
}

// FuzzSampleRoundTrip builds a sample (and a feature) from fuzzed fields and requires
// decode(encode(x)) == x modulo the documented normalisations (wireSampleOf, wireFeatureOf).
func FuzzSampleRoundTrip(f *testing.F) {
	for _, a := range corpusSampleArgs() {
		f.Add(a.sig, a.src, a.reason, a.key, a.val, a.kind, a.f, a.i, a.b, a.s, a.q, a.sec, a.nsec, a.zone)
	}
	f.Fuzz(func(t *testing.T, sig, src, reason, key, val string, kind uint16, fv float64, iv int64, bv bool,
		sv string, q uint16, sec, nsec int64, zone int64) {
		a := sampleArgs{sig, src, reason, key, val, kind, fv, iv, bv, sv, q, sec, nsec, zone}
		s, ft := a.build()
		enc := AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, 1), Samples: []Sample{s}})
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON: %q", enc)
		}
		got, err := DecodeBatch(enc)
		if err != nil {
			t.Fatalf("decode: %v\n%q", err, enc)
		}
		if _, ok := decodeBatchFast(enc); !ok && uniqueKeys(s.Labels) {
			t.Fatalf("fast path refused the encoder's output: %q", enc)
		}
		checkSample(t, got.Samples[0], wireSampleOf(s))

		enc = AppendBatch(nil, &Batch{Header: testHeader(StreamFeatures, 1), Features: []Feature{ft}})
		got, err = DecodeBatch(enc)
		if err != nil {
			t.Fatalf("decode: %v\n%q", err, enc)
		}
		checkFeature(t, got.Features[0], wireFeatureOf(ft))
	})
}

func uniqueKeys(l Labels) bool {
	for i := range l {
		for j := range i {
			if wireString(l[i].Key) == wireString(l[j].Key) {
				return false
			}
		}
	}
	return true
}

type sampleArgs struct {
	sig, src, reason, key, val string
	kind                       uint16
	f                          float64
	i                          int64
	b                          bool
	s                          string
	q                          uint16
	sec, nsec, zone            int64
}

func (a sampleArgs) build() (Sample, Feature) {
	var v Value
	switch a.kind % 5 {
	case 1:
		v = Float(a.f)
	case 2:
		v = Int(a.i)
	case 3:
		v = Bool(a.b)
	case 4:
		v = String(a.s)
	}
	var ts time.Time
	if a.sec != 0 || a.nsec != 0 {
		ts = time.Unix(a.sec, a.nsec).In(time.FixedZone("fuzz", int(a.zone%(24*3600))))
	}
	var lbl Labels
	if a.key != "" || a.val != "" {
		lbl = Labels{{a.key, a.val}, {a.reason, a.src}} // the second may repeat the first key
	}
	s := Sample{Signal: a.sig, Time: ts, Value: v, Quality: Quality(a.q % 4), Reason: a.reason, Source: a.src, Labels: lbl}
	ft := Feature{Signal: a.sig, Name: a.s, WindowStart: ts, WindowEnd: ts.Add(time.Duration(a.nsec)), Value: a.f,
		Count: a.i, Labels: lbl, Partial: a.b}
	return s, ft
}

func corpusSampleArgs() map[string]sampleArgs {
	return map[string]sampleArgs{
		"float":       {sig: "line1.press.temperature", src: "opcua/ns=2;s=T", kind: 1, f: 71.25, sec: 1764018583, nsec: 123456789},
		"nan":         {sig: "s", kind: 1, f: math.NaN(), sec: 1},
		"payload nan": {sig: "s", kind: 1, f: math.Float64frombits(0xfff8000000000001), sec: 1},
		"neg zero":    {sig: "s", kind: 1, f: math.Copysign(0, -1), sec: -1},
		"subnormal":   {sig: "s", kind: 1, f: math.SmallestNonzeroFloat64, sec: 1},
		"inf":         {sig: "s", kind: 1, f: math.Inf(-1)},
		"int min":     {sig: "s", kind: 2, i: math.MinInt64, sec: 1},
		"bool":        {sig: "s", kind: 3, b: true, q: 1, reason: "UncertainLastUsableValue", sec: 1},
		"string":      {sig: "s", kind: 4, s: "say \"hi\"\n\x00\xff\u2028", sec: 1, zone: 3600},
		"bad":         {sig: "s", q: 2, reason: "BadNodeIdUnknown", sec: 1},
		"labels":      {sig: "s", kind: 1, key: "machine", val: "press", reason: "zone", src: "a"},
		"repeated":    {sig: "s", kind: 1, key: "k", val: "1", reason: "k", src: "2"},
		"far year":    {sig: "s", kind: 2, sec: 1 << 40},
		"year 0":      {sig: "s", kind: 2, sec: -62167219200},
		"invalid q":   {sig: "s", kind: 2, q: 3},
	}
}

func corpusChunks() map[string]Chunk {
	return map[string]Chunk{
		"samples":  {Stream: StreamSamples, ConfigVersion: "cfg-1", Count: 3, Oldest: t0, Newest: t0.Add(time.Second), Captured: t0.Add(2 * time.Second), Records: AppendSamplesJSON(nil, typicalSamples(3))},
		"features": {Stream: StreamFeatures, Count: 1, Oldest: t0, Newest: t0, Records: AppendFeaturesJSON(nil, []Feature{{Signal: "s", Name: "mean", Value: 1}})},
		"status":   {Stream: StreamStatus, Count: 1, Records: AppendStatusJSON(nil, []Status{{Time: t0, Agent: "a"}})},
		"empty":    {Stream: StreamSamples, Records: []byte("[]")},
	}
}

// corpusEntry renders values in the `go test fuzz v1` file format.
func corpusEntry(vals ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case float64:
			if math.IsNaN(v) && math.Float64bits(v) != math.Float64bits(math.NaN()) {
				fmt.Fprintf(&b, "math.Float64frombits(0x%x)\n", math.Float64bits(v))
			} else {
				fmt.Fprintf(&b, "float64(%v)\n", v)
			}
		default:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		}
	}
	return b.Bytes()
}

func corpusName(s string) string {
	return "seed-" + strings.NewReplacer(" ", "-", "/", "-").Replace(s)
}

func TestFuzzCorpus(t *testing.T) {
	want := map[string][]byte{}
	for name, enc := range schemaBatches() {
		want[filepath.Join("FuzzDecodeBatch", corpusName(name))] = corpusEntry(enc)
	}
	for name, enc := range smallBatches() {
		want[filepath.Join("FuzzDecodeBatch", corpusName(name))] = corpusEntry(enc)
	}
	// Near misses: each one takes the fast path part of the way, then falls back or fails.
	good := string(AppendBatch(nil, &Batch{Header: testHeader(StreamSamples, 1), Samples: typicalSamples(1)}))
	for name, doc := range map[string]string{
		"trailing":      good + "}",
		"records first": `{"records":[{"sig":"a","f":1}],"stream":"samples","schema":1}`,
		"escapes":       strings.Replace(good, `"sig":"line1`, `"sig":"\u006c\ud83c\udfedine1`, 1),
		"whitespace":    strings.Replace(good, `,"f":`, `, "f" : `, 1),
		"dup label":     strings.Replace(good, `"src":`, `"lbl":{"a":"1","a":"2"},"src":`, 1),
		"huge delay":    strings.Replace(good, `"delay_ms":0`, `"delay_ms":9223372036855`, 1),
		"truncated":     good[:len(good)/2],
	} {
		want[filepath.Join("FuzzDecodeBatch", corpusName(name))] = corpusEntry([]byte(doc))
	}
	for name, c := range corpusChunks() {
		want[filepath.Join("FuzzParseChunk", corpusName(name))] = corpusEntry(AppendChunk(nil, &c))
	}
	for name, a := range corpusSampleArgs() {
		want[filepath.Join("FuzzSampleRoundTrip", corpusName(name))] = corpusEntry(a.sig, a.src, a.reason, a.key,
			a.val, a.kind, a.f, a.i, a.b, a.s, a.q, a.sec, a.nsec, a.zone)
	}
	for rel, data := range want {
		path := filepath.Join("testdata", "fuzz", rel)
		if *updateCorpus {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./signal -run TestFuzzCorpus -update-corpus)", err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s is stale (run go test ./signal -run TestFuzzCorpus -update-corpus)", path)
		}
	}
}

// smallBatches are short canonical batches: cheap seeds whose mutations the fuzzer explores quickly,
// and the base of TestFastPathNeighbourhood.
func smallBatches() map[string][]byte {
	h := testHeader(StreamSamples, 5)
	hf := testHeader(StreamFeatures, 1)
	hf.Historical, hf.Delay = true, 1500*time.Millisecond
	return map[string][]byte{
		"small samples": AppendBatch(nil, &Batch{Header: h, Samples: []Sample{
			{Signal: "a", Time: t0, Value: Float(-1.5e-7), Labels: Labels{{"k", "v"}}},
			{Signal: "b", Value: Int(-10), Quality: Uncertain, Reason: "r"},
			{Signal: "c", Time: t0, Value: Bool(false), Source: "x"},
			{Signal: "d", Time: t0, Value: String("é\"\\")},
			{Signal: "e", Time: t0, Value: Float(math.Inf(-1)), Quality: Bad},
		}}),
		"small features": AppendBatch(nil, &Batch{Header: hf, Features: []Feature{
			{Signal: "a", Name: "mean", WindowStart: t0, WindowEnd: t0, Value: 0.25, Count: 3, Partial: true,
				Labels: Labels{{"k", "v"}}},
		}}),
	}
}

// TestFastPathNeighbourhood applies every single-byte deletion, insertion and replacement (with bytes
// that matter to JSON) to small canonical batches and requires the fast path and the general decoder
// to agree on each: deterministic coverage of the near misses a fuzzer finds only by luck.
func TestFastPathNeighbourhood(t *testing.T) {
	alphabet := []byte{'0', '1', '9', '-', '+', '.', 'e', 'E', '"', '\\', ',', ':', '{', '}', '[', ']', ' ', 'n',
		't', 'f', 'u', 'x', 'Z', 0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xff}
	check := func(data []byte) {
		fast, ok := decodeBatchFast(data)
		if !ok {
			return
		}
		ref, err := decodeBatchJSON(data)
		if err != nil {
			t.Fatalf("fast path accepted what the general decoder rejects (%v):\n%q", err, data)
		}
		if !batchesEqual(fast, ref) {
			t.Fatalf("fast path and general decoder differ on %q:\n%#v\n%#v", data, fast, ref)
		}
	}
	n := 0
	for _, base := range smallBatches() {
		buf := make([]byte, 0, len(base)+1)
		for i := range len(base) + 1 {
			if i < len(base) {
				check(append(append(buf[:0], base[:i]...), base[i+1:]...)) // delete
				n++
			}
			for _, c := range alphabet {
				check(append(append(append(buf[:0], base[:i]...), c), base[i:]...)) // insert
				n++
				if i < len(base) && base[i] != c {
					m := append(buf[:0], base...)
					m[i] = c
					check(m) // replace
					n++
				}
			}
		}
	}
	t.Logf("%d mutations checked", n)
}
