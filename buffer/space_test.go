package buffer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// commitBatch hands reqs to the store as one group commit, as the writer does when that many
// appends arrive together, and returns each append's result. No Append may run concurrently: the
// test goroutine stands in for the (idle) writer goroutine.
func commitBatch(s *Store, stream signal.Stream, n int) []appendRes {
	var batch []*appendReq
	for i := range n {
		r := bigRec(i)
		batch = append(batch, &appendReq{stream: stream, records: [][]byte{r},
			size: int64(len(r) + entryOverhead), done: make(chan appendRes, 1)})
	}
	s.commitGroup(batch)
	out := make([]appendRes, n)
	for i, r := range batch {
		out[i] = <-r.done
	}
	return out
}

// groupConfig is the smallest cap with a group commit twice its size: 120 records of 64 KiB (the
// writer groups up to 8 MiB) through a 4 MiB cap.
func groupConfig(t *testing.T, policy string) Config {
	cfg := capConfig(t, policy)
	cfg.MaxBytes = minMaxBytes
	cfg.Sync = SyncNone
	return cfg
}

// TestGroupCountsAccepted: the appends a group has accepted count against max_bytes before the
// group is written, so one group cannot take the store past its cap.
func TestGroupCountsAccepted(t *testing.T) {
	s, err := Open(groupConfig(t, DropNewest), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 120
	var accepted, refused int64
	for i, res := range commitBatch(s, signal.StreamSamples, n) {
		switch {
		case res.err == nil:
			accepted++
		case errors.Is(res.err, ErrFull):
			refused++
		default:
			t.Fatalf("append %d: %v", i, res.err)
		}
	}
	size := int64(len(big) + entryOverhead)
	if accepted*size > int64(s.cfg.MaxBytes) {
		t.Fatalf("one group accepted %d records (%d bytes) into a %d-byte cap", accepted, accepted*size, s.cfg.MaxBytes)
	}
	st := s.Stats().Streams[signal.StreamSamples]
	if refused == 0 || st.Records != uint64(accepted) || st.Dropped["full"] != uint64(refused) {
		t.Fatalf("accepted %d, refused %d; stats %+v", accepted, refused, st)
	}
}

// TestGroupDropOldest: under drop_oldest a group larger than the cap still goes in whole; the
// accepted part is written first so that the rest can evict it.
func TestGroupDropOldest(t *testing.T) {
	s, err := Open(groupConfig(t, DropOldest), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 120
	for i, res := range commitBatch(s, signal.StreamSamples, n) {
		if res.err != nil {
			t.Fatalf("append %d of one group: %v", i, res.err)
		}
	}
	ss := s.Stats().Streams[signal.StreamSamples]
	if ss.Dropped["max_bytes"] == 0 || ss.Records+ss.Dropped["max_bytes"] != n || ss.LastSeq != n {
		t.Fatalf("stats after a %d-record group: %+v", n, ss)
	}
}

// TestReclaimKeepsConcurrentGarbage: a reclaim pass forgets only the garbage it started with;
// records removed while it runs stay counted for the next pass.
func TestReclaimKeepsConcurrentGarbage(t *testing.T) {
	s, err := Open(testConfig(t), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	s.garbage = 1000
	s.mu.Unlock()
	// Hold the pass at its memtable flush, after it has looked at the garbage, as a write in
	// progress does: a waiting Lock makes TryRLock fail.
	s.dbMu.RLock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.reclaim()
	}()
	testutil.WaitFor(t, 10*time.Second, "the reclaim pass to wait for the write", func() bool {
		if s.dbMu.TryRLock() {
			s.dbMu.RUnlock()
			return false
		}
		return true
	})
	s.mu.Lock()
	s.garbage += 500 // an ack during the pass
	s.mu.Unlock()
	s.dbMu.RUnlock()
	<-done
	s.mu.Lock()
	garbage := s.garbage
	s.mu.Unlock()
	if garbage != 500 {
		t.Fatalf("garbage after a reclaim pass = %d, want the 500 bytes removed during it", garbage)
	}
}

// TestDeadDataReclaimedAfterRestart: value-log data of records removed before a restart (acked
// while reclaims could not run, or before one was due) is not counted by the new life's removals.
// When it alone is over max_bytes and the queue is empty, nothing was there to evict or ack: every
// append was refused with ErrFull until something else removed records, which never came.
func TestDeadDataReclaimedAfterRestart(t *testing.T) {
	for _, policy := range []string{DropOldest, DropNewest, Block} {
		t.Run(policy, func(t *testing.T) { deadDataAfterRestart(t, policy) })
	}
}

func deadDataAfterRestart(t *testing.T, policy string) {
	cfg := testConfig(t)
	cfg.MaxBytes = 64 << 20
	cfg.Sync = SyncNone
	// Files larger than what is removed: neither removal nor the maintenance tick reclaims before
	// Close (the once-a-minute pass aside), so the removed records' data stays on disk.
	cfg.Badger.ValueLogFileSize = 16 << 20
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 192 // 12 MiB
	var last uint64
	for i := range n {
		seqs, err := s.Append(context.Background(), signal.StreamSamples, bigRec(i))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		last = seqs[0]
	}
	if err := s.Ack(signal.StreamSamples, last); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := vlogBytes(t, cfg.Dir); d <= 8<<20 {
		t.Fatalf("setup: %d bytes of value log left at close, want the acked records' data", d)
	}

	// The operator lowers the cap below what the dead data occupies (a drain on a full disk,
	// where reclaims are refused, leaves the same).
	cfg.MaxBytes = 8 << 20
	cfg.Badger.ValueLogFileSize = 0
	cfg.WhenFull = policy
	s, err = Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := s.Stats().Streams[signal.StreamSamples].Records; r != 0 {
		t.Fatalf("setup: %d records waiting after all were acked", r)
	}
	// block would wait for acks that cannot come: the deadline turns that into ErrFull.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 32 { // 2 MiB: a quarter of the cap
		if _, err := s.Append(ctx, signal.StreamSamples, bigRec(i)); err != nil {
			t.Fatalf("append %d into an empty queue after the restart: %v (disk %d bytes)", i, err, s.Stats().DiskSize)
		}
	}
	if d := s.Stats().DiskSize; d > int64(cfg.MaxBytes) {
		t.Fatalf("disk %d bytes above max_bytes %d", d, cfg.MaxBytes)
	}
}

// vlogBytes sums the sizes of the value-log files in dir (Badger truncates them to their data at close).
func vlogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		total += info.Size()
	}
	return total
}
