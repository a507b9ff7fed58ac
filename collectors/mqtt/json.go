package mqtt

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gemba-io/gemba/signal"
)

// parseJSON maps a JSON payload to samples. Every problem is recorded in m; whatever could be
// mapped is appended to dst.
func (s *sub) parseJSON(dst []signal.Sample, m *msgCtx, payload []byte) []signal.Sample {
	// encoding/json silently replaces invalid UTF-8 with U+FFFD; a sensor sending it is broken
	// and the operator should hear about it rather than see mangled strings.
	if !utf8.Valid(payload) {
		m.addProblem(reasonInvalidUTF8, "payload is not valid UTF-8")
		return dst
	}
	d := &s.doc
	if err := d.parse(payload); err != nil {
		m.addProblem(reasonInvalidJSON, "%v", err)
		return dst
	}
	if s.each == nil {
		return s.mapElement(dst, m, d, 0, "")
	}
	n, ok := s.each.lookup(d, 0)
	if !ok {
		m.addProblem(reasonMissingField, "each: %s not in payload", s.each)
		return dst
	}
	if d.nodes[n].kind != jArr {
		m.addProblem(reasonWrongType, "each: %s is %s, not an array", s.each, jsonKind(d.scalar(n)))
		return dst
	}
	i := 0
	for e := d.nodes[n].first; e >= 0; e = d.nodes[e].next {
		dst = s.mapElement(dst, m, d, e, "["+strconv.Itoa(i)+"]")
		i++
	}
	return dst
}

// mapElement maps one element (the whole document, or one entry of the each array).
func (s *sub) mapElement(dst []signal.Sample, m *msgCtx, d *jdoc, elem int32, at string) []signal.Sample {
	c := tctx{topic: m.topic, levels: m.levels, doc: d, elem: elem}
	ts := m.recv
	quality, reason := signal.Good, ""
	if s.timePath != nil {
		if t, err := s.readTime(d, elem); err != nil {
			m.addProblem(reasonBadTime, "%s%s: %v", at, s.timePath, err)
			// The reading is real, its time is not: keep it at receive time, marked as such.
			quality, reason = signal.Uncertain, "bad time field: "+err.Error()
		} else {
			ts = t
		}
	}
	labels := s.labelsFor(m, &c)
	emit := func(name string, sig *template, n int32, typ string) {
		c.field = name
		t := s.signal
		if sig != nil {
			t = *sig
		}
		sn, err := t.expand(&c)
		if err != nil {
			m.addProblem(reasonBadName, "%s%s: %v", at, name, err)
			return
		}
		smp := signal.Sample{Signal: sn, Time: ts, Quality: quality, Reason: reason, Source: m.source, Labels: labels}
		nd := &d.nodes[n]
		if nd.kind == jNum && (typ == "" || typ == "auto") {
			// Fast path: a number read as is needs no intermediate string.
			if num, ok := parseNumber(bytesView(nd.raw)); ok {
				smp.Value = num
				dst = append(dst, smp)
				return
			}
		}
		v := d.scalar(n)
		val, err := convert(v, typ)
		switch {
		case err != nil:
			m.addProblem(reasonWrongType, "%s%s: %v", at, name, err)
			smp.Quality, smp.Reason = signal.Bad, at+name+": "+err.Error()
		case v == nil:
			smp.Quality, smp.Reason = signal.Bad, "null value"
		default:
			smp.Value = val
		}
		dst = append(dst, smp)
	}
	if s.allLeaves {
		ls := leaves(s.leafBuf[:0], d, "", elem, maxLeaves+1)
		s.leafBuf = ls
		if len(ls) > maxLeaves {
			m.addProblem(reasonTooMany, "%smore than %d values; configure fields", at, maxLeaves)
			ls = ls[:maxLeaves]
		}
		for _, l := range ls {
			if s.timePath != nil && !s.timePath.root && l.path == s.timePath.src {
				continue
			}
			emit(l.path, nil, l.n, "")
		}
		return dst
	}
	for i := range s.fields {
		f := &s.fields[i]
		n, ok := f.path.lookup(d, elem)
		if !ok {
			if !f.optional {
				m.addProblem(reasonMissingField, "%s%s not in payload", at, f.path)
			}
			continue
		}
		emit(f.name, f.signal, n, f.typ)
	}
	return dst
}

