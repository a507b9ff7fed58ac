// Package kvwatch mirrors a KV bucket into a replica's memory: it hands every current entry, then
// every later change, to one function, so each store's view follows the other replicas' writes.
//
// It reads the bucket's stream with an ordered consumer through jsfollow rather than with
// KeyValue.Watch: the watch's consumer (one replica, in memory, on one node) stalled for 10 s when
// its node stopped while the client was connected to another (two missed idle heartbeats), and the
// replica's view of the bucket was that stale; jsfollow makes a new consumer at once on the server's
// shutdown notice, or when the last change in the bucket is not handed (checked every second).
package kvwatch

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/jsfollow"
)

// Options tune Follow; the zero value is fine.
type Options struct {
	Log       *slog.Logger
	Refollows *atomic.Uint64 // counts new consumers made (its server went away, or it lagged)
	// Key follows one key (or a pattern of keys) rather than the whole bucket.
	Key string
	// Pull bounds the consumer's pulls (PullMaxBytes: a large bucket arrives at the reader's pace).
	Pull []jetstream.PullConsumeOpt
}

// Follow calls apply for every entry of kv (returning once the current ones are applied, so a new
// replica starts complete), then for every change, in order and once each, until stop is called.
// stop waits for the last apply to return. The watch lives until stop, not until ctx, which bounds
// only the start.
func Follow(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), o Options) (stop func(), err error) {
	bucket := kv.Bucket()
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", bucket, err)
	}
	pre, keys := "$KV."+bucket+".", ">"
	if o.Key != "" {
		keys = o.Key
	}
	f, err := jsfollow.Follow(ctx, jsfollow.Config{
		Stream: st, Subject: pre + keys, LastPerSubject: true, What: "bucket " + bucket, Log: o.Log, Refollows: o.Refollows, Pull: o.Pull,
	}, func(m jetstream.Msg, md *jetstream.MsgMetadata) {
		apply(&entry{bucket: bucket, key: strings.TrimPrefix(m.Subject(), pre), value: m.Data(),
			revision: md.Sequence.Stream, created: md.Timestamp, delta: md.NumPending, op: operation(m)})
	})
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", bucket, err)
	}
	select {
	case <-f.Loaded():
	case <-ctx.Done():
		f.Stop()
		return nil, fmt.Errorf("watch bucket %s: loading: %w", bucket, ctx.Err())
	}
	return f.Stop, nil
}

// operation reads a message's KV operation as KeyValue.Watch does: a delete or purge header, or
// the server's marker for a key removed by its TTL or a purge.
func operation(m jetstream.Msg) jetstream.KeyValueOp {
	h := m.Headers()
	switch op := h.Get("KV-Operation"); {
	case op == "DEL":
		return jetstream.KeyValueDelete
	case op == "PURGE":
		return jetstream.KeyValuePurge
	case op != "":
		return jetstream.KeyValuePut
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge":
		return jetstream.KeyValuePurge
	case "Remove":
		return jetstream.KeyValueDelete
	}
	return jetstream.KeyValuePut
}

// entry is a jetstream.KeyValueEntry read from the bucket's stream.
type entry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	delta       uint64
	op          jetstream.KeyValueOp
}

func (e *entry) Bucket() string                  { return e.bucket }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.revision }
func (e *entry) Created() time.Time              { return e.created }
func (e *entry) Delta() uint64                   { return e.delta }
func (e *entry) Operation() jetstream.KeyValueOp { return e.op }
