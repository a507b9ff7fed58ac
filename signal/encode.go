package signal

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The JSON encoders here are hand-written appenders: the agent encodes every sample once, on the hot
// path, and encoding/json's reflection costs several times more. The output is plain JSON described
// by docs/wire-format.md and docs/batch.schema.json; DecodeBatch reads it back exactly.

// AppendSampleJSON appends s as one JSON object.
func AppendSampleJSON(dst []byte, s *Sample) []byte {
	dst = append(dst, `{"sig":`...)
	dst = appendString(dst, s.Signal)
	dst = append(dst, `,"ts":`...)
	dst = appendTime(dst, s.Time)
	switch s.Value.kind {
	case KindFloat:
		dst = append(dst, `,"f":`...)
		dst = appendFloat(dst, math.Float64frombits(s.Value.num))
	case KindInt:
		dst = append(dst, `,"i":`...)
		dst = strconv.AppendInt(dst, int64(s.Value.num), 10)
	case KindBool:
		dst = append(dst, `,"b":`...)
		dst = strconv.AppendBool(dst, s.Value.num != 0)
	case KindString:
		dst = append(dst, `,"s":`...)
		dst = appendString(dst, s.Value.str)
	}
	switch s.Quality {
	case Good:
	case Uncertain:
		dst = append(dst, `,"q":"uncertain"`...)
	default:
		// A quality outside the contract is not good; writing its Go name would make the whole batch
		// undecodable, so it travels as "bad" (the reason, if any, is kept).
		dst = append(dst, `,"q":"bad"`...)
	}
	if s.Reason != "" {
		dst = append(dst, `,"r":`...)
		dst = appendString(dst, s.Reason)
	}
	if s.Source != "" {
		dst = append(dst, `,"src":`...)
		dst = appendString(dst, s.Source)
	}
	dst = appendLabels(dst, s.Labels)
	return append(dst, '}')
}

// AppendFeatureJSON appends f as one JSON object.
func AppendFeatureJSON(dst []byte, f *Feature) []byte {
	dst = append(dst, `{"sig":`...)
	dst = appendString(dst, f.Signal)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, f.Name)
	dst = append(dst, `,"start":`...)
	dst = appendTime(dst, f.WindowStart)
	dst = append(dst, `,"end":`...)
	dst = appendTime(dst, f.WindowEnd)
	dst = append(dst, `,"v":`...)
	dst = appendFloat(dst, f.Value)
	dst = append(dst, `,"n":`...)
	dst = strconv.AppendInt(dst, f.Count, 10)
	if f.Partial {
		dst = append(dst, `,"partial":true`...)
	}
	dst = appendLabels(dst, f.Labels)
	return append(dst, '}')
}

// AppendSamplesJSON appends samples as a JSON array.
func AppendSamplesJSON(dst []byte, samples []Sample) []byte {
	dst = append(dst, '[')
	for i := range samples {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendSampleJSON(dst, &samples[i])
	}
	return append(dst, ']')
}

// AppendFeaturesJSON appends features as a JSON array.
func AppendFeaturesJSON(dst []byte, features []Feature) []byte {
	dst = append(dst, '[')
	for i := range features {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendFeatureJSON(dst, &features[i])
	}
	return append(dst, ']')
}

func appendLabels(dst []byte, l Labels) []byte {
	if len(l) == 0 {
		return dst
	}
	dst = append(dst, `,"lbl":{`...)
	for i, kv := range l {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, kv.Key)
		dst = append(dst, ':')
		dst = appendString(dst, kv.Value)
	}
	return append(dst, '}')
}

// appendFloat writes the shortest representation that parses back to the same float64.
// JSON has no NaN or infinities, so those travel as the strings "NaN", "Inf" and "-Inf".
func appendFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Inf"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Inf"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// RFC 3339 has four-digit years only. A device clock can report anything, and one unparsable timestamp
// would make the whole batch undecodable, so times outside [minWireTime, maxWireTime] are clamped.
var (
	minWireTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	maxWireTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// wireClamp returns t in UTC (without monotonic reading), clamped to the years RFC 3339 can write.
func wireClamp(t time.Time) time.Time {
	t = t.UTC()
	if t.Before(minWireTime) {
		return minWireTime
	}
	if t.After(maxWireTime) {
		return maxWireTime
	}
	return t
}

// appendTime writes an RFC 3339 UTC timestamp with nanoseconds. The zero time is written as null.
func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = wireClamp(t).AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// safeASCII marks bytes that need no escaping inside a JSON string.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for i := 0x20; i < utf8.RuneSelf; i++ {
		t[i] = i != '"' && i != '\\'
	}
	return t
}()

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as with encoding/json.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if safeASCII[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript string literals.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