func (s *sub) readTime(d *jdoc, elem int32) (time.Time, error) {
	n, ok := s.timePath.lookup(d, elem)
	if !ok {
		return time.Time{}, fmt.Errorf("not in payload")
	}
	return parseTime(d.scalar(n), s.timeFmt)
}

// Plausible epochs for auto detection: seconds until ~5138 AD are below 1e11.
const (
	autoSecLimit = 1e11
	autoMsLimit  = 1e14
	autoUsLimit  = 1e17
)

// parseTime reads a time value in the configured format ("" or auto guesses).
func parseTime(v any, format string) (time.Time, error) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return time.Time{}, fmt.Errorf("%q is not a number", string(x))
		}
		if !isEpochFormat(format) {
			return time.Time{}, fmt.Errorf("number %s does not match layout %q", string(x), format)
		}
		return epoch(string(x), f, format)
	case string:
		switch format {
		case "", "auto", "rfc3339":
			if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return t, nil
			}
			if f, err := strconv.ParseFloat(x, 64); err == nil && format != "rfc3339" && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return epoch(x, f, format)
			}
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", x)
		case "unix_s", "unix_ms", "unix_us", "unix_ns":
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return time.Time{}, fmt.Errorf("%q is not a number", x)
			}
			return epoch(x, f, format)
		default:
			t, err := time.Parse(format, x)
			if err != nil {
				return time.Time{}, fmt.Errorf("%q does not match layout %q", x, format)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("expected a time, got %s", jsonKind(v))
}

func isEpochFormat(f string) bool {
	switch f {
	case "", "auto", "unix_s", "unix_ms", "unix_us", "unix_ns":
		return true
	}
	return false
}

func epoch(text string, f float64, format string) (time.Time, error) {
	if format == "" || format == "auto" {
		switch a := math.Abs(f); {
		case a < autoSecLimit:
			format = "unix_s"
		case a < autoMsLimit:
			format = "unix_ms"
		case a < autoUsLimit:
			format = "unix_us"
		default:
			format = "unix_ns"
		}
	}
	// Integers are converted exactly; floats (unix_s with a fraction) to the nanosecond. Text
	// with a fraction or an exponent is no integer: ParseInt (and its error) is spared on it.
	if !strings.ContainsAny(text, ".eE") {
		if i, err := strconv.ParseInt(text, 10, 64); err == nil {
			switch format {
			case "unix_s":
				if i > math.MaxInt64/int64(time.Second) || i < math.MinInt64/int64(time.Second) {
					return time.Time{}, fmt.Errorf("%s out of range", text)
				}
				return time.Unix(i, 0).UTC(), nil
			case "unix_ms":
				return time.UnixMilli(i).UTC(), nil
			case "unix_us":
				return time.UnixMicro(i).UTC(), nil
			case "unix_ns":
				return time.Unix(0, i).UTC(), nil
			}
		}
	}
	var unit int64 // nanoseconds per unit of format
	switch format {
	case "unix_s":
		unit = 1e9
	case "unix_ms":
		unit = 1e6
	case "unix_us":
		unit = 1e3
	default: // unix_ns
		unit = 1
	}
	if ns, ok := decimalNanos(text, unit); ok {
		return time.Unix(0, ns).UTC(), nil
	}
	ns := f * float64(unit)
	if ns > math.MaxInt64 || ns < math.MinInt64 {
		return time.Time{}, fmt.Errorf("%s out of range", text)
	}
	return time.Unix(0, int64(ns)).UTC(), nil
}

// decimalNanos converts a plain decimal ("1700000000.25") in units of unit nanoseconds without
// float rounding. It reports false for exponents or values out of range.
func decimalNanos(text string, unit int64) (int64, bool) {
	text = strings.TrimSpace(text)
	neg := strings.HasPrefix(text, "-")
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(text, "-"), ".")
	if intPart == "" || len(intPart) > 19 {
		return 0, false
	}
	i, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil || i > math.MaxInt64/unit {
		return 0, false
	}
	ns := i * unit
	scale := unit
	for _, c := range frac {
		if c < '0' || c > '9' {
			return 0, false
		}
		scale /= 10
		if scale == 0 {
			break // below a nanosecond
		}
		ns += int64(c-'0') * scale
		if ns < 0 {
			return 0, false
		}
	}
	if neg {
		ns = -ns
	}
	return ns, true
}
