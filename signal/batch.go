package signal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// SchemaVersion is the version of the wire envelope this package writes. Decoders read every version
// from 1 up to it and refuse a newer one. Version 2 added the buffer incarnation to the envelope and
// the message id.
const SchemaVersion = 2

// Chunk is what the agent appends to the buffer: a group of records of one stream, encoded once as a
// JSON array at capture time, with the header fields known then. The uplink wraps a chunk in an
// Envelope at send time without re-encoding its records, and one chunk is one NATS message, so a
// replay of the same buffer sequence publishes the same message id.
type Chunk struct {
	Stream        Stream
	ConfigVersion string    // config version in force when the records were captured (lineage)
	Count         int       // number of records
	Oldest        time.Time // earliest record time in the chunk (sample source time, feature window end)
	Newest        time.Time // latest record time in the chunk
	// Captured is when the agent received the records and wrote the chunk (its own clock). It, not
	// Newest, decides whether a message is historical: a fresh OPC UA snapshot of a value that has
	// not changed for an hour carries an hour-old source time but is not late. Zero in version-1
	// chunks (see CaptureTime).
	Captured time.Time
	Records  []byte // JSON array of records
}

// CaptureTime is when the records were captured: Captured, or for a chunk written before capture
// times were recorded (version 1, from an older agent's buffer), Newest as the best guess left.
func (c *Chunk) CaptureTime() time.Time {
	if c.Captured.IsZero() {
		return c.Newest
	}
	return c.Captured
}

// Chunk versions: 1 had no capture time; 2 adds it after Newest. AppendChunk writes 2; ParseChunk
// reads both, so a newer agent forwards a buffer an older one wrote.
const (
	chunkMagic   = 'g'
	chunkVersion = 2
)

// ErrCorrupt reports an undecodable chunk or batch.
var ErrCorrupt = errors.New("corrupt record")

// AppendChunk appends the binary form of c to dst.
func AppendChunk(dst []byte, c *Chunk) []byte {
	dst = append(dst, chunkMagic, chunkVersion, byte(c.Stream))
	dst = binary.AppendUvarint(dst, uint64(c.Count))
	dst = binary.AppendVarint(dst, unixNano(c.Oldest))
	dst = binary.AppendVarint(dst, unixNano(c.Newest))
	dst = binary.AppendVarint(dst, unixNano(c.Captured))
	dst = binary.AppendUvarint(dst, uint64(len(c.ConfigVersion)))
	dst = append(dst, c.ConfigVersion...)
	return append(dst, c.Records...)
}

// ParseChunk decodes a chunk. Records aliases data.
func ParseChunk(data []byte) (Chunk, error) {
	var c Chunk
	if len(data) < 3 || data[0] != chunkMagic {
		return c, fmt.Errorf("%w: not a chunk", ErrCorrupt)
	}
	version := data[1]
	if version != 1 && version != chunkVersion {
		return c, fmt.Errorf("%w: chunk version %d unsupported", ErrCorrupt, data[1])
	}
	c.Stream = Stream(data[2])
	if c.Stream >= NumStreams {
		return c, fmt.Errorf("%w: unknown stream %d", ErrCorrupt, data[2])
	}
	p := data[3:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(data)) {
		return c, fmt.Errorf("%w: bad chunk count", ErrCorrupt)
	}
	c.Count, p = int(n), p[k:]
	oldest, k := binary.Varint(p)
	if k <= 0 {
		return c, fmt.Errorf("%w: bad chunk time", ErrCorrupt)
	}
	p = p[k:]
	newest, k := binary.Varint(p)
	if k <= 0 {
		return c, fmt.Errorf("%w: bad chunk time", ErrCorrupt)
	}
	p = p[k:]
	c.Oldest, c.Newest = fromUnixNano(oldest), fromUnixNano(newest)
	if version >= 2 {
		captured, k := binary.Varint(p)
		if k <= 0 {
			return c, fmt.Errorf("%w: bad chunk capture time", ErrCorrupt)
		}
		p = p[k:]
		c.Captured = fromUnixNano(captured)
	}
	l, k := binary.Uvarint(p)
	if k <= 0 || l > uint64(len(p)-k) {
		return c, fmt.Errorf("%w: bad chunk config version", ErrCorrupt)
	}
	p = p[k:]
	c.ConfigVersion, p = string(p[:l]), p[l:]
	if len(p) < 2 || p[0] != '[' || p[len(p)-1] != ']' {
		return c, fmt.Errorf("%w: chunk records are not a JSON array", ErrCorrupt)
	}
	c.Records = p
	return c, nil
}

// Chunk times are Unix nanoseconds, 0 meaning "no time" (so the epoch itself reads back as no time).
// Only 1677-09-21..2262-04-11 fits; these are record times that may come from a device clock, and
// UnixNano is undefined outside that range, so such times are clamped to it.
var (
	minChunkTime = time.Unix(0, math.MinInt64)
	maxChunkTime = time.Unix(0, math.MaxInt64)
)

