package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
)

// Retained messages. A retained message is its topic's last-known value: the broker keeps one per
// topic and sends it again on every subscribe, so on every reconnect and every agent restart,
// unchanged, with the same payload time. Stored each time it would reach the hub as a new reading
// that nothing downstream can tell from a real one. So the collector remembers, per topic, a
// digest of the payload of the last message it stored (retained or live: the broker clears the
// retain flag on live delivery, MQTT-3.3.1-9, so the live copy of a retained publication cannot be
// told apart). A retained delivery whose payload equals it is acknowledged and not stored again;
// one that differs (the value changed while the agent was away) is stored, labelled retained=true.
//
// The digests change only with samples the buffer accepted (the committer applies them after
// Emit returned), so a refused batch is stored when redelivered. They survive restarts in
// <state dir>/retained.bin, appended to after each durable batch and before its acknowledgements.
// The append is not fsynced: a process crash keeps it (page cache), a power cut may lose the last
// appends, and then a retained message is stored a second time, never lost.

const (
	retainedFile = "retained.bin"
	// maxRetainedTopics bounds the digests kept (~100 bytes each in memory); topics beyond it are
	// not deduplicated.
	maxRetainedTopics = 1 << 18
	// retainedLabel marks samples of a retained delivery (a last-known value, not a fresh reading).
	retainedLabelKey = "retained"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// seenMsg is one mapped message of a job: its topic, payload digest, and its samples' range.
type seenMsg struct {
	topic       string
	digest      uint64
	retained    bool
	redelivered bool // a redelivery of a message stored before (recentAcks)
	lo, hi      int
}

func payloadDigest(p []byte) uint64 { return xxhash.Sum64(p) }

type retainedEntry struct {
	topic  string
	digest uint64
}

// retainedStore holds the digest of the last stored message per topic. The committer goroutine
// alone uses it while Run runs.
type retainedStore struct {
	path    string // "" keeps the digests in memory only
	loaded  bool   // the file was read (once: later Runs keep the map)
	last    map[string]uint64
	f       *os.File
	records int // records in the file, superseded ones included
	buf     []byte
	full    bool // maxRetainedTopics reached (logged once)
}

// newRetainedStore returns an empty store for the state dir dir ("" keeps it in memory).
func newRetainedStore(dir string) *retainedStore {
	st := &retainedStore{last: map[string]uint64{}}
	if dir != "" {
		st.path = filepath.Join(dir, retainedFile)
	}
	return st
}

// openRetained is newRetainedStore and open, for tests.
func openRetained(dir string) (*retainedStore, error) {
	st := newRetainedStore(dir)
	return st, st.open()
}

// open loads the saved digests the first time (a torn or damaged tail is dropped) and rewrites the
// file compacted, open for appends. Run calls it on every start; close ends the appends.
func (st *retainedStore) open() error {
	if st.path == "" {
		return nil
	}
	if !st.loaded {
		st.loaded = true
		data, err := os.ReadFile(st.path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("retained state %s: %w", st.path, err)
		}
		for len(data) > 0 {
			e, n, ok := decodeRetained(data)
			if !ok {
				break // a torn append or damage: what follows cannot be trusted
			}
			st.last[e.topic] = e.digest
			data = data[n:]
		}
	}
	return st.compact()
}

// commit records the digests of a durable batch.
func (st *retainedStore) commit(es []retainedEntry) error {
	if st.f == nil || len(es) == 0 {
		return nil
	}
	st.buf = st.buf[:0]
	for _, e := range es {
		st.buf = appendRetained(st.buf, e)
	}
	if _, err := st.f.Write(st.buf); err != nil {
		return fmt.Errorf("retained state %s: %w", st.path, err)
	}
	st.records += len(es)
	// Compaction rewrites and fsyncs the whole file in the committer's path: rarely, at the price
	// of a file a few times larger than its content (~40 bytes a record).
	if st.records > 4*len(st.last)+1<<16 {
		return st.compact()
	}
	return nil
}

// compact rewrites the file with one record per topic (atomically) and reopens it for appends.
func (st *retainedStore) compact() error {
	if st.path == "" {
		return nil
	}
	st.close()
	buf := make([]byte, 0, len(st.last)*32)
	for topic, d := range st.last {
		buf = appendRetained(buf, retainedEntry{topic, d})
	}
	if err := writeFileAtomic(st.path, buf); err != nil {
		return fmt.Errorf("retained state %s: %w", st.path, err)
	}
	f, err := os.OpenFile(st.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("retained state %s: %w", st.path, err)
	}
	st.f, st.records = f, len(st.last)
	return nil
}

func (st *retainedStore) close() {
	if st.f != nil {
		_ = st.f.Close()
		st.f = nil
	}
}

// A record: topic length (uint16), topic, digest (uint64), CRC-32C of the three (big endian).
func appendRetained(dst []byte, e retainedEntry) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(e.topic))) // MQTT topics are at most 65535 bytes
	dst = append(dst, e.topic...)
	dst = binary.BigEndian.AppendUint64(dst, e.digest)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

