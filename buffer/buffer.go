// Package buffer is the agent's durable store-and-forward queue: append-only, sequence-numbered
// streams of records on local disk (Badger), read in order by the uplink and removed on ack.
package buffer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// Errors returned by Buffer implementations.
var (
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("buffer closed")
	// ErrFull is returned by Append when the buffer is at its cap and the policy is drop_newest
	// (the records were dropped and counted) or block and ctx ended while waiting.
	ErrFull = errors.New("buffer full")
)

// Buffer is a durable queue of records in several independent streams.
//
// Lifecycle: an implementation is ready when its constructor returns (recovery after a crash happens
// there). Close waits for in-flight calls, flushes, and is idempotent; calls after Close return
// ErrClosed. All methods are safe for concurrent use.
type Buffer interface {
	// Append adds records to the end of stream and returns the sequence number of each, in order
	// (sequences start at 1 and never repeat within a stream, across restarts too). When it returns
	// nil the records are durable to the degree the sync mode promises. Concurrent appends are group
	// committed. When the buffer is full the configured policy applies: drop_oldest evicts the oldest
	// records (counted), drop_newest returns ErrFull (counted), block waits for space or ctx.
	Append(ctx context.Context, stream signal.Stream, records ...[]byte) ([]uint64, error)

	// Read returns up to max records of stream with sequence > after, in order, blocking until at
	// least one exists or ctx is done. A record that fails its checksum is skipped and counted.
	// The returned Data must not be modified; it stays valid until the next Read of that stream.
	Read(ctx context.Context, stream signal.Stream, after uint64, max int) ([]signal.Record, error)

	// Ack removes every record of stream up to and including upTo (cumulative). Acking a sequence
	// that was already acked, or was dropped, is not an error.
	Ack(stream signal.Stream, upTo uint64) error

	// Stats returns the current depth, sizes and counters.
	Stats() Stats
	// Incarnation names this life of the buffer: created with the store, persisted in it, never
	// changed while the store lives. A buffer that starts empty because its store was lost, reset or
	// moved aside has a new one, so (incarnation, stream, sequence) never names two records, even
	// though sequences restart at 1.
	Incarnation() string
	// LastSeq is the sequence of the newest record appended to stream (0 when none), cheap
	// enough for the uplink to ask on every read.
	LastSeq(stream signal.Stream) uint64

	Close() error
}

// Stats describes a buffer.
type Stats struct {
	Streams  [signal.NumStreams]StreamStats
	DiskSize int64 // bytes on disk, including Badger's value log, and bytes accepted for writing
	MaxBytes int64
	// Full is set while appends are refused or evicting because of the byte cap.
	Full bool
	// Err is the last persistent I/O problem (e.g. disk full), nil when healthy.
	Err error
}

// StreamStats describes one stream.
type StreamStats struct {
	Records  uint64    // records waiting (appended, not acked)
	Bytes    uint64    // their payload size
	Oldest   time.Time // when the oldest waiting record's age counts from (its append time, or a later wall-clock step); zero when empty
	FirstSeq uint64    // oldest waiting sequence (0 when empty)
	LastSeq  uint64    // last appended sequence
	Acked    uint64    // highest acked sequence
	// Dropped counts records removed without being acked, by reason: "max_bytes", "max_age",
	// "full" (drop_newest refusals), "corrupt".
	Dropped map[string]uint64
}

// MetaStore is a small durable key/value space beside the queues, for state that must survive a
// restart together with the buffered records (the feature engine's window checkpoints).
type MetaStore interface {
	GetMeta(key string) (value []byte, ok bool, err error)
	PutMeta(key string, value []byte) error
}

var (
	_ Buffer    = (*Store)(nil)
	_ Buffer    = (*Memory)(nil)
	_ MetaStore = (*Store)(nil)
	_ MetaStore = (*Memory)(nil)
)

// newIncarnation returns 64 random bits in hex: two buffer lives of one agent colliding is as
// likely as a 64-bit random collision.
func newIncarnation() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

func validIncarnation(s string) bool {
	if len(s) != 16 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
