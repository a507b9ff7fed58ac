package buffer

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The reserve file is disk space the store holds so that Badger's own writes have somewhere to go
// when the filesystem fills up. Badger writes through mmaps into sparse files (write-ahead logs,
// value logs, new tables), and a page written where the filesystem has no block left raises SIGBUS,
// which kills the process, and again at every restart on the still-full disk. The store stops
// appending at its reserve (see makeRoom), but another process can take the last block; then the
// eviction, the memtable flush and the value-log GC that give space back would die writing. So
// when the disk is found full the reserve file is deleted first, and those writes land in the
// space it held. It is made again (allocated with fallocate, so it really holds blocks) once there
// is room for it and the store's reserve besides; appends stay refused until then.
const reserveName = "GEMBA-RESERVE"

// reserveFileSize covers what Badger writes on a full disk (draining the backlog, reclaiming): the
// write-ahead logs of its memtables (a file of twice memtable_size each, allocated in full by
// secureFiles), a flushed memtable (one table), the value-log file it writes into (twice
// value_log_file_size, allocated in full), 1 MiB of margin, and what its compactions write (lsmRoom).
func (s *Store) reserveFileSize() int64 {
	b := s.cfg.Badger
	return int64(2*b.NumMemtables+1)*int64(b.MemTableSize) + 2*int64(b.ValueLogFileSize) + 1<<20 + s.lsmRoom()
}

// reserveStep is the granularity in which the reserve follows the LSM, and the slack the reserve
// file may have before it is shrunk.
const reserveStep = 1 << 20

// lsmRoom is what Badger's compactions may write at once. A compaction writes its new tables in
// full before it deletes those it merged, and one set off by the deletions of acks (one L0 table
// triggers it) or the flatten of a reclaim can rewrite the whole LSM: the backlog of a long outage
// is an LSM of tens of MiB, far above the memtables, and on a full disk its rewrite died of SIGBUS.
// So the LSM's size at the last measurement, a quarter more for the deletions written since,
// in reserveSteps.
func (s *Store) lsmRoom() int64 {
	l := s.lsm.Load()
	return (l + l/4 + reserveStep - 1) / reserveStep * reserveStep
}

// lsmBytes sums the sizes of the tables in dir.
func lsmBytes(dir string) int64 {
	entries, _ := os.ReadDir(dir)
	var n int64
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".sst" {
			continue
		}
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}

// reserveNeed is the free space appends must leave. The reserve file is made again (checkReserve)
// only when there is room for it besides: appends do not wait for it.
func (s *Store) reserveNeed() int64 { return s.reserve() }

