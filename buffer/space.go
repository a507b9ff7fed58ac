package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/gemba-io/gemba/signal"
)

// evictOrder is who pays when drop_oldest needs room: raw samples first, status last, so a flood of
// samples cannot push out features and alarms.
var evictOrder = [signal.NumStreams]signal.Stream{signal.StreamSamples, signal.StreamFeatures, signal.StreamStatus}

// reserve is the free space the filesystem must keep. Badger writes its logs through mmap into
// sparse files: a page written on a full filesystem raises SIGBUS instead of returning ENOSPC, so the
// store stops appending while less is free than Badger may write without asking (reserveFileSize:
// its log files, a flush, its compactions' new tables) and one value-log file more, so that where
// appends stop, eviction and reclaim still find room to write (roomToWrite).
func (s *Store) reserve() int64 {
	return s.reserveFileSize() + int64(s.cfg.Badger.ValueLogFileSize)
}

func (s *Store) fsFree() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.Dir, &st); err != nil {
		return 0, fmt.Errorf("buffer %s: statfs: %w", s.cfg.Dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// freeCache spares the writer a statfs per append while the disk has plenty of room: a reading is
// reused for up to freeCacheAge, less the bytes cleared for writing since, as long as that estimate
// stays freeCacheMargin above what makeRoom needs. Near the reserve every append measures.
type freeCache struct {
	at    time.Time
	free  int64
	since int64
}

const (
	freeCacheAge    = 100 * time.Millisecond
	freeCacheMargin = 64 << 20
)

// freeFor returns the free bytes for an append of need bytes, from the cache when it is fresh and
// far from the reserve.
func (s *Store) freeFor(need int64, fresh bool) (int64, error) {
	c := &s.free
	slack := 2 * int64(s.cfg.Badger.ValueLogFileSize)
	if est := c.free - c.since; !fresh && time.Since(c.at) < freeCacheAge && est-need-slack-freeCacheMargin >= s.reserveNeed() {
		c.since += need
		return est, nil
	}
	free, err := s.fsFree()
	if err != nil {
		return 0, err
	}
	c.at, c.free, c.since = time.Now(), free, need
	return free, nil
}

// makeRoom decides whether need more bytes may be written, evicting (drop_oldest) and reclaiming
// disk space as needed. It returns an error wrapping ErrFull when they may not; otherwise the bytes
// count as pending until the writer has written them, so that the rest of a group commit (and
// the groups after it) see them.
func (s *Store) makeRoom(need int64) error {
	limit := int64(s.cfg.MaxBytes)
	vlog := int64(s.cfg.Badger.ValueLogFileSize)
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		usage, garbage := s.usedLocked(), s.garbage
		s.mu.Unlock()
		free, err := s.freeFor(need, attempt > 0)
		if err != nil {
			return err
		}
		diskFull := free-need < s.reserveNeed() || s.unsecured.Load()
		if usage+need <= limit && !diskFull {
			s.mu.Lock()
			s.pending += need
			// Full and the disk error clear only with two files of room to spare, so that a
			// store evicting to stay under the cap does not flap between full and not full.
			slack := 2 * vlog // eviction frees one file beyond the need: that is not yet room to spare
			if attempt == 0 && usage+need+slack <= limit && free-need-slack >= s.reserveNeed() {
				s.full = false
				if s.ioErr != nil && errors.Is(s.ioErr, syscall.ENOSPC) {
					s.ioErr = nil
					s.log.Info("disk space is back", "dir", s.cfg.Dir, "free", free)
				}
			}
			s.mu.Unlock()
			return nil
		}
		s.mu.Lock()
		s.full = true
		if diskFull && (s.ioErr == nil || !errors.Is(s.ioErr, syscall.ENOSPC)) {
			s.ioErr = fmt.Errorf("buffer %s: %w: %d bytes free, %d kept in reserve", s.cfg.Dir, syscall.ENOSPC, free, s.reserveNeed())
			s.diskErrs++
			s.log.Error("disk full", "dir", s.cfg.Dir, "free", free, "reserve", s.reserveNeed(), "when_full", s.cfg.WhenFull)
		}
		s.mu.Unlock()
		if diskFull && free-need < s.reserve() {
			// Below the store's own reserve: another process took it. The eviction and reclaim
			// below write through Badger's mmaps; give them the reserve file's blocks.
			s.releaseReserve("disk full while appending", free)
		}
		if attempt >= 6 {
			break
		}
		if garbage >= vlog/2 && attempt < 2 {
			s.reclaim()
			continue
		}
		if s.cfg.WhenFull != DropOldest {
			break
		}
		target := usage + need - limit
		if diskFull {
			target = max(target, s.reserve()-(free-need))
			if !s.roomToWrite("evict") {
				break // deleting writes too: refuse (counted as full) rather than write blindly
			}
		}
		if s.evict(target+vlog) == 0 {
			break
		}
		s.reclaim()
	}
	s.mu.Lock()
	err, used := s.ioErr, s.usedLocked()
	s.mu.Unlock()
	if err != nil && errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return fmt.Errorf("%w: %d of %d bytes used (max_bytes)", ErrFull, used, limit)
}

// metaRoom refuses a PutMeta of need bytes on a full disk, as makeRoom refuses appends: the value
// goes through Badger's mmaps like a record, and a new log file written where the filesystem has no
// block left raises SIGBUS. The cap does not apply (meta keys are few and overwritten).
func (s *Store) metaRoom(need int64) error {
	free, err := s.fsFree()
	if err != nil {
		return err
	}
	if free-need < s.reserveNeed() || s.unsecured.Load() {
		return fmt.Errorf("%w: %d bytes free, %d kept in reserve", syscall.ENOSPC, free, s.reserveNeed())
	}
	return nil
}

// evict drops the oldest records, samples first, until about target bytes are freed.
func (s *Store) evict(target int64) int64 {
	s.headMu.Lock()
	defer s.headMu.Unlock()
	var freed int64
	for _, st := range evictOrder {
		if freed >= target {
			break
		}
		n, err := s.removeHead(st, func(k qkeyInfo) bool {
			if freed >= target {
				return false
			}
			freed += int64(k.size + entryOverhead)
			return true
		}, "max_bytes", 0)
		if err != nil {
			s.log.Error("evict failed", "stream", st, "err", err)
		}
		s.mu.Lock()
		logIt := n > 0 && time.Since(s.lastEvictLog) >= 10*time.Second
		if logIt {
			s.lastEvictLog = time.Now()
		}
		total := s.drops[st]["max_bytes"]
		s.mu.Unlock()
		if logIt { // at most every 10 s: the counters carry the exact numbers
			s.log.Warn("buffer full, dropping oldest records", "stream", st, "records", n, "dropped_total", total, "max_bytes", s.cfg.MaxBytes)
		}
	}
	return freed
}

// removeHead deletes records from the head of stream while pred holds. reason is the drop counter
// to charge ("" for an ack); ackTo, when set, becomes the persisted acked position. headMu must be
// held. It returns the number of records removed.
func (s *Store) removeHead(stream signal.Stream, pred func(qkeyInfo) bool, reason string, ackTo uint64) (uint64, error) {
	var total uint64
	for {
		s.mu.Lock()
		head, acked, last := s.st[stream].head, s.st[stream].acked, s.st[stream].last
		s.mu.Unlock()
		var keys [][]byte
		var n, bytes, lastSeq uint64
		var more bool
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: qprefix(uint8(stream))})
			defer it.Close()
			for it.Seek(qseek(uint8(stream), head+1)); it.Valid(); it.Next() {
				k, ok := parseQKey(it.Item().Key())
				if !ok {
					continue
				}
				if k.seq > last {
					return nil // written but not yet published (syncing)
				}
				if len(keys) >= 4096 {
					more = true
					return nil
				}
				if !pred(k) {
					return nil
				}
				keys = append(keys, it.Item().KeyCopy(nil))
				n++
				bytes += uint64(k.size)
				lastSeq = k.seq
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("buffer %s: scan %s head: %w", s.cfg.Dir, stream, err)
		}
		newHead := max(head, lastSeq)
		if !more && ackTo > newHead {
			newHead = ackTo // the records up to ackTo were dropped already
		}
		newAcked := acked
		if ackTo > acked {
			newAcked = min(ackTo, max(newHead, acked))
		}
		if n == 0 && newHead == head && newAcked == acked {
			return total, nil
		}
		s.mu.Lock()
		removed, drops := s.positionSetsLocked(stream, n, reason)
		s.mu.Unlock()
		if err := s.deleteKeys(keys, stream, newHead, newAcked, removed, drops); err != nil {
			return total, err
		}
		s.mu.Lock()
		s.st[stream].head, s.st[stream].acked = newHead, newAcked
		kick := s.removedLocked(stream, n, bytes, reason)
		s.mu.Unlock()
		if kick {
			s.kickReclaim()
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// removedLocked accounts for n records of bytes payload deleted from stream: its counters, the
// drop counter reason ("" for none), the garbage a reclaim gives back, and it wakes blocked
// appends. It reports whether enough garbage piled up to ask for a reclaim. s.mu must be held.
func (s *Store) removedLocked(stream signal.Stream, n, bytes uint64, reason string) (kick bool) {
	st := &s.st[stream]
	st.count -= n
	st.bytes -= bytes
	st.removed += n
	s.garbage += int64(bytes + n*entryOverhead)
	if reason != "" && n > 0 {
		s.drops[stream][reason] += n
	}
	s.refreshFirstLocked(stream)
	s.signalSpaceLocked()
	return s.garbage >= 2*int64(s.cfg.Badger.ValueLogFileSize)
}

// kickReclaim asks the maintenance goroutine for a reclaim pass.
func (s *Store) kickReclaim() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// deleteKeys removes keys and persists the head and acked positions with them.
// removed and drops (positionSetsLocked) are the counters after the removal, stored with it.
func (s *Store) deleteKeys(keys [][]byte, stream signal.Stream, head, acked uint64, removed, drops []byte) error {
	s.dirty.Store(true)
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	// retry runs op, starting a new transaction when Badger says this one is full.
	retry := func(op func(*badger.Txn) error) error {
		err := op(txn)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			err = op(txn)
		}
		return err
	}
	for _, k := range keys {
		if err := retry(func(t *badger.Txn) error { return t.Delete(k) }); err != nil {
			return fmt.Errorf("buffer %s: delete: %w", s.cfg.Dir, err)
		}
	}
	for _, m := range []struct {
		kind byte
		v    []byte
	}{{metaHead, binary.BigEndian.AppendUint64(nil, head)}, {metaAcked, binary.BigEndian.AppendUint64(nil, acked)},
		{metaRemoved, removed}, {metaDrops, drops}} {
		key, val := metaKey(uint8(stream), m.kind), m.v
		if err := retry(func(t *badger.Txn) error { return t.Set(key, val) }); err != nil {
			return fmt.Errorf("buffer %s: write %s position: %w", s.cfg.Dir, stream, err)
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("buffer %s: commit delete: %w", s.cfg.Dir, err)
	}
	s.secureFiles() // the deletions may have started a new write-ahead log
	return nil
}

// refreshFirstLocked re-reads the first waiting key of stream. s.mu must be held: a writer that
// commits after this peek sees the updated count and sets first itself.
func (s *Store) refreshFirstLocked(stream signal.Stream) {
	st := &s.st[stream]
	if st.count == 0 {
		st.first, st.oldest = 0, time.Time{}
		return
	}
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: qprefix(uint8(stream))})
		defer it.Close()
		// Seek past head: everything up to it is deleted, and Rewind would walk their tombstones.
		for it.Seek(qseek(uint8(stream), st.head+1)); it.Valid(); it.Next() {
			if k, ok := parseQKey(it.Item().Key()); ok {
				st.first, st.oldest = k.seq, s.step.ageFrom(stream, k)
				return nil
			}
		}
		return nil
	})
}

