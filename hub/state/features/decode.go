package features

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// decodeValue is json.Unmarshal(line, v) for lines in the shape appendValue writes, without
// reflection: a follower folds every value other replicas write, and a starting replica the whole
// log. Anything else (fields in another order, escapes, numbers json reads differently) goes
// through encoding/json, so the result is always what json.Unmarshal gives.
func decodeValue(line []byte, v *Value) error {
	*v = Value{}
	if d := (lineDecoder{b: line}); d.value(v) {
		return nil
	}
	*v = Value{}
	return json.Unmarshal(line, v)
}

// lineDecoder reads one line field by field in appendValue's order; ok turns false at the first
// byte it does not expect.
type lineDecoder struct {
	b  []byte
	ok bool
}

func (d *lineDecoder) value(v *Value) bool {
	d.ok = true
	v.Name = d.str(`{"name":`)
	v.Key = d.str(`,"key":`)
	v.Value = d.float(`,"value":`)
	v.Count = d.int(`,"count":`)
	v.WindowStart = d.time(`,"window_start":`)
	v.WindowEnd = d.time(`,"window_end":`)
	v.Partial = d.opt(`,"partial":true`)
	v.Historical = d.opt(`,"historical":true`)
	if d.opt(`,"labels":{`) {
		v.Labels = map[string]string{}
		for i := 0; d.ok; i++ {
			if d.opt(`}`) {
				break
			}
			sep := `,`
			if i == 0 {
				sep = ``
			}
			k := d.str(sep)
			v.Labels[k] = d.str(`:`)
		}
	}
	l := &v.Lineage
	l.Agent = d.str(`,"lineage":{"agent":`)
	l.Site = d.str(`,"site":`)
	if d.peek(`,"incarnation":`) {
		l.Incarnation = d.str(`,"incarnation":`)
	}
	l.ConfigVersion = d.str(`,"config_version":`)
	l.Signal = d.str(`,"signal":`)
	l.FirstSeq = d.uint(`,"first_seq":`)
	l.StreamSeq = d.uint(`,"stream_seq":`)
	v.DefVersion = d.str(`},"def_version":`)
	v.Updated = d.time(`,"updated":`)
	d.lit(`}`)
	return d.ok && len(d.b) == 0
}

func (d *lineDecoder) peek(s string) bool { return d.ok && bytes.HasPrefix(d.b, []byte(s)) }

// lit consumes s, or fails.
func (d *lineDecoder) lit(s string) {
	if !d.peek(s) {
		d.ok = false
		return
	}
	d.b = d.b[len(s):]
}

// opt consumes s if it is next.
func (d *lineDecoder) opt(s string) bool {
	if d.peek(s) {
		d.b = d.b[len(s):]
		return true
	}
	return false
}

// str reads prefix then a quoted string of printable ASCII without escapes (what json reads as is).
func (d *lineDecoder) str(prefix string) string {
	d.lit(prefix + `"`)
	if !d.ok {
		return ""
	}
	for i, c := range d.b {
		switch {
		case c == '"':
			s := string(d.b[:i])
			d.b = d.b[i+1:]
			return s
		case c < 0x20 || c >= 0x7f || c == '\\':
			d.ok = false
			return ""
		}
	}
	d.ok = false
	return ""
}

// number reads prefix then a JSON number (the grammar's, not strconv's: no "+1", ".5", "01", "Inf").
func (d *lineDecoder) number(prefix string, integer bool) []byte {
	d.lit(prefix)
	if !d.ok {
		return nil
	}
	b, i := d.b, 0
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	if n := digits(); n == 0 || (n > 1 && b[start] == '0') {
		d.ok = false
		return nil
	}
	if !integer {
		if i < len(b) && b[i] == '.' {
			i++
			if digits() == 0 {
				d.ok = false
				return nil
			}
		}
		if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
			i++
			if i < len(b) && (b[i] == '+' || b[i] == '-') {
				i++
			}
			if digits() == 0 {
				d.ok = false
				return nil
			}
		}
	}
	num := b[:i]
	d.b = b[i:]
	return num
}

func (d *lineDecoder) float(prefix string) float64 {
	num := d.number(prefix, false)
	if !d.ok {
		return 0
	}
	f, err := strconv.ParseFloat(string(num), 64)
	d.ok = err == nil
	return f
}

func (d *lineDecoder) int(prefix string) int64 {
	num := d.number(prefix, true)
	if !d.ok {
		return 0
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	d.ok = err == nil
	return n
}

func (d *lineDecoder) uint(prefix string) uint64 {
	num := d.number(prefix, true)
	if !d.ok || num[0] == '-' {
		d.ok = false
		return 0
	}
	n, err := strconv.ParseUint(string(num), 10, 64)
	d.ok = err == nil
	return n
}

// time reads prefix then a quoted RFC 3339 time, parsed as time.Time's UnmarshalJSON does.
func (d *lineDecoder) time(prefix string) time.Time {
	d.lit(prefix + `"`)
	if !d.ok {
		return time.Time{}
	}
	end := bytes.IndexByte(d.b, '"')
	if end < 0 {
		d.ok = false
		return time.Time{}
	}
	var t time.Time
	if err := t.UnmarshalText(d.b[:end]); err != nil {
		d.ok = false
		return time.Time{}
	}
	d.b = d.b[end+1:]
	return t
}