// holdReserve makes the reserve file when it is missing and there is room for it, and resizes it
// as the LSM grows or shrinks.
func (s *Store) holdReserve(free int64) {
	want, held := s.reserveFileSize(), s.reserveBytes.Load()
	if s.reserveHeld.Load() && held >= want && held <= want+reserveStep {
		return
	}
	if !s.reserveHeld.Load() {
		held = 0
	}
	if grow := want - held; grow > 0 && free < s.reserve()+grow+2*int64(s.cfg.Badger.ValueLogFileSize) {
		return
	}
	path := filepath.Join(s.cfg.Dir, reserveName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		s.log.Warn("buffer reserve file not made", "err", err)
		return
	}
	if want > held {
		err = unix.Fallocate(int(f.Fd()), 0, 0, want)
	} else {
		err = f.Truncate(want)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil && held > 0 && f.Truncate(held) == nil {
		f.Close() // not grown: the file keeps what it held
		return
	}
	f.Close()
	if err != nil {
		_ = os.Remove(path)
		s.reserveHeld.Store(false)
		if !errors.Is(err, unix.EOPNOTSUPP) {
			s.log.Warn("buffer reserve file not made", "err", err)
		}
		return
	}
	s.reserveBytes.Store(want)
	if !s.reserveHeld.Swap(true) {
		s.log.Info("buffer reserve file held", "path", path, "bytes", want)
	}
}

// releaseReserve deletes the reserve file, giving its space to Badger's next writes.
func (s *Store) releaseReserve(why string, free int64) {
	if !s.reserveHeld.Swap(false) {
		return
	}
	if err := os.Remove(filepath.Join(s.cfg.Dir, reserveName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("buffer reserve file not released", "err", err)
		return
	}
	s.log.Warn("buffer reserve file released: the disk is full", "why", why, "free", free, "released", s.reserveBytes.Load())
}

// initReserve runs before Badger opens: a store that finds its disk full gives the reserve back
// first, so that opening (write-ahead log replay, new log files) has room.
func (s *Store) initReserve() {
	s.lsm.Store(lsmBytes(s.cfg.Dir))
	base := s.reserveFileSize() - s.lsmRoom()
	if st, err := os.Stat(filepath.Join(s.cfg.Dir, reserveName)); err == nil && st.Size() >= base && allocated(st) {
		s.reserveHeld.Store(true) // resized to the LSM by checkReserve
		s.reserveBytes.Store(st.Size())
	} else if err == nil {
		_ = os.Remove(filepath.Join(s.cfg.Dir, reserveName)) // not ours, or not allocated: made again below
	}
	free, err := s.fsFree()
	if err != nil {
		return
	}
	if free < s.reserve() {
		s.releaseReserve("opening on a full disk", free)
	}
}

// checkReserve runs every second: it releases the reserve when another process has eaten into
// the store's free reserve (Badger's background flushes and compactions need room) and makes it
// again, or resizes it to the LSM (measure), when there is room.
func (s *Store) checkReserve() {
	free, err := s.fsFree()
	if err != nil {
		return
	}
	if s.reserveHeld.Load() && free < s.reserve()/2 {
		s.releaseReserve("free space below half the reserve", free)
		return
	}
	s.holdReserve(free)
}

// allocated tells whether the blocks of a file cover its size (a reserve file whose allocation
// was cut short by a crash holds less than it claims).
func allocated(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return !ok || sys.Blocks*512 >= st.Size()
}

const (
	settle      = 20 * time.Millisecond // how long the free space must hold still on a nearly full disk
	settleSlack = 256 << 10             // what the store's own writes may take meanwhile
)

// roomToWrite tells whether Badger may write new file space now (a memtable flush, a table, a
// value-log file rewritten by GC, pages of the write-ahead log): a fresh statfs must show a
// reserve file's worth free, after releasing the reserve file if need be. Without it the write
// would land in pages the filesystem cannot back, and SIGBUS kills the process.
func (s *Store) roomToWrite(what string) bool {
	free, err := s.fsFree()
	if err != nil {
		return false
	}
	if free >= 4*s.reserveFileSize() {
		return true
	}
	if free < s.reserveFileSize() {
		s.releaseReserve(what+" on a full disk", free)
	}
	// Near full, the room must also hold still: while another process is filling the disk, space
	// seen free now (the reserve file's included) can be gone before Badger's write lands.
	time.Sleep(settle)
	again, err := s.fsFree()
	if err == nil && again >= s.reserveFileSize() && again >= free-settleSlack {
		return true
	}
	free = again
	s.mu.Lock()
	logIt := time.Since(s.lastNoRoomLog) >= 10*time.Second
	if logIt {
		s.lastNoRoomLog = time.Now()
	}
	s.mu.Unlock()
	if logIt {
		s.log.Error("disk full: not writing, Badger would crash writing where the filesystem has no room", "op", what, "free", free, "need", s.reserveFileSize())
	}
	return false
}

// Badger's log files (value logs, write-ahead logs, the discard statistics) are created at their
// full logical size as sparse files and written through shared mmaps as they fill. secureFiles
// allocates their blocks with fallocate as soon as they appear, so that writing into them can
// never meet a full filesystem (SIGBUS): the disk being full shows up here, as an error, before
// any write. Until a pass succeeds, appends are refused as on a full disk (see makeRoom). What
// stays unsecured is the first writes into a file Badger has just created (its next log file,
// a new table) before the next pass: the store's reserve (makeRoom) is what leaves room for them.
func (s *Store) secureFiles() {
	st, err := os.Stat(s.cfg.Dir)
	if err != nil {
		return
	}
	s.secMu.Lock()
	defer s.secMu.Unlock()
	if st.ModTime().Equal(s.secMtime) && !s.unsecured.Load() {
		return // no file created or removed since the last pass
	}
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return
	}
	done := make(map[string]int64, len(entries))
	var failed error
	for _, e := range entries {
		name := e.Name()
		if ext := filepath.Ext(name); ext != ".vlog" && ext != ".mem" && name != "DISCARD" {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if s.secDone[name] == info.Size() {
			done[name] = info.Size()
			continue
		}
		size, err := fallocate(filepath.Join(s.cfg.Dir, name))
		switch {
		case err == nil:
			done[name] = size
		case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
			failed = err
		default:
			// Not a lack of space (a filesystem without fallocate, a file gone meanwhile):
			// there is nothing to secure with, and refusing appends would not help.
			done[name] = info.Size()
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("allocating a Badger log file failed", "file", name, "err", err)
			}
		}
	}
	s.secDone, s.secMtime = done, st.ModTime()
	if failed != nil {
		if !s.unsecured.Swap(true) {
			s.log.Error("disk full: cannot allocate Badger's log files, appends refused until there is room", "err", failed)
		}
		if free, err := s.fsFree(); err == nil {
			s.releaseReserve("allocating Badger's log files", free)
		}
		return
	}
	if s.unsecured.Swap(false) {
		s.log.Info("Badger's log files allocated again", "dir", s.cfg.Dir)
	}
}

// fallocate allocates the blocks of path up to its current size. KEEP_SIZE: a file Badger has
// truncated meanwhile (a rotated value log) must not grow back.
func fallocate(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() == 0 {
		return 0, nil
	}
	return st.Size(), unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, st.Size())
}

// securedSizes returns the secured files' names and logical sizes (measure counts their data, not
// their allocated blocks).
func (s *Store) securedSizes() map[string]int64 {
	s.secMu.Lock()
	defer s.secMu.Unlock()
	return s.secDone
}

// dataEnd is where the data of a secured log file ends: Badger writes its logs from the start and
// the rest reads as zeros, so a binary search for the last page that is not all zeros finds it.
// This keeps max_bytes counting what the store wrote, not the blocks allocated ahead.
func dataEnd(path string, size int64) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	const page = 4096
	buf := make([]byte, page)
	zero := func(p int64) bool {
		n, err := f.ReadAt(buf, p*page)
		if n == 0 && err != nil {
			return true
		}
		return allZero(buf[:n])
	}
	lo, hi := int64(0), (size+page-1)/page // pages from hi on are zero
	for lo < hi {
		mid := (lo + hi) / 2
		if zero(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo * page, true
}