// dropCorrupt removes records that failed their checksum, counting and logging each once.
func (s *Store) dropCorrupt(stream signal.Stream, bad []qkeyInfo) {
	s.headMu.Lock()
	defer s.headMu.Unlock()
	var n, bytes uint64
	s.dirty.Store(true)
	s.dbMu.RLock()
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, k := range bad {
			key := qkey(uint8(stream), k.seq, k.t, k.size)
			if _, err := txn.Get(key); errors.Is(err, badger.ErrKeyNotFound) {
				continue // acked meanwhile
			} else if err != nil {
				return err
			}
			if err := txn.Delete(key); err != nil {
				return err
			}
			n++
			bytes += uint64(k.size)
		}
		if n == 0 {
			return nil
		}
		s.mu.Lock()
		removed, drops := s.positionSetsLocked(stream, n, "corrupt")
		s.mu.Unlock()
		if err := txn.Set(metaKey(uint8(stream), metaRemoved), removed); err != nil {
			return err
		}
		return txn.Set(metaKey(uint8(stream), metaDrops), drops)
	})
	s.dbMu.RUnlock()
	if err != nil {
		s.log.Error("dropping corrupt records failed", "stream", stream, "err", err)
		return
	}
	s.mu.Lock()
	kick := s.removedLocked(stream, n, bytes, "corrupt")
	s.mu.Unlock()
	if kick {
		s.kickReclaim()
	}
}

