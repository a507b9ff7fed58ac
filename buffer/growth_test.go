package buffer

import (
	"context"
	"testing"

	"github.com/gemba-io/gemba/signal"
)

// TestGrowth appends and acks 1 GiB (256 MiB with -short or -race) through a store whose cap is far away and
// shows that value-log GC keeps the disk near the working set instead of growing with the total.
func TestGrowth(t *testing.T) {
	total := int64(1 << 30)
	if testing.Short() || raceEnabled {
		total = 256 << 20
	}
	cfg := testConfig(t)
	cfg.MaxBytes = 2 << 30 // value-log files of 64 MiB
	cfg.Sync = SyncNone
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	vlog := int64(s.cfg.Badger.ValueLogFileSize)
	rec := make([]byte, 10_000) // one record = 100 samples of 100 bytes
	batch := [][]byte{rec, rec, rec, rec, rec, rec, rec, rec, rec, rec}
	ctx := context.Background()
	var written, peak int64
	var after uint64
	for written < total {
		if _, err := s.Append(ctx, signal.StreamSamples, batch...); err != nil {
			t.Fatalf("append after %d bytes: %v", written, err)
		}
		recs, err := s.Read(ctx, signal.StreamSamples, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		after = recs[len(recs)-1].Seq
		if err := s.Ack(signal.StreamSamples, after); err != nil {
			t.Fatal(err)
		}
		written += int64(len(batch) * len(rec))
		if d := s.Stats().DiskSize; d > peak {
			peak = d
		}
	}
	// Bound: the garbage that triggers a reclaim (2 value-log files), the files GC cannot touch
	// (the head file, one being written) and Badger's fixed files; independent of total.
	bound := 8*vlog + 32<<20
	if peak > bound {
		t.Fatalf("disk peaked at %d bytes (bound %d) for %d bytes appended and acked", peak, bound, written)
	}
	s.reclaim()
	final := s.Stats().DiskSize
	if final > 3*vlog+16<<20 {
		t.Fatalf("disk after reclaim of an empty buffer = %d bytes", final)
	}
	t.Logf("appended+acked %d MiB: peak disk %.1f MiB, after reclaim %.1f MiB (value-log file %d MiB)",
		written>>20, float64(peak)/(1<<20), float64(final)/(1<<20), vlog>>20)
}
