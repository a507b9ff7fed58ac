package features

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
)

// encodeValue is json.Marshal(v), byte for byte, without reflection: Flush encodes every changed
// key of every batch. Anything the fast path does not reproduce exactly (a string needing escapes,
// a time outside years 0–9999, a non-finite number) goes through encoding/json.
func encodeValue(v *Value) ([]byte, error) {
	if b, ok := appendValue(make([]byte, 0, 512), v, nil); ok {
		return b, nil
	}
	return json.Marshal(v)
}

// timeCache remembers the last encoding of each of a value's three times: the values of one flush
// mostly share their window and update times, and formatting them is a third of the encoding.
type timeCache struct {
	t   [3]time.Time
	enc [3][]byte
}

// appendValue appends v as json.Marshal writes it; ok is false when it cannot (see encodeValue).
// tc may be nil.
func appendValue(b []byte, v *Value, tc *timeCache) ([]byte, bool) {
	ok := true
	str := func(name, s string) {
		b = append(b, name...)
		if ok = ok && plain(s); ok {
			b = append(append(append(b, '"'), s...), '"')
		}
	}
	tm := func(name string, t time.Time, slot int) {
		b = append(b, name...)
		if tc != nil && tc.enc[slot] != nil && tc.t[slot] == t { // same instant, same location
			b = append(b, tc.enc[slot]...)
			return
		}
		if y := t.Year(); y < 0 || y > 9999 {
			ok = false
			return
		}
		n := len(b)
		b = append(t.AppendFormat(append(b, '"'), time.RFC3339Nano), '"')
		if tc != nil {
			tc.t[slot], tc.enc[slot] = t, append(tc.enc[slot][:0], b[n:]...)
		}
	}
	str(`{"name":`, v.Name)
	str(`,"key":`, v.Key)
	b = append(b, `,"value":`...)
	b, ok = appendFloat(b, v.Value, ok)
	b = strconv.AppendInt(append(b, `,"count":`...), v.Count, 10)
	tm(`,"window_start":`, v.WindowStart, 0)
	tm(`,"window_end":`, v.WindowEnd, 1)
	if v.Partial {
		b = append(b, `,"partial":true`...)
	}
	if v.Historical {
		b = append(b, `,"historical":true`...)
	}
	if len(v.Labels) > 0 {
		keys := make([]string, 0, len(v.Labels))
		for k := range v.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, `,"labels":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			str(`"`[:0], k)
			str(":", v.Labels[k])
		}
		b = append(b, '}')
	}
	l := &v.Lineage
	str(`,"lineage":{"agent":`, l.Agent)
	str(`,"site":`, l.Site)
	if l.Incarnation != "" {
		str(`,"incarnation":`, l.Incarnation)
	}
	str(`,"config_version":`, l.ConfigVersion)
	str(`,"signal":`, l.Signal)
	b = strconv.AppendUint(append(b, `,"first_seq":`...), l.FirstSeq, 10)
	b = strconv.AppendUint(append(b, `,"stream_seq":`...), l.StreamSeq, 10)
	str(`},"def_version":`, v.DefVersion)
	tm(`,"updated":`, v.Updated, 2)
	return append(b, '}'), ok
}

// plain reports whether encoding/json writes s as is between quotes (printable ASCII, no quote,
// backslash or HTML-escaped character).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// appendFloat writes f as encoding/json does (shortest repr, exponent form outside [1e-6, 1e21)).
func appendFloat(b []byte, f float64, ok bool) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, ok
}
