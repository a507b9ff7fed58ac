package inventory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// A value is binary, version 1, all integers varints:
//
//	version(1) flags(bit0 snapshot, bit1 base, bit2 times of the recent ids)
//	summary: onHand produced sold rate [snapT] updated            ← all the watchers decode
//	[snapID] [baseProd baseSold baseMin baseMax]
//	nDays  (day: first absolute, then delta; qty)…
//	nMoves (id; time: first absolute, then delta ≥ 0; signed qty)…
//	nRecent (id)…          with bit2, each "id" is the time it was remembered (Unix seconds: first
//	                       absolute, then signed delta) followed by the id
//
// The times of the recent ids are inside their strings, flagged: a release that does not know them
// reads and rewrites the value (it takes them for ids that match nothing, and clears the flag), and
// a value without them takes its ids as remembered at its last update.
// A quantity is one varint: an integer n (|n| ≤ 2^53) as zigzag(n)<<1, anything else as 1 followed by the
// 8 bytes of the float64; most quantities are whole units and take one or two bytes. Times are Unix ns.
// For a typical key this is under half the size of JSON of the same state (TestValueSize: ~30 bytes
// per movement with ids like "sale:ORD-04000000:1").

const valueVersion = 1

const (
	flagSnap = 1 << iota
	flagBase
	flagRecentTimes
)

var errCorrupt = errors.New("corrupt value")

func appendNum(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) <= 1<<53 {
		n := int64(v)
		return binary.AppendUvarint(b, uint64(n<<1^n>>63)<<1)
	}
	b = append(b, 1)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (st *state) encode(b []byte) []byte {
	flags := uint64(0)
	if st.hasSnap {
		flags |= flagSnap
	}
	if st.hasBase {
		flags |= flagBase
	}
	if len(st.recent) > 0 {
		flags |= flagRecentTimes
	}
	b = append(b, valueVersion)
	b = binary.AppendUvarint(b, flags)
	b = appendNum(b, st.onHand)
	b = appendNum(b, st.produced)
	b = appendNum(b, st.sold)
	b = appendNum(b, st.rate)
	if st.hasSnap {
		b = binary.AppendVarint(b, st.snapT)
	}
	b = binary.AppendVarint(b, st.updated)
	if st.hasSnap {
		b = appendStr(b, st.snapID)
	}
	if st.hasBase {
		b = appendNum(b, st.baseProd)
		b = appendNum(b, st.baseSold)
		b = binary.AppendVarint(b, st.baseMin)
		b = binary.AppendVarint(b, st.baseMax)
	}
	b = binary.AppendUvarint(b, uint64(len(st.days)))
	prev := int64(0)
	for _, d := range st.days {
		b = binary.AppendVarint(b, d.day-prev)
		b = appendNum(b, d.q)
		prev = d.day
	}
	b = binary.AppendUvarint(b, uint64(len(st.moves)))
	prev = 0
	for i, m := range st.moves {
		b = appendStr(b, m.id)
		if i == 0 {
			b = binary.AppendVarint(b, m.t)
		} else {
			b = binary.AppendUvarint(b, uint64(m.t-prev))
		}
		b = appendNum(b, m.q)
		prev = m.t
	}
	b = binary.AppendUvarint(b, uint64(len(st.recent)))
	prev = 0
	for _, g := range st.recent {
		var at [binary.MaxVarintLen64]byte
		n := binary.PutVarint(at[:], g.at-prev)
		b = binary.AppendUvarint(b, uint64(n+len(g.id)))
		b = append(append(b, at[:n]...), g.id...)
		prev = g.at
	}
	return b
}

// dec reads a value. Over a string, ids are substrings of it (one allocation per value); over bytes, the
// summary is read without allocating.
type dec[T ~string | ~[]byte] struct {
	s   T
	i   int
	err error
}

func (d *dec[T]) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", errCorrupt, what, d.i)
	}
}

func (d *dec[T]) uvarint() uint64 {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.i >= len(d.s) {
			d.fail("truncated varint")
			return 0
		}
		c := d.s[d.i]
		d.i++
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x
		}
	}
	d.fail("varint overflow")
	return 0
}

