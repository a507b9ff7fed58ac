package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/gemba-io/gemba/signal"
)

// dropReasons is every reason a record can leave the buffer without an ack, in the order
// metaDrops stores them. store_lost counts records the store held (per its state file) but did
// not have when it was opened: damaged or deleted Badger files.
var dropReasons = []string{"max_bytes", "max_age", "full", "corrupt", "store_lost"}

// Loss reasons (gemba_buffer_lost_records_total{reason}).
const (
	lostMovedAside = "moved_aside" // the store was damaged, moved aside, and these could not be salvaged
	lostShort      = "store_short" // Badger opened the store, but without these (e.g. a deleted MANIFEST)
)

// lossReportFor is how long a loss found at open keeps Stats.Err set (and /readyz not ready):
// long enough for someone to see it; the counters keep it for good.
const lossReportFor = 15 * time.Minute

func encodeDrops(d map[string]uint64) []byte {
	out := make([]byte, 0, 8*len(dropReasons))
	for _, r := range dropReasons {
		out = binary.BigEndian.AppendUint64(out, d[r])
	}
	return out
}

// loadDrops reads stream i's persisted drop counters into s.drops (recover runs before the
// goroutines start: no lock needed).
func (s *Store) loadDrops(txn *badger.Txn, i int) error {
	item, err := txn.Get(metaKey(uint8(i), metaDrops))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return item.Value(func(v []byte) error {
		for j, r := range dropReasons {
			if len(v) >= 8*(j+1) {
				s.drops[i][r] = max(s.drops[i][r], binary.BigEndian.Uint64(v[8*j:]))
			}
		}
		return nil
	})
}

// positionSets are the meta writes that go with a removal from stream: its removed counter and
// drop counters after n more records removed for reason ("" for an ack). s.mu must be held.
func (s *Store) positionSetsLocked(stream signal.Stream, n uint64, reason string) (removed, drops []byte) {
	d := make(map[string]uint64, len(s.drops[stream]))
	for k, v := range s.drops[stream] {
		d[k] = v
	}
	if reason != "" {
		d[reason] += n
	}
	return binary.BigEndian.AppendUint64(nil, s.st[stream].removed+n), encodeDrops(d)
}

// reconcile compares the opened store with the state file written by its previous life and
// counts what is missing: records the state file says were waiting, that the store neither holds
// nor removed since. It also keeps sequences from going back below what the state file saw.
// It runs before markOpen, so an incarnation missing from the store is still missing here.
func (s *Store) reconcile(prev *sidecar, movedTo string) error {
	if prev == nil {
		if movedTo != "" {
			s.log.Error("buffer store was damaged and no state file says what it held: records that could not be salvaged are lost uncounted", "moved_to", movedTo)
		}
		return nil
	}
	stored := ""
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(0xff, metaIncarnation))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		stored = string(v)
		return err
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	same := stored == prev.Incarnation
	reason := lostShort
	if movedTo != "" {
		reason = lostMovedAside
	}
	var msgs []string
	for i := range s.st {
		name := signal.Stream(i).String()
		p, ok := prev.Streams[name]
		if !ok {
			continue
		}
		for k, v := range p.Dropped { // counters survive the store's files
			s.drops[i][k] = max(s.drops[i][k], v)
		}
		st := &s.st[i]
		var have, removedSince uint64
		if same {
			if st.removed > p.Removed {
				removedSince = st.removed - p.Removed
			}
			have, err = s.countUpTo(signal.Stream(i), st.head, p.Last)
			if err != nil {
				return fmt.Errorf("reconcile %s: %w", name, err)
			}
			if p.Last > st.last { // the tail is gone: its sequences may have been published
				st.last, st.floor = p.Last, p.Last
				if err := s.db.Update(func(txn *badger.Txn) error {
					return txn.Set(metaKey(uint8(i), metaFloor), binary.BigEndian.AppendUint64(nil, st.floor))
				}); err != nil {
					return fmt.Errorf("reconcile %s: %w", name, err)
				}
			}
		}
		if p.Count <= have+removedSince {
			continue
		}
		lost := p.Count - have - removedSince
		s.lost[i][reason] += lost
		s.drops[i]["store_lost"] += lost
		msgs = append(msgs, fmt.Sprintf("%s %d", name, lost))
		s.log.Error("buffer store lost records", "stream", name, "lost", lost, "expected", p.Count,
			"found", have, "removed_since", removedSince, "reason", reason, "moved_to", movedTo,
			"same_incarnation", same)
	}
	if len(msgs) > 0 {
		s.lossErr = fmt.Errorf("buffer %s: records lost to a damaged store (%s): %s", s.cfg.Dir, reason, strings.Join(msgs, ", "))
		s.lossUntil = time.Now().Add(lossReportFor)
		// Persist the counters now: the state file is rewritten after open, but a crash before
		// the next removal must not forget the loss.
		if err := s.db.Update(func(txn *badger.Txn) error {
			for i := range s.st {
				if err := txn.Set(metaKey(uint8(i), metaDrops), encodeDrops(s.drops[i])); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
	}
	return nil
}

// countUpTo counts the records of stream with head < seq <= last.
func (s *Store) countUpTo(stream signal.Stream, head, last uint64) (uint64, error) {
	var n uint64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: qprefix(uint8(stream))})
		defer it.Close()
		for it.Seek(qseek(uint8(stream), head+1)); it.Valid(); it.Next() {
			k, ok := parseQKey(it.Item().Key())
			if !ok {
				continue
			}
			if k.seq > last {
				break
			}
			n++
		}
		return nil
	})
	return n, err
}
