package buffer

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/gemba-io/gemba/signal"
)

// writer group-commits appends until stop.
func (s *Store) writer() {
	defer s.bg.Done()
	var batch []*appendReq
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
			size := r.size
		drain:
			for size < 8<<20 && len(batch) < 1024 {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
					size += r.size
				default:
					break drain
				}
			}
			s.commitGroup(batch)
		case <-s.stop:
			return
		}
	}
}

func (s *Store) commitGroup(batch []*appendReq) {
	var accepted []*appendReq
	for i := 0; i < len(batch); i++ {
		r := batch[i]
		err := s.makeRoom(r.size)
		if errors.Is(err, ErrFull) && s.cfg.WhenFull == DropOldest && len(accepted) > 0 {
			// The appends accepted before this one hold the room it needs, and only published
			// records can be evicted: commit them, then try this one again (once: accepted is
			// empty then).
			s.commit(accepted)
			s.inflight.Wait() // sync: always publishes after the fsync
			accepted = nil
			i--
			continue
		}
		if err != nil {
			if errors.Is(err, ErrFull) && s.cfg.WhenFull == Block {
				err = errRetry
			} else if errors.Is(err, ErrFull) {
				s.countDrop(r.stream, "full", uint64(len(r.records)))
			}
			r.done <- appendRes{err: err}
			continue
		}
		accepted = append(accepted, r)
	}
	if len(accepted) > 0 {
		s.commit(accepted)
	}
}

// commit writes appends that makeRoom accepted as one group and hands them to the syncer or
// publishes them.
func (s *Store) commit(accepted []*appendReq) {
	g := &group{reqs: accepted, seqs: make([][]uint64, len(accepted))}
	for i, r := range accepted {
		g.seqs[i] = make([]uint64, len(r.records))
		for j := range r.records {
			s.next[r.stream]++
			g.seqs[i][j] = s.next[r.stream]
		}
		s.handed[r.stream].Store(s.next[r.stream])
	}
	// The time is read after the sequences are handed out: a wall-clock step that checkClock sees
	// after this read finds them below its bound.
	g.now = s.wallNow()
	var entries []*badger.Entry
	var size int64
	for i, r := range accepted {
		size += r.size
		for j, rec := range r.records {
			seq := g.seqs[i][j]
			entries = append(entries, badger.NewEntry(qkey(uint8(r.stream), seq, g.now, len(rec)), frame(seq, rec)))
		}
		// After the records: should write split the group, a meta key never lands in a
		// transaction before the records it describes.
		for _, m := range r.meta {
			entries = append(entries, badger.NewEntry(append([]byte{pfxUser}, m.Key...), m.Value))
		}
	}
	err := s.write(entries)
	s.secureFiles() // the group may have started a new value log or write-ahead log
	s.mu.Lock()
	s.pending -= size
	if err == nil {
		s.written += size // in Badger's files now: the next measure sees them
	}
	s.mu.Unlock()
	if err != nil {
		// Part of the group may be in Badger (several transactions): wait for the groups still
		// syncing, then recount from the keys so that the counters match what is stored. The
		// next measure counts the bytes that made it to disk.
		s.inflight.Wait()
		s.recount()
		s.setIOErr(err)
		for _, r := range accepted {
			r.done <- appendRes{err: err}
		}
		return
	}
	if s.cfg.Sync == SyncAlways {
		// The syncer fsyncs while this goroutine writes the next group: one fsync covers every
		// group written while the previous one ran.
		s.inflight.Add(1)
		s.syncQ <- g
		return
	}
	s.publish([]*group{g}, nil)
}

// group is one group commit on its way to the readers.
type group struct {
	reqs []*appendReq
	seqs [][]uint64
	now  time.Time
}

// syncer makes written groups durable for sync: always, then publishes them.
func (s *Store) syncer() {
	defer s.bg.Done()
	for {
		select {
		case g := <-s.syncQ:
			gs := []*group{g}
		drain:
			for {
				select {
				case g := <-s.syncQ:
					gs = append(gs, g)
				default:
					break drain
				}
			}
			var err error
			if serr := s.db.Sync(); serr != nil {
				err = fmt.Errorf("buffer %s: sync: %w", s.cfg.Dir, serr)
				s.setIOErr(err)
			}
			s.publish(gs, err)
			for range gs {
				s.inflight.Done()
			}
		case <-s.stop:
			return
		}
	}
}

// publish makes written groups visible to readers and answers their appenders. The records are in
// Badger even when err (a failed sync) is set, so they are counted either way; their appenders get
// the error and may append again (at least once).
func (s *Store) publish(gs []*group, err error) {
	s.mu.Lock()
	var touched int64
	var woke [signal.NumStreams]bool
	for _, g := range gs {
		for i, r := range g.reqs {
			st := &s.st[r.stream]
			if st.count == 0 {
				st.first = g.seqs[i][0]
				st.oldest = s.step.ageFrom(r.stream, qkeyInfo{seq: st.first, t: g.now})
			}
			st.last = g.seqs[i][len(g.seqs[i])-1]
			st.count += uint64(len(r.records))
			for _, rec := range r.records {
				st.bytes += uint64(len(rec))
			}
			touched += r.size
			if !woke[r.stream] {
				woke[r.stream] = true
				close(s.wake[r.stream])
				s.wake[r.stream] = make(chan struct{})
			}
		}
		s.groups++
		s.grouped += uint64(len(g.reqs))
	}
	if err == nil && s.ioErr != nil && !errors.Is(s.ioErr, syscall.ENOSPC) {
		s.ioErr = nil // a write error that a write has since disproved
	}
	s.mu.Unlock()
	for _, g := range gs {
		for i, r := range g.reqs {
			if err != nil {
				r.done <- appendRes{err: err}
			} else {
				r.done <- appendRes{seqs: g.seqs[i]}
			}
		}
	}
	s.touch(touched)
}

// recount rebuilds the counters of every stream from its keys after a write that may have been
// partly applied. Only the writer calls it, with no group in flight.
func (s *Store) recount() {
	s.headMu.Lock()
	defer s.headMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.st {
		st := &s.st[i]
		st.count, st.bytes, st.first, st.oldest = 0, 0, 0, time.Time{}
		_ = s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: qprefix(uint8(i))})
			defer it.Close()
			for it.Seek(qseek(uint8(i), st.head+1)); it.Valid(); it.Next() {
				if k, ok := parseQKey(it.Item().Key()); ok {
					if st.first == 0 {
						st.first, st.oldest = k.seq, s.step.ageFrom(signal.Stream(i), k)
					}
					st.count++
					st.bytes += uint64(k.size)
					st.last = max(st.last, k.seq)
				}
			}
			return nil
		})
		s.next[i] = max(s.next[i], st.last)
		s.handed[i].Store(s.next[i])
	}
}

// write stores entries in as few transactions as Badger allows.
func (s *Store) write(entries []*badger.Entry) error {
	s.dirty.Store(true)
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, e := range entries {
		err := txn.SetEntry(e)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err != nil {
				return fmt.Errorf("buffer %s: commit: %w", s.cfg.Dir, err)
			}
			txn = s.db.NewTransaction(true)
			err = txn.SetEntry(e)
		}
		if err != nil {
			return fmt.Errorf("buffer %s: write: %w", s.cfg.Dir, err)
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("buffer %s: commit: %w", s.cfg.Dir, err)
	}
	return nil
}