func (d *dec[T]) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *dec[T]) num() float64 {
	h := d.uvarint()
	switch {
	case h&1 == 0:
		u := h >> 1
		return float64(int64(u>>1) ^ -int64(u&1))
	case h == 1:
		if d.i+8 > len(d.s) {
			d.fail("truncated float")
			return 0
		}
		var u uint64
		for k := 7; k >= 0; k-- {
			u = u<<8 | uint64(d.s[d.i+k])
		}
		d.i += 8
		return math.Float64frombits(u)
	}
	d.fail("bad number tag")
	return 0
}

func (d *dec[T]) str() string {
	n := d.uvarint()
	if n > uint64(len(d.s)-d.i) {
		d.fail("truncated string")
		return ""
	}
	s := string(d.s[d.i : d.i+int(n)])
	d.i += int(n)
	return s
}

// count reads a length and checks that at least min bytes per element remain, so a corrupt count cannot
// make the decoder allocate without bound.
func (d *dec[T]) count(minBytes int) int {
	n := d.uvarint()
	if n > uint64((len(d.s)-d.i)/minBytes) {
		d.fail("count beyond the value's end")
		return 0
	}
	return int(n)
}

func (d *dec[T]) header() (flags uint64, s summary) {
	if len(d.s) == 0 || d.s[0] != valueVersion {
		d.fail("unknown version")
		return 0, s
	}
	d.i = 1
	flags = d.uvarint()
	s.onHand, s.produced, s.sold, s.rate = d.num(), d.num(), d.num(), d.num()
	if flags&flagSnap != 0 {
		s.snapT = d.varint()
	}
	s.updated = d.varint()
	return flags, s
}

// decodeSummary reads only the summary of a value, for the view.
func decodeSummary(b []byte) (summary, error) {
	d := dec[[]byte]{s: b}
	_, s := d.header()
	return s, d.err
}

// decodeState reads a whole value.
func decodeState(v []byte) (*state, error) {
	d := dec[string]{s: string(v)}
	flags, s := d.header()
	st := &state{hasSnap: flags&flagSnap != 0, hasBase: flags&flagBase != 0, onHand: s.onHand,
		produced: s.produced, sold: s.sold, rate: s.rate, snapT: s.snapT, updated: s.updated}
	if st.hasSnap {
		st.snapID = d.str()
	}
	if st.hasBase {
		st.baseProd, st.baseSold, st.baseMin, st.baseMax = d.num(), d.num(), d.varint(), d.varint()
	}
	if n := d.count(2); n > 0 {
		st.days = make([]dayQty, n)
		prev := int64(0)
		for i := range st.days {
			prev += d.varint()
			st.days[i] = dayQty{prev, d.num()}
		}
	}
	if n := d.count(3); n > 0 {
		st.moves = make([]move, n, n+1) // room for the movement about to be inserted
		prev := int64(0)
		for i := range st.moves {
			m := &st.moves[i]
			m.id = d.str()
			if i == 0 {
				m.t = d.varint()
			} else {
				m.t = prev + int64(d.uvarint())
			}
			m.q = d.num()
			prev = m.t
		}
	}
	if n := d.count(1); n > 0 {
		st.recent = make([]gone, n)
		prev, timed := int64(0), flags&flagRecentTimes != 0
		for i := range st.recent {
			g := &st.recent[i]
			if !timed {
				g.id, g.at = d.str(), st.updated/int64(time.Second)
				continue
			}
			n := d.uvarint() // the time and the id
			if d.err != nil || n > uint64(len(d.s)-d.i) {
				d.fail("truncated string")
				break
			}
			end := d.i + int(n)
			prev += d.varint()
			if d.err != nil || d.i > end {
				d.fail("bad time of a recent id")
				break
			}
			g.id, g.at = string(d.s[d.i:end]), prev
			d.i = end
		}
	}
	if d.err == nil && d.i != len(d.s) {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return st, nil
}
