// Package uplink forwards buffered records to NATS JetStream: in order per stream, with
// deterministic message ids, acknowledging the buffer only after JetStream has stored them.
package uplink

import (
	"context"

	"github.com/gemba-io/gemba/signal"
)

// Source is where the uplink reads records from: the agent's durable buffer.
type Source interface {
	// Read returns up to max records of stream with sequence > after, blocking until one exists or
	// ctx is done.
	Read(ctx context.Context, stream signal.Stream, after uint64, max int) ([]signal.Record, error)
	// Ack removes records of stream up to and including upTo.
	Ack(stream signal.Stream, upTo uint64) error
}
