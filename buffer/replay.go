package buffer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// At open Badger replays each write-ahead log (.mem file) left by the last run into a memtable
// and flushes it to a new table in the background, writing through an mmap into a sparse file.
// On a full disk that write raises SIGBUS. So the store checks that the flush has room (giving
// back the blocks it allocated ahead in its log files if need be), and waits for it to finish
// before anything of its own takes disk space.

// replayOverhead is what a table adds to its write-ahead log's data (block index, bloom filter),
// with margin; replayPerTable is added for each table.
const (
	replayOverhead = 1.1
	replayPerTable = 64 << 10
	replayWait     = 30 * time.Second
)

// lastData is where the data of a file of size bytes ends: after its last page that is not all
// zeros. The pages are read from the end, so a page of zeros inside the data is never taken for
// the end.
func lastData(f *os.File, size int64) (int64, bool) {
	const page = 4096
	buf := make([]byte, page)
	end := (size + page - 1) / page * page
	for end > 0 {
		n, err := f.ReadAt(buf, end-page)
		if n > 0 && !allZero(buf[:n]) {
			break
		}
		if err != nil && n == 0 && !errors.Is(err, io.EOF) {
			return 0, false
		}
		end -= page
	}
	return min(end, size), true
}

// trimTails gives back the blocks allocated past the data of the store's log files (secureFiles
// allocates them ahead): Badger truncates the last value log at open too, but only after its
// flush has started. What is given back reads as zeros as before. It returns the bytes freed.
func trimTails(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var freed int64
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); ext == ".vlog" || ext == ".mem" {
			freed += trimTail(filepath.Join(dir, e.Name()))
		}
	}
	return freed
}

// trimTail punches out the pages of path after its data.
func trimTail(path string) int64 {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size == 0 {
		return 0
	}
	end, ok := lastData(f, st.Size)
	if !ok || end >= st.Size {
		return 0
	}
	before := st.Blocks * 512
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, end, st.Size-end); err != nil {
		return 0
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return max(before-st.Blocks*512, 0)
}

// memFiles lists the write-ahead logs in dir.
func memFiles(dir string) []os.FileInfo {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []os.FileInfo
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".mem") {
			if info, err := e.Info(); err == nil {
				out = append(out, info)
			}
		}
	}
	return out
}

// replayNeed is the disk space the flush of the write-ahead logs in dir will take.
func replayNeed(dir string, mems []os.FileInfo) int64 {
	var need int64
	for _, m := range mems {
		f, err := os.Open(filepath.Join(dir, m.Name()))
		if err != nil {
			continue
		}
		if st, err := f.Stat(); err == nil {
			if end, ok := lastData(f, st.Size()); ok && end > 0 {
				need += int64(float64(end)*replayOverhead) + replayPerTable
			}
		}
		f.Close()
	}
	return need
}

// checkReplayRoom refuses to open a store whose replay would write more than the disk has free
// (initReserve has released the reserve file if it was held): a clear error instead of a crash
// inside Badger at every restart. Short of room, it first gives back the log files' tails.
func (s *Store) checkReplayRoom(mems []os.FileInfo) error {
	need := replayNeed(s.cfg.Dir, mems)
	if need == 0 {
		return nil
	}
	free, err := s.fsFree()
	if err != nil {
		return err
	}
	if free < need {
		if n := trimTails(s.cfg.Dir); n > 0 {
			s.log.Info("buffer: gave back blocks allocated past the data of its log files", "dir", s.cfg.Dir, "bytes", n)
			if free, err = s.fsFree(); err != nil {
				return err
			}
		}
	}
	if free < need {
		return fmt.Errorf("buffer %s: disk full: replaying %d write-ahead logs needs %d bytes free, %d are: free some space and start again (opening now would crash inside Badger)",
			s.cfg.Dir, len(mems), need, free)
	}
	return nil
}

// awaitReplay waits until Badger has flushed the write-ahead logs it replayed (it removes each
// once its table is written), so that securing files and the reserve do not take the blocks the
// flush is writing into. A store moved aside as damaged has new files under the same names.
func (s *Store) awaitReplay(mems []os.FileInfo) {
	if len(mems) == 0 {
		return
	}
	deadline := time.Now().Add(replayWait)
	for {
		left := 0
		for _, m := range mems {
			if now, err := os.Stat(filepath.Join(s.cfg.Dir, m.Name())); err == nil && os.SameFile(m, now) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("buffer: write-ahead logs replayed at open not flushed yet; going on", "left", left, "waited", replayWait)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
