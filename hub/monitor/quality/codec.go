package quality

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/gemba-io/gemba/signal"
)

// A monitor log message is what one replica's ingest observed in one batch: per fresh agents'
// message (a chunk) its identity and, for each monitored value, the hub feature and key it feeds,
// the value, its event time and whether it was partial; samples only as counts (total, bad) per
// feature and key. Binary, with a string table per message, because it is written on the ingest
// hot path for every record:
//
//	'm' 1                                         magic, version
//	'S' uvarint(len) bytes                         next string of the table
//	'C' str(agent) stream str(incarnation) uvarint(first) uvarint(last)
//	'V' str(feature) raw(key) float64 varint(unix ns) flags     a value of the last chunk (flag 1: partial)
//	'Q' str(feature) raw(key) varint(unix ns) uvarint(total) uvarint(bad)   sample counts of the last chunk
//
// str(x) is the uvarint index of x in the table; raw(x) is uvarint(len) bytes: keys are mostly
// distinct within a message (a signal, a SKU), and a table lookup per record cost more than it saved.
const (
	magic   = 'm'
	version = 1
)

// sampleRec is the sample counts of one feature × key in one message.
type sampleRec struct {
	Feature, Key string
	Time         int64
	Total, Bad   uint64
}

// encoder appends entries to one message.
type encoder struct {
	buf  []byte
	strs map[string]uint64
}

func (e *encoder) reset() {
	e.buf = append(e.buf[:0], magic, version)
	if e.strs == nil {
		e.strs = map[string]uint64{}
	}
	clear(e.strs)
}

// encMark is where a message stood: its length and string table size.
type encMark struct{ buf, strs int }

func (e *encoder) mark() encMark { return encMark{len(e.buf), len(e.strs)} }

// rewind takes the message back to m, forgetting the strings added since.
func (e *encoder) rewind(m encMark) {
	e.buf = e.buf[:m.buf]
	for s, i := range e.strs {
		if i >= uint64(m.strs) {
			delete(e.strs, s)
		}
	}
}

func (e *encoder) str(s string) uint64 {
	if i, ok := e.strs[s]; ok {
		return i
	}
	i := uint64(len(e.strs))
	e.strs[s] = i
	e.buf = append(e.buf, 'S')
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s)))
	e.buf = append(e.buf, s...)
	return i
}

func (e *encoder) chunk(h *signal.Header) {
	a, inc := e.str(h.Agent), e.str(h.Incarnation)
	e.buf = append(e.buf, 'C')
	e.buf = binary.AppendUvarint(e.buf, a)
	e.buf = append(e.buf, byte(h.Stream))
	e.buf = binary.AppendUvarint(e.buf, inc)
	e.buf = binary.AppendUvarint(e.buf, h.FirstSeq)
	e.buf = binary.AppendUvarint(e.buf, h.LastSeq)
}

func (e *encoder) raw(s string) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) value(feature, key string, v float64, t int64, partial bool) {
	f := e.str(feature)
	e.buf = append(e.buf, 'V')
	e.buf = binary.AppendUvarint(e.buf, f)
	e.raw(key)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(v))
	e.buf = binary.AppendVarint(e.buf, t)
	var flags byte
	if partial {
		flags = 1
	}
	e.buf = append(e.buf, flags)
}

func (e *encoder) samples(feature, key string, t int64, total, bad uint64) {
	f := e.str(feature)
	e.buf = append(e.buf, 'Q')
	e.buf = binary.AppendUvarint(e.buf, f)
	e.raw(key)
	e.buf = binary.AppendVarint(e.buf, t)
	e.buf = binary.AppendUvarint(e.buf, total)
	e.buf = binary.AppendUvarint(e.buf, bad)
}

// errMalformed marks a message that does not decode.
var errMalformed = errors.New("malformed monitor log message")

// visitor receives a message's entries in order. Keys alias the message's bytes (valid during the
// call): the fold looks them up without allocating, and copies only a key it has not seen.
type visitor interface {
	chunk(agent string, stream signal.Stream, incarnation string, first, last uint64)
	value(feature string, key []byte, v float64, t int64, partial bool)
	samples(feature string, key []byte, t int64, total, bad uint64)
}

