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
	if b, ok := appendValue(make([]byte, 0, 512), v); ok {
		return b, nil
	}
	return json.Marshal(v)
}

func appendValue(b []byte, v *Value) ([]byte, bool) {
	ok := true
	str := func(name, s string) {
		b = append(b, name...)
		if ok = ok && plain(s); ok {
			b = append(append(append(b, '"'), s...), '"')
		}
	}
	tm := func(name string, t time.Time) {
		b = append(b, name...)
		if y := t.Year(); y < 0 || y > 9999 {
			ok = false
			return
		}
		b = append(t.AppendFormat(append(b, '"'), time.RFC3339Nano), '"')
	}
	str(`{"name":`, v.Name)
	str(`,"key":`, v.Key)
	b = append(b, `,"value":`...)
	b, ok = appendFloat(b, v.Value, ok)
	b = strconv.AppendInt(append(b, `,"count":`...), v.Count, 10)
	tm(`,"window_start":`, v.WindowStart)
	tm(`,"window_end":`, v.WindowEnd)
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
	tm(`,"updated":`, v.Updated)
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
