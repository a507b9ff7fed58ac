package buffer

import (
	"context"
	"errors"

	"github.com/gemba-io/gemba/signal"
)

// Meta is one key of the user meta space (GetMeta/PutMeta) written by AppendMeta.
type Meta struct {
	Key   string
	Value []byte
}

// MetaAppender is a buffer that can write meta keys together with records, so that state which
// says "these records are stored" (the MQTT collector's digests of stored messages) is durable
// exactly when the records are: never before them, and never lost while they survive.
type MetaAppender interface {
	// AppendMeta is Append, with meta written in the same Badger transaction as the records (or, if
	// Badger splits a group that is too big for one, in the transaction of its last records). When
	// Append would not store the records (ErrFull, an error), meta is not written either.
	AppendMeta(ctx context.Context, stream signal.Stream, meta []Meta, records ...[]byte) ([]uint64, error)
}

var _ MetaAppender = (*Store)(nil)

// AppendMeta implements MetaAppender. It needs at least one record: meta alone is PutMeta.
func (s *Store) AppendMeta(ctx context.Context, stream signal.Stream, meta []Meta, records ...[]byte) ([]uint64, error) {
	if len(records) == 0 && len(meta) > 0 {
		return nil, errors.New("buffer: append meta without records (use PutMeta)")
	}
	for _, m := range meta {
		if m.Key == "" {
			return nil, errors.New("buffer: append meta: empty key")
		}
	}
	return s.appendMeta(ctx, stream, meta, records)
}