func decodeRetained(b []byte) (retainedEntry, int, bool) {
	if len(b) < 2 {
		return retainedEntry{}, 0, false
	}
	n := 2 + int(binary.BigEndian.Uint16(b)) + 8
	if len(b) < n+4 || crc32.Checksum(b[:n], crcTable) != binary.BigEndian.Uint32(b[n:]) {
		return retainedEntry{}, 0, false
	}
	return retainedEntry{topic: string(b[2 : n-8]), digest: binary.BigEndian.Uint64(b[n-8:])}, n + 4, true
}

// undoEntry restores a digest changed for a batch the buffer then refused.
type undoEntry struct {
	topic string
	old   uint64
	had   bool
}

// dedupRetained runs in the committer before Emit: it drops the samples of retained deliveries
// identical to their topic's last stored message, and applies the job's digests to the store,
// returning what to journal once the batch is durable and what to undo if it is refused.
func (c *Collector) dedupRetained(job *commitJob, updates []retainedEntry, undo []undoEntry) ([]retainedEntry, []undoEntry) {
	st := c.ret
	var drop [][2]int
	for i := range job.seen {
		e := &job.seen[i]
		old, had := st.last[e.topic]
		if e.redelivered && had {
			// The digest already names its topic's last stored message, this one or a later one:
			// redeliveries need not come in the order they were sent (mochi resends in any order).
			continue
		}
		if had && old == e.digest {
			if e.retained {
				c.m.retainedDups.Inc()
				if e.hi > e.lo {
					drop = append(drop, [2]int{e.lo, e.hi})
				}
			}
			continue
		}
		if !had && len(st.last) >= maxRetainedTopics {
			if !st.full {
				st.full = true
				c.log.Warn("retained dedup: topic limit reached; retained messages of further topics may be stored again after a reconnect", "limit", maxRetainedTopics)
			}
			continue
		}
		undo = append(undo, undoEntry{topic: e.topic, old: old, had: had})
		st.last[e.topic] = e.digest
		updates = append(updates, retainedEntry{topic: e.topic, digest: e.digest})
	}
	if len(drop) > 0 {
		job.samples = dropRanges(job.samples, drop)
	}
	return updates, undo
}

// rollbackRetained undoes dedupRetained for a batch that was not stored.
func (c *Collector) rollbackRetained(undo []undoEntry) {
	for i := len(undo) - 1; i >= 0; i-- {
		u := undo[i]
		if u.had {
			c.ret.last[u.topic] = u.old
		} else {
			delete(c.ret.last, u.topic)
		}
	}
}

// dropRanges removes the ascending, disjoint index ranges from s in place.
func dropRanges[T any](s []T, ranges [][2]int) []T {
	w, r := 0, 0
	for _, rg := range ranges {
		w += copy(s[w:], s[r:rg[0]])
		r = rg[1]
	}
	w += copy(s[w:], s[r:])
	clear(s[w:])
	return s[:w]
}
