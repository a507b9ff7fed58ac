package signal

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The fast path reads batches in exactly the form this package's encoders write: no whitespace, only
// known keys, each at most once, no nulls except null times. On anything else it gives up (ok=false)
// and the caller falls back to the general encoding/json decoder, so it never has to produce an
// error and never decides what is valid JSON by itself: whatever it accepts, the general decoder
// accepts with the same result (FuzzDecodeBatch checks exactly that). It exists because
// encoding/json costs about 2.7 µs per sample here, most of it reflection and re-scanning.
//
// All indexing goes through bounds checks (no unsafe); string contents with escapes or non-ASCII
// bytes that are not valid UTF-8 are handed to encoding/json, so unescaping rules are not re-invented.

type fastParser struct {
	data []byte
	pos  int
}

// peek returns the next byte, or 0 at the end.
func (p *fastParser) peek() byte {
	if p.pos < len(p.data) {
		return p.data[p.pos]
	}
	return 0
}

// eat consumes c if it is next.
func (p *fastParser) eat(c byte) bool {
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

// lit consumes the literal s if it is next.
func (p *fastParser) lit(s string) bool {
	if len(p.data)-p.pos >= len(s) && string(p.data[p.pos:p.pos+len(s)]) == s {
		p.pos += len(s)
		return true
	}
	return false
}

// key reads `"name":` where name is plain lower-case ASCII, as every key this package writes.
func (p *fastParser) key() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			k := p.data[start:p.pos]
			p.pos++
			return k, p.eat(':')
		}
		if (c < 'a' || c > 'z') && c != '_' {
			return nil, false
		}
		p.pos++
	}
	return nil, false
}

// str reads a JSON string.
func (p *fastParser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	start := p.pos
	ascii := true
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			raw := p.data[start:p.pos]
			p.pos++
			if !ascii && !utf8.Valid(raw) {
				return p.strJSON(start - 1) // invalid UTF-8 reads as U+FFFD, as encoding/json does
			}
			return string(raw), true
		case c == '\\':
			return p.strJSON(start - 1)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.pos++
	}
	return "", false
}

// strJSON reads the string token starting at the quote at open and lets encoding/json unescape it.
func (p *fastParser) strJSON(open int) (string, bool) {
	i := open + 1
	for i < len(p.data) && p.data[i] != '"' {
		if p.data[i] == '\\' {
			i++ // the escaped byte cannot end the string; encoding/json checks the escape itself
		}
		i++
	}
	if i >= len(p.data) {
		return "", false
	}
	var s string
	if err := json.Unmarshal(p.data[open:i+1], &s); err != nil {
		return "", false
	}
	p.pos = i + 1
	return s, true
}

// number reads a token of the JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *fastParser) number() ([]byte, bool) {
	start := p.pos
	p.eat('-')
	switch c := p.peek(); {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		p.digits()
	default:
		return nil, false
	}
	if p.eat('.') && !p.digits() {
		return nil, false
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.pos++
		if !p.eat('+') {
			p.eat('-')
		}
		if !p.digits() {
			return nil, false
		}
	}
	return p.data[start:p.pos], true
}

// digits consumes [0-9]* and reports whether there was at least one.
func (p *fastParser) digits() bool {
	start := p.pos
	for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
		p.pos++
	}
	return p.pos > start
}

func (p *fastParser) int64() (int64, bool) {
	tok, ok := p.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	return n, err == nil
}

func (p *fastParser) uint64() (uint64, bool) {
	tok, ok := p.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(string(tok), 10, 64)
	return n, err == nil
}

func (p *fastParser) bool() (bool, bool) {
	if p.lit("true") {
		return true, true
	}
	return false, p.lit("false")
}

// float reads a JSON number or one of "NaN", "Inf", "-Inf" (see appendFloat).
func (p *fastParser) float() (float64, bool) {
	switch {
	case p.lit(`"NaN"`):
		return math.NaN(), true
	case p.lit(`"Inf"`):
		return math.Inf(1), true
	case p.lit(`"-Inf"`):
		return math.Inf(-1), true
	}
	tok, ok := p.number()
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	return f, err == nil
}