// scan reads a whole message, handing each entry to v (nil: only check it); the error names the
// entry and its byte offset. The fold scans twice, first with nil, so that a message broken half
// way changes nothing.
func scan(data []byte, v visitor) error {
	if len(data) < 2 || data[0] != magic {
		return fmt.Errorf("%w: not a monitor log message (%d bytes)", errMalformed, len(data))
	}
	if data[1] != version {
		return fmt.Errorf("%w: version %d, this hub reads %d", errMalformed, data[1], version)
	}
	d := decoder{data: data, pos: 2}
	chunks := 0
	for n := 0; d.pos < len(data); n++ {
		start := d.pos
		tag := data[d.pos]
		d.pos++
		fail := func(what string) error {
			return fmt.Errorf("%w: entry %d (%q) at byte %d: %s", errMalformed, n, tag, start, what)
		}
		switch tag {
		case 'S':
			l, ok := d.uvarint()
			if !ok || l > uint64(len(data)-d.pos) {
				return fail("bad string length")
			}
			d.strs = append(d.strs, string(data[d.pos:d.pos+int(l)]))
			d.pos += int(l)
		case 'C':
			agent, ok := d.str()
			if !ok {
				return fail(d.why)
			}
			if d.pos >= len(data) || data[d.pos] >= byte(signal.NumStreams) {
				return fail("bad stream")
			}
			st := signal.Stream(data[d.pos])
			d.pos++
			inc, ok := d.str()
			if !ok {
				return fail(d.why)
			}
			f, ok1 := d.uvarint()
			l, ok2 := d.uvarint()
			if !ok1 || !ok2 || l < f {
				return fail("bad sequence range")
			}
			chunks++
			if v != nil {
				v.chunk(agent, st, inc, f, l)
			}
		case 'V', 'Q':
			if chunks == 0 {
				return fail("a value before any chunk")
			}
			feat, ok1 := d.str()
			key, ok2 := d.raw()
			if !ok1 || !ok2 {
				return fail(d.why)
			}
			if tag == 'V' {
				if len(data)-d.pos < 8 {
					return fail("truncated value")
				}
				x := math.Float64frombits(binary.LittleEndian.Uint64(data[d.pos:]))
				d.pos += 8
				t, ok := d.varint()
				if !ok || d.pos >= len(data) {
					return fail("bad time or flags")
				}
				flags := data[d.pos]
				d.pos++
				if v != nil {
					v.value(feat, key, x, t, flags&1 != 0)
				}
				continue
			}
			t, ok := d.varint()
			total, ok1 := d.uvarint()
			bad, ok2 := d.uvarint()
			if !ok || !ok1 || !ok2 || bad > total {
				return fail("bad sample counts")
			}
			if v != nil {
				v.samples(feat, key, t, total, bad)
			}
		default:
			return fail("unknown entry")
		}
	}
	return nil
}

type decoder struct {
	data []byte
	pos  int
	strs []string
	why  string
}

func (d *decoder) uvarint() (uint64, bool) {
	v, n := binary.Uvarint(d.data[d.pos:])
	if n <= 0 {
		return 0, false
	}
	d.pos += n
	return v, true
}

func (d *decoder) varint() (int64, bool) {
	v, n := binary.Varint(d.data[d.pos:])
	if n <= 0 {
		return 0, false
	}
	d.pos += n
	return v, true
}

func (d *decoder) raw() ([]byte, bool) {
	l, ok := d.uvarint()
	if !ok || l > uint64(len(d.data)-d.pos) {
		d.why = "bad key length"
		return nil, false
	}
	b := d.data[d.pos : d.pos+int(l)]
	d.pos += int(l)
	return b, true
}

func (d *decoder) str() (string, bool) {
	i, ok := d.uvarint()
	if !ok {
		d.why = "bad string index"
		return "", false
	}
	if i >= uint64(len(d.strs)) {
		d.why = fmt.Sprintf("string index %d beyond the %d defined", i, len(d.strs))
		return "", false
	}
	return d.strs[i], true
}