func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(minChunkTime):
		return math.MinInt64
	case t.After(maxChunkTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Header is the envelope around the records of one published message.
type Header struct {
	Schema        int    // SchemaVersion
	Agent         string // agent id
	Site          string
	Stream        Stream
	ConfigVersion string // lineage: the agent config in force at capture
	// Incarnation names one life of the agent's buffer: it is created with the store and persisted
	// in it, so a buffer that is lost or reset (and restarts its sequences at 1) starts a new one.
	// Empty in schema 1 messages.
	Incarnation string
	// FirstSeq and LastSeq are the buffer sequence range the message carries, per (agent, stream,
	// incarnation). Agent, Stream, Incarnation and FirstSeq identify the message for deduplication.
	FirstSeq, LastSeq uint64
	Count             int
	// Historical is set when the records are sent noticeably later than the agent captured
	// (received) them: a backlog replayed after an uplink outage. It says nothing about how old the
	// values are (Oldest, Newest). Delay is then Sent minus the capture time.
	Historical     bool
	Delay          time.Duration
	Oldest, Newest time.Time // record time range: sample source times, feature window ends
	Sent           time.Time
}

// MsgID is the deterministic JetStream message id of the message starting at firstSeq:
// <agent>:<stream>:<incarnation>:<first_seq>. The hub deduplicates on the same four parts.
func MsgID(agent string, stream Stream, incarnation string, firstSeq uint64) string {
	return agent + ":" + stream.String() + ":" + incarnation + ":" + strconv.FormatUint(firstSeq, 10)
}

// MsgID is the message identity of h (see the function MsgID).
func (h *Header) MsgID() string { return MsgID(h.Agent, h.Stream, h.Incarnation, h.FirstSeq) }

// AppendEnvelope appends a complete batch message: h followed by records, which must be a JSON array
// (as in Chunk.Records).
func AppendEnvelope(dst []byte, h *Header, records []byte) []byte {
	dst = append(dst, `{"schema":`...)
	dst = strconv.AppendInt(dst, int64(h.Schema), 10)
	dst = append(dst, `,"agent":`...)
	dst = appendString(dst, h.Agent)
	dst = append(dst, `,"site":`...)
	dst = appendString(dst, h.Site)
	dst = append(dst, `,"stream":"`...)
	dst = append(dst, h.Stream.String()...)
	dst = append(dst, `","config_version":`...)
	dst = appendString(dst, h.ConfigVersion)
	dst = append(dst, `,"incarnation":`...)
	dst = appendString(dst, h.Incarnation)
	dst = append(dst, `,"first_seq":`...)
	dst = strconv.AppendUint(dst, h.FirstSeq, 10)
	dst = append(dst, `,"last_seq":`...)
	dst = strconv.AppendUint(dst, h.LastSeq, 10)
	dst = append(dst, `,"count":`...)
	dst = strconv.AppendInt(dst, int64(h.Count), 10)
	dst = append(dst, `,"historical":`...)
	dst = strconv.AppendBool(dst, h.Historical)
	dst = append(dst, `,"delay_ms":`...)
	dst = strconv.AppendInt(dst, h.Delay.Milliseconds(), 10)
	dst = append(dst, `,"oldest":`...)
	dst = appendTime(dst, h.Oldest)
	dst = append(dst, `,"newest":`...)
	dst = appendTime(dst, h.Newest)
	dst = append(dst, `,"sent":`...)
	dst = appendTime(dst, h.Sent)
	dst = append(dst, `,"records":`...)
	dst = append(dst, records...)
	return append(dst, '}')
}

// Batch is a decoded message: the header and the records of its stream.
type Batch struct {
	Header
	Samples  []Sample
	Features []Feature
	Status   []Status
}

// AppendBatch encodes a whole batch (used by tests and tools; the agent splices pre-encoded chunks).
func AppendBatch(dst []byte, b *Batch) []byte {
	var recs []byte
	switch b.Stream {
	case StreamSamples:
		recs = AppendSamplesJSON(nil, b.Samples)
	case StreamFeatures:
		recs = AppendFeaturesJSON(nil, b.Features)
	case StreamStatus:
		recs = AppendStatusJSON(nil, b.Status)
	}
	return AppendEnvelope(dst, &b.Header, recs)
}

// Subject returns the NATS subject for a stream: <prefix>.<site>.<agent>.<stream>.
func Subject(prefix, site, agent string, s Stream) string {
	return prefix + "." + site + "." + agent + "." + s.String()
}

// NotInToken holds the characters that cannot appear in one token of a NATS subject.
const NotInToken = ".*> \t\r\n"

// CheckToken reports why name cannot be one token of a NATS subject, or nil.
func CheckToken(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if i := strings.IndexAny(name, NotInToken); i >= 0 {
		return fmt.Errorf("%q contains %q, which cannot appear in a NATS subject token", name, name[i])
	}
	return nil
}

// Record is one sequenced entry of a buffer stream: a Chunk in binary form.
type Record struct {
	Seq  uint64
	Data []byte
}