// time reads null or an RFC 3339 string without escapes.
func (p *fastParser) time() (time.Time, bool) {
	if p.lit("null") {
		return time.Time{}, true
	}
	if !p.eat('"') {
		return time.Time{}, false
	}
	start := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			t, err := time.Parse(time.RFC3339Nano, string(p.data[start:p.pos]))
			p.pos++
			return t.UTC(), err == nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return time.Time{}, false
		}
		p.pos++
	}
	return time.Time{}, false
}

// fastMaxLabels bounds the label set the fast path reads: it checks each key against the earlier
// ones, which is quadratic; a larger set (never written by the agent) goes to the general decoder.
const fastMaxLabels = 32

// labels reads an object of strings. Repeated keys are left to the general decoder.
func (p *fastParser) labels() (Labels, bool) {
	if !p.eat('{') {
		return nil, false
	}
	if p.eat('}') {
		return nil, true
	}
	var out Labels
	for {
		k, ok := p.str()
		if !ok || !p.eat(':') {
			return nil, false
		}
		v, ok := p.str()
		if !ok {
			return nil, false
		}
		if len(out) == fastMaxLabels {
			return nil, false
		}
		for _, l := range out {
			if l.Key == k {
				return nil, false
			}
		}
		out = append(out, Label{Key: k, Value: v})
		if p.eat('}') {
			return out, true
		}
		if !p.eat(',') {
			return nil, false
		}
	}
}

// object calls field for each key of an object; field reports false to give up. A key may appear
// once: seen tracks keys by the bit field returns.
func (p *fastParser) object(field func(key []byte) (bit uint32, ok bool)) bool {
	if !p.eat('{') {
		return false
	}
	if p.eat('}') {
		return true
	}
	var seen uint32
	for {
		k, ok := p.key()
		if !ok {
			return false
		}
		bit, ok := field(k)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if p.eat('}') {
			return true
		}
		if !p.eat(',') {
			return false
		}
	}
}

// array calls elem for each element of an array.
func (p *fastParser) array(elem func() bool) bool {
	if !p.eat('[') {
		return false
	}
	if p.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if p.eat(']') {
			return true
		}
		if !p.eat(',') {
			return false
		}
	}
}

func (p *fastParser) sample(s *Sample) bool {
	values := 0
	return p.object(func(k []byte) (uint32, bool) {
		var ok bool
		switch string(k) {
		case "sig":
			s.Signal, ok = p.str()
			return 1 << 0, ok
		case "ts":
			s.Time, ok = p.time()
			return 1 << 1, ok
		case "f":
			var f float64
			f, ok = p.float()
			s.Value, values = Float(f), values+1
			return 1 << 2, ok && values == 1
		case "i":
			var i int64
			i, ok = p.int64()
			s.Value, values = Int(i), values+1
			return 1 << 3, ok && values == 1
		case "b":
			var b bool
			b, ok = p.bool()
			s.Value, values = Bool(b), values+1
			return 1 << 4, ok && values == 1
		case "s":
			var str string
			str, ok = p.str()
			s.Value, values = String(str), values+1
			return 1 << 5, ok && values == 1
		case "q":
			var q string
			if q, ok = p.str(); ok {
				var err error
				s.Quality, err = ParseQuality(q)
				ok = err == nil
			}
			return 1 << 6, ok
		case "r":
			s.Reason, ok = p.str()
			return 1 << 7, ok
		case "src":
			s.Source, ok = p.str()
			return 1 << 8, ok
		case "lbl":
			s.Labels, ok = p.labels()
			return 1 << 9, ok
		}
		return 0, false
	})
}

func (p *fastParser) feature(f *Feature) bool {
	return p.object(func(k []byte) (uint32, bool) {
		var ok bool
		switch string(k) {
		case "sig":
			f.Signal, ok = p.str()
			return 1 << 0, ok
		case "name":
			f.Name, ok = p.str()
			return 1 << 1, ok
		case "start":
			f.WindowStart, ok = p.time()
			return 1 << 2, ok
		case "end":
			f.WindowEnd, ok = p.time()
			return 1 << 3, ok
		case "v":
			f.Value, ok = p.float()
			return 1 << 4, ok
		case "n":
			f.Count, ok = p.int64()
			return 1 << 5, ok
		case "partial":
			f.Partial, ok = p.bool()
			return 1 << 6, ok
		case "lbl":
			f.Labels, ok = p.labels()
			return 1 << 7, ok
		}
		return 0, false
	})
}

