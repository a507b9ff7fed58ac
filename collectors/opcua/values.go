package opcua

import (
	"encoding/base64"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/signal"
)

// quality maps an OPC UA status code to its class and name. The reason is empty for Good.
func quality(code ua.StatusCode) (signal.Quality, string) {
	switch uint32(code) & 0xC0000000 {
	case 0:
		return signal.Good, ""
	case 0x40000000:
		return signal.Uncertain, statusName(code)
	}
	return signal.Bad, statusName(code)
}

// statusName is the code's symbolic name, e.g. "BadNodeIdUnknown" (info bits ignored).
func statusName(code ua.StatusCode) string {
	if name, ok := statusNames()[ua.StatusCode(uint32(code)&0xFFFF0000)]; ok {
		return name
	}
	return fmt.Sprintf("0x%08X", uint32(code))
}

// statusNames holds every known code's name, built once: every Bad or Uncertain sample carries
// one, and building it each time allocated. The map is read-only after construction, so the
// runner goroutines of all collectors read it without a lock.
var statusNames = sync.OnceValue(func() map[ua.StatusCode]string {
	m := make(map[ua.StatusCode]string, len(ua.StatusCodes))
	for code, d := range ua.StatusCodes {
		// gopcua spells "Id" as "ID"; logs and samples use the specification's names
		m[code] = strings.ReplaceAll(strings.TrimPrefix(d.Name, "Status"), "ID", "Id")
	}
	return m
})

// sampleTime is the source timestamp, else the server timestamp, else when we received it.
func sampleTime(dv *ua.DataValue, now time.Time) time.Time {
	if !dv.SourceTimestamp.IsZero() && dv.SourceTimestamp.Year() > 1601 {
		return dv.SourceTimestamp
	}
	if !dv.ServerTimestamp.IsZero() && dv.ServerTimestamp.Year() > 1601 {
		return dv.ServerTimestamp
	}
	return now
}

// convert appends the samples of one DataValue: one for a scalar, one per element (up to
// maxArray) for an array, named signal[i]. It returns how many array elements were dropped.
func convert(out []signal.Sample, it *item, dv *ua.DataValue, now time.Time) ([]signal.Sample, int) {
	base := signal.Sample{Signal: it.spec.Signal, Time: sampleTime(dv, now), Source: it.source}
	base.Quality, base.Reason = quality(dv.Status)
	if dv.Value == nil || dv.Value.Value() == nil {
		if base.Quality == signal.Good {
			base.Quality, base.Reason = signal.Bad, "no value"
		}
		return append(out, base), 0
	}
	v := dv.Value
	raw := v.Value()
	if v.ArrayLength() > 0 || isArray(v, raw) {
		rv := reflect.ValueOf(raw)
		if rv.Kind() != reflect.Slice {
			return append(out, bad(base, "unsupported array value")), 0
		}
		n := rv.Len()
		keep := min(n, it.spec.MaxArray)
		names := it.elementNames(keep)
		for i := 0; i < keep; i++ {
			s := base
			s.Signal = names[i]
			val, err := scalar(rv.Index(i).Interface())
			if err != nil {
				s = bad(s, err.Error())
			} else {
				s.Value = val
			}
			out = append(out, s)
		}
		return out, n - keep
	}
	if v.Type() == ua.TypeIDByteString {
		if b, ok := raw.([]byte); ok {
			base.Value = signal.String(base64.StdEncoding.EncodeToString(b))
			return append(out, base), 0
		}
	}
	val, err := scalar(raw)
	if err != nil {
		return append(out, bad(base, err.Error())), 0
	}
	base.Value = val
	return append(out, base), 0
}

// isArray catches arrays the variant did not flag (a ByteString scalar is []byte, not an array).
func isArray(v *ua.Variant, raw any) bool {
	if v.Type() == ua.TypeIDByteString {
		return false
	}
	k := reflect.TypeOf(raw).Kind()
	return k == reflect.Slice
}

func bad(s signal.Sample, reason string) signal.Sample {
	s.Quality, s.Reason, s.Value = signal.Bad, reason, signal.Value{}
	return s
}

// scalar converts one built-in type to a typed value.
func scalar(x any) (signal.Value, error) {
	switch v := x.(type) {
	case bool:
		return signal.Bool(v), nil
	case int8:
		return signal.Int(int64(v)), nil
	case int16:
		return signal.Int(int64(v)), nil
	case int32:
		return signal.Int(int64(v)), nil
	case int64:
		return signal.Int(v), nil
	case uint8:
		return signal.Int(int64(v)), nil
	case uint16:
		return signal.Int(int64(v)), nil
	case uint32:
		return signal.Int(int64(v)), nil
	case uint64:
		if v > math.MaxInt64 {
			// exact decimal digits: a float would round it (docs/wire-format.md, Values from the sources)
			return signal.String(strconv.FormatUint(v, 10)), nil
		}
		return signal.Int(int64(v)), nil
	case float32:
		return signal.Float(float64(v)), nil
	case float64:
		return signal.Float(v), nil
	case string:
		return signal.String(v), nil
	case time.Time:
		// RFC 3339 in UTC, as the wire writes times; the year must have four digits
		if y := v.UTC().Year(); y < 0 || y > 9999 {
			return signal.Value{}, fmt.Errorf("DateTime %s is outside years 0000-9999", v.UTC().Format(time.RFC3339))
		}
		return signal.String(v.UTC().Format(time.RFC3339Nano)), nil
	case *ua.LocalizedText:
		if v == nil {
			return signal.String(""), nil
		}
		return signal.String(v.Text), nil
	case *ua.QualifiedName:
		if v == nil {
			return signal.String(""), nil
		}
		return signal.String(v.Name), nil
	case *ua.NodeID:
		return signal.String(v.String()), nil
	case *ua.GUID:
		return signal.String(v.String()), nil
	case ua.StatusCode:
		return signal.Int(int64(uint32(v))), nil
	case []byte:
		return signal.String(base64.StdEncoding.EncodeToString(v)), nil
	}
	return signal.Value{}, fmt.Errorf("unsupported data type %T", x)
}

// elementNames returns (and caches) "signal[0]".."signal[n-1]" so arrays do not allocate names
// on every notification.
func (it *item) elementNames(n int) []string {
	for len(it.names) < n {
		it.names = append(it.names, it.spec.Signal+"["+strconv.Itoa(len(it.names))+"]")
	}
	return it.names[:n]
}

// passDeadband applies an absolute deadband on the client too: poll mode has no server-side
// filter, and some servers ignore filters. It reports whether the sample should be emitted.
func (it *item) passDeadband(s *signal.Sample) bool {
	db := it.spec.Deadband
	if db.Value <= 0 || (db.Type != "" && db.Type != "absolute") {
		return true
	}
	f, ok := s.Value.Number()
	if !ok || s.Quality != signal.Good {
		it.hasLast = false
		return true
	}
	if it.hasLast && math.Abs(f-it.last) <= db.Value {
		return false
	}
	it.last, it.hasLast = f, true
	return true
}
