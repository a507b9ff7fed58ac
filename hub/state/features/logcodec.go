package features

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
)

// encodingHeader says how a log message's lines are packed: absent, as plain lines (as every
// message was before the header existed); "s2", compressed in S2's block format. The lines repeat
// their field names and lineage, so S2 shrinks a flush ~5×: less for the server to store, for each replica's follower
// to receive, and for the writer to send (a flush of 810 values is ~280 KiB of lines).
const encodingHeader = "Gemba-Encoding"

const encodingS2 = "s2"

// scratch holds s2's working buffers (MaxEncodedLen of a message, ~900 KiB): a flush at every
// ingest batch would otherwise allocate one each time, and most of it would be garbage at once.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

// pack sets m's data to lines, compressed when that makes it smaller. It reports whether m holds
// a copy, leaving lines free for the caller to reuse.
func pack(m *nats.Msg, lines []byte) (copied bool) {
	sp := scratch.Get().(*[]byte)
	defer scratch.Put(sp)
	if need := s2.MaxEncodedLen(len(lines)); need > 0 {
		if cap(*sp) < need {
			*sp = make([]byte, need)
		}
		if c := s2.Encode((*sp)[:need], lines); len(c) < len(lines) {
			m.Data = append(make([]byte, 0, len(c)), c...)
			m.Header.Set(encodingHeader, encodingS2)
			return true
		}
	}
	m.Data = lines
	return false
}

// LogLines returns the lines of a feature log message, one JSON object (a Value) per line,
// whatever its encoding. It is how anything outside the store reads the log.
func LogLines(h nats.Header, data []byte) ([]byte, error) {
	var r LogReader
	return r.Lines(h, data)
}

// LogReader is LogLines reusing one buffer from a message to the next: what follows the log
// message after message. The lines it returns are valid until its next call; not safe for
// concurrent use.
type LogReader struct{ buf []byte }

// Lines is LogLines into r's buffer.
func (r *LogReader) Lines(h nats.Header, data []byte) ([]byte, error) {
	switch enc := h.Get(encodingHeader); enc {
	case "":
		return data, nil
	case encodingS2:
		n, err := s2.DecodedLen(data)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n > maxMessage {
			return nil, fmt.Errorf("s2: %d bytes decoded, more than a log message holds (%d)", n, maxMessage)
		}
		if cap(r.buf) < n {
			r.buf = make([]byte, n)
		}
		lines, err := s2.Decode(r.buf[:n], data)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return lines, nil
	default:
		return nil, fmt.Errorf("unknown %s %q", encodingHeader, enc)
	}
}