// capHint sizes a record slice from the envelope's count, bounded by what the input can hold (a
// record takes more than 16 bytes), so a lying count cannot make us allocate much.
func (p *fastParser) capHint(count int) int {
	return max(0, min(count, (len(p.data)-p.pos)/16))
}

func (p *fastParser) samples(hint int) ([]Sample, bool) {
	out := make([]Sample, 0, p.capHint(hint))
	ok := p.array(func() bool {
		out = append(out, Sample{})
		return p.sample(&out[len(out)-1])
	})
	return out, ok
}

func (p *fastParser) features(hint int) ([]Feature, bool) {
	out := make([]Feature, 0, p.capHint(hint))
	ok := p.array(func() bool {
		out = append(out, Feature{})
		return p.feature(&out[len(out)-1])
	})
	return out, ok
}

func decodeSamplesFast(data []byte) ([]Sample, bool) {
	p := fastParser{data: data}
	s, ok := p.samples(64)
	return s, ok && p.pos == len(data)
}

func decodeFeaturesFast(data []byte) ([]Feature, bool) {
	p := fastParser{data: data}
	f, ok := p.features(16)
	return f, ok && p.pos == len(data)
}

// decodeBatchFast decodes a samples or features batch whose "stream" precedes "records", as
// AppendEnvelope writes it. Status batches are rare and take the general path.
func decodeBatchFast(data []byte) (*Batch, bool) {
	p := fastParser{data: data}
	b := &Batch{}
	h := &b.Header
	var stream string
	var delayMS int64
	records := false
	ok := p.object(func(k []byte) (uint32, bool) {
		var ok bool
		switch string(k) {
		case "schema":
			var n int64
			n, ok = p.int64()
			h.Schema = int(n)
			return 1 << 0, ok && n >= 1 && n <= SchemaVersion
		case "agent":
			h.Agent, ok = p.str()
			return 1 << 1, ok
		case "site":
			h.Site, ok = p.str()
			return 1 << 2, ok
		case "stream":
			if stream, ok = p.str(); ok {
				var err error
				h.Stream, err = ParseStream(stream)
				ok = err == nil && h.Stream != StreamStatus
			}
			return 1 << 3, ok
		case "config_version":
			h.ConfigVersion, ok = p.str()
			return 1 << 4, ok
		case "incarnation":
			h.Incarnation, ok = p.str()
			return 1 << 14, ok
		case "first_seq":
			h.FirstSeq, ok = p.uint64()
			return 1 << 5, ok
		case "last_seq":
			h.LastSeq, ok = p.uint64()
			return 1 << 6, ok
		case "count":
			var n int64
			n, ok = p.int64()
			h.Count = int(n)
			return 1 << 7, ok
		case "historical":
			h.Historical, ok = p.bool()
			return 1 << 8, ok
		case "delay_ms":
			delayMS, ok = p.int64()
			return 1 << 9, ok && delayInRange(delayMS)
		case "oldest":
			h.Oldest, ok = p.time()
			return 1 << 10, ok
		case "newest":
			h.Newest, ok = p.time()
			return 1 << 11, ok
		case "sent":
			h.Sent, ok = p.time()
			return 1 << 12, ok
		case "records":
			records = true
			switch {
			case stream == "samples":
				b.Samples, ok = p.samples(h.Count)
			case stream == "features":
				b.Features, ok = p.features(h.Count)
			}
			return 1 << 13, ok
		}
		return 0, false
	})
	if !ok || !records || h.Schema == 0 || p.pos != len(data) || checkIncarnation(h.Schema, h.Incarnation) != nil {
		return nil, false
	}
	if h.Schema < 2 {
		h.Incarnation = "" // not a schema-1 field (see decodeBatchJSON)
	}
	h.Delay = time.Duration(delayMS) * time.Millisecond
	return b, true
}