// reclaim gives the disk space of removed records back: Badger only frees a value-log file after a
// compaction has seen the deletions (its discard statistics), and deletions sit in the memtable until
// it fills. So: force a memtable flush (DropPrefix of a marker key flushes all memtables), flatten
// the (tiny, keys-only) LSM so tombstones meet their values, then run value-log GC until it has
// nothing left to rewrite.
func (s *Store) reclaim() {
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	if !s.roomToWrite("reclaim") {
		return
	}
	start := time.Now()
	s.mu.Lock()
	before, garbage := s.usedLocked(), s.garbage
	s.mu.Unlock()
	s.dbMu.Lock()
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte{pfxFlush}, []byte{1}) })
	if err == nil {
		err = s.db.DropPrefix([]byte{pfxFlush})
	}
	s.dbMu.Unlock()
	if err == nil {
		err = s.db.Flatten(2)
	}
	if err != nil {
		s.log.Warn("reclaim: flush failed", "err", err)
	}
	files := 0
	for ; files < 256; files++ {
		// Writes wait while a file is collected: Badger's GC reads the memtable's max version
		// without synchronisation against concurrent writes (a data race under -race).
		s.dbMu.Lock()
		err := s.db.RunValueLogGC(0.5)
		s.dbMu.Unlock()
		// GC read the whole file through its mmap (and the rewritten records went to the
		// current one): give those pages back before the next file, or a pass over n files
		// would hold n files' worth of RSS.
		trimMappings(s.cfg.Dir)
		if err != nil {
			break
		}
	}
	s.mu.Lock()
	s.garbage -= garbage // records removed during the pass may have escaped it: they stay counted
	s.mu.Unlock()
	s.secureFiles()
	s.measure()
	s.mu.Lock()
	after := s.disk
	s.signalSpaceLocked()
	s.mu.Unlock()
	s.log.Debug("reclaimed", "before", before, "after", after, "vlog_files", files, "took", time.Since(start))
}

