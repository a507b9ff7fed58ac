package features

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestEncodeValueIsJSONMarshal: the fast encoder writes exactly what encoding/json writes, for
// values across every field's range, strings that need escaping included.
func TestEncodeValueIsJSONMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "mean", "line1.pack.parts", "SKU-1", `quo"te`, `back\\slash`, "<tag>&", "tab\there", "é", "\u2028",
		"\x7f", "a\x00b", string([]byte{0xff, 0xfe})}
	floats := []float64{0, -0.0, 1, -1, 0.1, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 1.5e21, -2.5e-9, 123456.789, math.MaxFloat64,
		math.SmallestNonzeroFloat64, 3.3333333333333335, 1e-300, 100, 7}
	times := []time.Time{{}, t0, t0.Add(123456789), time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), t0.In(time.FixedZone("x", 3600+1800))}
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	fast := 0
	var tc timeCache
	for i := range 20000 {
		v := &Value{Name: pick(strs), Key: pick(strs), Value: floats[r.IntN(len(floats))] * float64(1+r.IntN(3)),
			Count: r.Int64N(1 << 40), WindowStart: times[r.IntN(len(times))], WindowEnd: times[r.IntN(len(times))],
			Partial: r.IntN(2) == 0, Historical: r.IntN(2) == 0,
			Lineage: Lineage{Agent: pick(strs), Site: pick(strs), Incarnation: pick(strs), ConfigVersion: pick(strs), Signal: pick(strs),
				FirstSeq: r.Uint64(), StreamSeq: uint64(r.IntN(1000))},
			DefVersion: pick(strs), Updated: times[r.IntN(len(times))], Revision: uint64(i)}
		if r.IntN(3) == 0 {
			v.Labels = map[string]string{}
			for range 1 + r.IntN(4) {
				v.Labels[pick(strs)] = pick(strs)
			}
		}
		if i%7 == 0 { // the common case: plain strings, times in range
			v.Name, v.Key, v.Lineage.Signal, v.WindowStart, v.WindowEnd, v.Updated = "mean", "line1.press.f0", "line1.press.f0", t0, t0.Add(time.Second), t0
			v.Lineage.Agent, v.Lineage.Site, v.Lineage.ConfigVersion, v.DefVersion, v.Labels = "gw1", "site1", "cv", "abc", nil
			v.Lineage.Incarnation = pick([]string{"", "b0e1"})
			if math.IsInf(v.Value, 0) {
				v.Value = 71.25
			}
		}
		want, werr := json.Marshal(v)
		got, gerr := encodeValue(v)
		if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("value %+v\n got %s (%v)\nwant %s (%v)", v, got, gerr, want, werr)
		}
		checkDecode(t, want)
		// With the time cache, after a value with other times (and then the same ones again).
		for range 2 {
			if got, ok := appendValue(nil, v, &tc); ok && !bytes.Equal(got, want) {
				t.Fatalf("value %+v with the time cache\n got %s\nwant %s", v, got, want)
			}
		}
		if _, ok := appendValue(nil, v, nil); ok {
			if d := (lineDecoder{b: want}); !d.value(&Value{}) {
				t.Fatalf("a line the fast encoder wrote missed the fast decoder: %s", want)
			}
			fast++
		} else if i%7 == 0 {
			t.Fatalf("a common value missed the fast path: %+v", v)
		}
	}
	t.Logf("%d of 20000 values took the fast path", fast)
	for _, f := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := encodeValue(&Value{Value: f}); err == nil {
			t.Errorf("value %v encoded without error", f)
		}
	}
}

func BenchmarkEncodeValue(b *testing.B) {
	v := &Value{Name: "mean", Key: "s1l1.press.f0", Value: 71.25, Count: 100, WindowStart: t0, WindowEnd: t0.Add(time.Second),
		Lineage:    Lineage{Agent: "gw1", Site: "site1", Incarnation: "b0e1", ConfigVersion: "cv", Signal: "s1l1.press.f0", FirstSeq: 60, StreamSeq: 600},
		DefVersion: "0a1b2c3d4e5f", Updated: t0.Add(1500 * time.Millisecond)}
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			_, _ = encodeValue(v)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(v)
		}
	})
}
