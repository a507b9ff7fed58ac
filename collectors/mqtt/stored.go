package mqtt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// The journal of stored messages (issue 12 point 5). A QoS >= 1 message is acknowledged after its
// samples are durable; a crash between the two makes the broker resend it (DUP) to the next process,
// which must not store it again. So the digests of the messages of each batch go into the buffer in
// the same write as the batch's samples (buffer.MetaAppender, one Badger transaction): after a crash
// they are on disk exactly when the samples are, and a redelivery whose digest is there is
// acknowledged, not stored.
//
// Only messages the broker still holds unacknowledged can come back, at most its in-flight window
// for this client (mosquitto's max_inflight_messages is 20 by default), and they are the last ones
// stored (PUBACKs leave in order). So the journal keeps the digests of the last ~4,000 messages: 64
// segments of 64 digests under the meta keys <prefix>00..63, a batch rewriting the segments it
// touches (one small key for a small batch).

const (
	journalSegDigests = 64
	journalSlots      = 64
	journalRing       = journalSegDigests * journalSlots
	journalMagic      = 'D' // value format: magic, segment number (8 bytes), digests (8 bytes each)
)

// metaEmitter is an Emitter that stores buffer meta keys in the write of the samples (the agent's
// writer). Without one the digests live in memory only.
type metaEmitter interface {
	collectors.Emitter
	EmitMeta(ctx context.Context, samples []signal.Sample, meta []buffer.Meta) error
	GetMeta(key string) ([]byte, bool, error)
}

// storedJournal is used by the committer goroutine alone while Run runs, and by Run before.
type storedJournal struct {
	prefix string
	loaded bool
	ring   [journalRing]uint64 // digest i (global index) at i % journalRing
	n      uint64              // digests journaled by committed batches
	meta   []buffer.Meta
	vals   [][]byte
}

func newStoredJournal(clientID string) *storedJournal {
	return &storedJournal{prefix: "mqtt/" + clientID + "/stored/"}
}

func (j *storedJournal) key(slot uint64) string { return fmt.Sprintf("%s%02d", j.prefix, slot) }

// load reads the journal once per collector and returns the digests it holds. A damaged segment
// is skipped (its messages may then be stored again if redelivered) and reported.
func (j *storedJournal) load(get func(string) ([]byte, bool, error)) ([]uint64, error) {
	if j.loaded {
		return nil, nil
	}
	j.loaded = true
	var out []uint64
	var errs []error
	var next uint64
	for slot := uint64(0); slot < journalSlots; slot++ {
		k := j.key(slot)
		v, ok, err := get(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("stored-message journal %s: %w", k, err))
			continue
		}
		if !ok {
			continue
		}
		seg, ds, ok := decodeSegment(v)
		if !ok || seg%journalSlots != slot {
			errs = append(errs, fmt.Errorf("stored-message journal %s: damaged (%d bytes)", k, len(v)))
			continue
		}
		out = append(out, ds...)
		next = max(next, seg+1)
	}
	// Continue in a fresh segment after the newest: its slot held the oldest.
	j.n = next * journalSegDigests
	return out, errors.Join(errs...)
}

// prepare places the digests of a batch after the committed ones and returns the meta keys that
// hold them (every segment the batch touches, whole), valid until the next prepare. Nothing is
// committed: a refused batch is simply prepared over by the next one. It returns how many
// digests it journaled (a batch larger than the ring keeps its newest).
func (j *storedJournal) prepare(ds []uint64) ([]buffer.Meta, int) {
	if keep := journalRing - journalSegDigests; len(ds) > keep {
		ds = ds[len(ds)-keep:] // the segment the batch starts in must not be overwritten
	}
	if len(ds) == 0 {
		return nil, 0
	}
	for i, d := range ds {
		j.ring[(j.n+uint64(i))%journalRing] = d
	}
	end := j.n + uint64(len(ds))
	j.meta = j.meta[:0]
	for seg, k := j.n/journalSegDigests, 0; seg*journalSegDigests < end; seg, k = seg+1, k+1 {
		if k == len(j.vals) {
			j.vals = append(j.vals, make([]byte, 0, 9+8*journalSegDigests))
		}
		v := append(j.vals[k][:0], journalMagic)
		v = binary.BigEndian.AppendUint64(v, seg)
		for i := seg * journalSegDigests; i < min(end, (seg+1)*journalSegDigests); i++ {
			v = binary.BigEndian.AppendUint64(v, j.ring[i%journalRing])
		}
		j.vals[k] = v
		j.meta = append(j.meta, buffer.Meta{Key: j.key(seg % journalSlots), Value: v})
	}
	return j.meta, len(ds)
}

// commit records that the last prepared batch of n digests is durable.
func (j *storedJournal) commit(n int) { j.n += uint64(n) }

func decodeSegment(v []byte) (seg uint64, ds []uint64, ok bool) {
	if len(v) < 9 || v[0] != journalMagic || (len(v)-9)%8 != 0 || (len(v)-9)/8 > journalSegDigests {
		return 0, nil, false
	}
	seg = binary.BigEndian.Uint64(v[1:])
	for b := v[9:]; len(b) > 0; b = b[8:] {
		ds = append(ds, binary.BigEndian.Uint64(b))
	}
	return seg, ds, true
}