// measure sums the blocks the store's files occupy (sparse mmapped files count only what is written).
func (s *Store) measure() {
	s.measureMu.Lock()
	defer s.measureMu.Unlock()
	s.mu.Lock()
	written := s.written
	s.mu.Unlock()
	var total, lsm int64
	secured := s.securedSizes()
	_ = filepath.WalkDir(s.cfg.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || d.Name() == reserveName {
			return nil // the reserve file is space held for Badger, not data
		}
		if size, ok := secured[d.Name()]; ok && filepath.Dir(path) == s.cfg.Dir {
			if end, ok := dataEnd(path, size); ok {
				total += end
				return nil
			}
		}
		if info, err := d.Info(); err == nil {
			if filepath.Ext(d.Name()) == ".sst" {
				lsm += info.Size()
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
		}
		return nil
	})
	s.mu.Lock()
	// Bytes written during the walk may be missing from total: they stay counted in written.
	s.disk, s.written = total, s.written-written
	s.mu.Unlock()
	s.lsm.Store(lsm)
}

// clearIfRoom clears Full and a disk-full error once there is room to spare again without an
// append having to find out (so /readyz recovers on an idle agent too).
func (s *Store) clearIfRoom() {
	free, err := s.fsFree()
	if err != nil {
		return
	}
	slack := 2 * int64(s.cfg.Badger.ValueLogFileSize)
	s.mu.Lock()
	defer s.mu.Unlock()
	if free-slack < s.reserveNeed() {
		return
	}
	if s.ioErr != nil && errors.Is(s.ioErr, syscall.ENOSPC) {
		s.ioErr = nil
		s.log.Info("disk space is back", "dir", s.cfg.Dir, "free", free)
	}
	if s.usedLocked()+slack <= int64(s.cfg.MaxBytes) {
		s.full = false
	}
	s.signalSpaceLocked()
}

// maintain runs periodic syncs (sync: batch), age expiry, disk measurement and reclaim.
func (s *Store) maintain() {
	defer s.bg.Done()
	tick := time.Second
	if s.cfg.MaxAge > 0 {
		tick = min(max(s.cfg.MaxAge/4, 20*time.Millisecond), time.Second)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	// Trimming (a read of /proc/self/maps) and measuring (a directory walk) keep their own
	// cadence: the tick follows max_age down to 20 ms.
	mt := time.NewTicker(time.Second)
	defer mt.Stop()
	var syncC <-chan time.Time
	if s.cfg.Sync == SyncBatch {
		st := time.NewTicker(s.cfg.SyncInterval)
		defer st.Stop()
		syncC = st.C
	}
	lastReclaim := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
			s.reclaim()
			lastReclaim = time.Now()
		case <-syncC:
			if !s.dirty.Swap(false) {
				continue // nothing written: spare the flash an fsync
			}
			if err := s.db.Sync(); err != nil {
				s.dirty.Store(true)
				s.setIOErr(fmt.Errorf("buffer %s: sync: %w", s.cfg.Dir, err))
			}
		case <-mt.C:
			trimMappings(s.cfg.Dir)
			s.checkReserve()
			s.secureFiles()
			s.measure()
			s.saveSidecar(false)
		case now := <-t.C:
			s.expire()
			s.mu.Lock()
			garbage, full, ioErr := s.garbage, s.full, s.ioErr
			s.mu.Unlock()
			vlog := int64(s.cfg.Badger.ValueLogFileSize)
			if garbage >= vlog && (full || now.Sub(lastReclaim) >= 5*time.Second) || garbage > 0 && now.Sub(lastReclaim) >= time.Minute {
				s.reclaim()
				lastReclaim = time.Now()
			}
			if full || ioErr != nil && errors.Is(ioErr, syscall.ENOSPC) {
				s.clearIfRoom()
			}
		}
	}
}
