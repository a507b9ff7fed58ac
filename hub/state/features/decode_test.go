package features

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// checkDecode: decodeValue gives exactly what json.Unmarshal gives, error or value.
func checkDecode(t testing.TB, line []byte) {
	t.Helper()
	var got, want Value
	gerr := decodeValue(line, &got)
	werr := json.Unmarshal(line, &want)
	if (gerr != nil) != (werr != nil) {
		t.Fatalf("line %q: decodeValue error %v, json.Unmarshal error %v", line, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("line %q:\n decodeValue %+v\njson.Unmarshal %+v", line, got, want)
	}
}

// Lines the fast path must decline (then encoding/json decides), each differing from a good line
// in one way json and strconv read differently.
func TestDecodeValueDeclines(t *testing.T) {
	good := `{"name":"mean","key":"k","value":1.5,"count":3,"window_start":"2026-12-04T10:00:00Z","window_end":"2026-12-04T10:00:01Z","lineage":{"agent":"gw1","site":"s","config_version":"cv","signal":"k","first_seq":1,"stream_seq":2},"def_version":"d","updated":"2026-12-04T10:00:02Z"}`
	if d := (lineDecoder{b: []byte(good)}); !d.value(&Value{}) {
		t.Fatalf("the good line missed the fast path")
	}
	checkDecode(t, []byte(good))
	for _, c := range []struct{ from, to string }{
		{`"value":1.5`, `"value":+1.5`}, {`"value":1.5`, `"value":.5`}, {`"value":1.5`, `"value":01.5`},
		{`"value":1.5`, `"value":1e400`}, {`"value":1.5`, `"value":Inf`}, {`"value":1.5`, `"value":0x1p-2`},
		{`"value":1.5`, `"value":1.`}, {`"value":1.5`, `"value":1e`}, {`"count":3`, `"count":3.0`},
		{`"count":3`, `"count":03`}, {`"count":3`, `"count":99999999999999999999`}, {`"first_seq":1`, `"first_seq":-1`},
		{`"name":"mean"`, `"name":"me\u0061n"`}, {`"name":"mean"`, `"name":"m\tean"`}, {`"name":"mean"`, "\"name\":\"m\xffean\""},
		{`"window_end":"2026-12-04T10:00:01Z"`, `"window_end":"2026-12-04T10:00:01"`},
		{`"window_end":"2026-12-04T10:00:01Z"`, `"window_end":"2026-12-04T24:00:01Z"`},
		{`"window_end":"2026-12-04T10:00:01Z"`, `"window_end":"2026-12-04T10:00:01+01:30"`},
		{`"site":"s"`, `"site":"s","extra":1`}, {`{"name"`, ` {"name"`}, {`"count":3`, `"count": 3`},
		{`"lineage":{`, `"labels":{},"lineage":{`}, {`"lineage":{`, `"labels":{"b":"1","a":"2","b":"3"},"lineage":{`},
		{`"lineage":{`, `"labels":{"a":null},"lineage":{`}, {`"lineage":{`, `"partial":false,"lineage":{`},
		{`"updated":"2026-12-04T10:00:02Z"}`, `"updated":"2026-12-04T10:00:02Z"}x`},
		{`"updated":"2026-12-04T10:00:02Z"}`, `"updated":"2026-12-04T10:00:02Z"`},
	} {
		line := []byte(replaceOnce(good, c.from, c.to))
		checkDecode(t, line)
	}
}

func replaceOnce(s, from, to string) string {
	for i := 0; i+len(from) <= len(s); i++ {
		if s[i:i+len(from)] == from {
			return s[:i] + to + s[i+len(from):]
		}
	}
	panic("no " + from)
}

// FuzzDecodeValue: for any line, decodeValue agrees with json.Unmarshal.
func FuzzDecodeValue(f *testing.F) {
	v := &Value{Name: "mean", Key: "s1l1.press.f0", Value: 71.25, Count: 100, WindowStart: t0, WindowEnd: t0.Add(time.Second),
		Labels:     map[string]string{"sku": "SKU-1", "a": "b"},
		Lineage:    Lineage{Agent: "gw1", Site: "site1", Incarnation: "b0e1", ConfigVersion: "cv", Signal: "s1l1.press.f0", FirstSeq: 60, StreamSeq: 600},
		DefVersion: "0a1b2c3d4e5f", Updated: t0.Add(1500 * time.Millisecond), Partial: true, Historical: true}
	line, _ := encodeValue(v)
	f.Add(line)
	v.Labels, v.Partial, v.Lineage.Incarnation, v.Value = nil, false, "", -2.5e-9
	line, _ = encodeValue(v)
	f.Add(line)
	f.Add([]byte(`{"name":"x"}`))
	f.Fuzz(func(t *testing.T, line []byte) { checkDecode(t, line) })
}

func BenchmarkDecodeValue(b *testing.B) {
	v := &Value{Name: "mean", Key: "s1l1.press.f0", Value: 71.25, Count: 100, WindowStart: t0, WindowEnd: t0.Add(time.Second),
		Lineage:    Lineage{Agent: "gw1", Site: "site1", Incarnation: "b0e1", ConfigVersion: "cv", Signal: "s1l1.press.f0", FirstSeq: 60, StreamSeq: 600},
		DefVersion: "0a1b2c3d4e5f", Updated: t0.Add(1500 * time.Millisecond)}
	line, _ := encodeValue(v)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			var v Value
			_ = decodeValue(line, &v)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var v Value
			_ = json.Unmarshal(line, &v)
		}
	})
}
