package buffer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// smallFS mounts a tmpfs of size bytes in a temporary directory. It reports false when mounting is
// not permitted (not root, or no CAP_SYS_ADMIN in a container).
func smallFS(t *testing.T, size string) (string, bool) {
	dir := t.TempDir()
	if os.Getenv("GEMBA_BUFFER_NO_MOUNT") != "" { // exercise the fallback where mounting works
		t.Log("GEMBA_BUFFER_NO_MOUNT set: using a max_bytes-capped directory instead of a tmpfs")
		return dir, false
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Logf("cannot mount a tmpfs (%v): falling back to a max_bytes-capped directory", err)
		return dir, false
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir, true
}

// TestDiskFull fills a 48 MiB filesystem that the store shares with a filler file. With every
// policy the store keeps running and refuses (or evicts) instead of crashing, reports ENOSPC in
// Stats, serves what it has, and recovers by itself when the filler is deleted.
func TestDiskFull(t *testing.T) {
	for _, policy := range []string{DropNewest, DropOldest, Block} {
		t.Run(policy, func(t *testing.T) { diskFull(t, policy) })
	}
}

func diskFull(t *testing.T, policy string) {
	mnt, mounted := smallFS(t, "48m")
	cfg := testConfig(t)
	cfg.Dir = filepath.Join(mnt, "buf")
	cfg.WhenFull = policy
	cfg.MaxBytes = 1 << 30
	cfg.Badger.MemTableSize = 1 << 20
	cfg.Badger.ValueLogFileSize = 1 << 20
	filler := filepath.Join(mnt, "filler")
	if mounted {
		// Leave ~20 MiB: Badger's files take 5 MiB at open and the store's reserve is 9–10 MiB, so
		// ~5 MiB of records fit.
		if err := os.WriteFile(filler, make([]byte, 28<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		cfg.MaxBytes = 8 << 20
	}
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	var appended []uint64
	var full error
	for i := range 2000 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		seqs, err := s.Append(ctx, signal.StreamSamples, bigRec(i))
		cancel()
		if err != nil {
			full = err
			break
		}
		appended = append(appended, seqs...)
	}
	st := s.Stats()
	switch policy {
	case DropOldest:
		if full != nil {
			t.Fatalf("drop_oldest must keep accepting by evicting: %v", full)
		}
		if st.Streams[signal.StreamSamples].Dropped["max_bytes"] == 0 {
			t.Fatal("drop_oldest on a full disk dropped nothing")
		}
	default:
		if !errors.Is(full, ErrFull) {
			t.Fatalf("append on a full disk = %v, want ErrFull", full)
		}
	}
	if mounted && !errors.Is(st.Err, syscall.ENOSPC) && policy != DropOldest {
		t.Fatalf("Stats.Err = %v, want ENOSPC", st.Err)
	}
	if !st.Full {
		t.Fatal("Stats.Full not set")
	}
	t.Logf("%s: %d appends accepted, then %v; disk %d bytes; stats err %v", policy, len(appended), full, st.DiskSize, st.Err)

	// What was accepted is served.
	all := readAll(t, s, signal.StreamSamples)
	if policy != DropOldest && len(all) != len(appended) {
		t.Fatalf("read %d records, %d were accepted", len(all), len(appended))
	}
	last := all[len(all)-1]
	if last.Seq != appended[len(appended)-1] {
		t.Fatalf("last record %d, last accepted %d", last.Seq, appended[len(appended)-1])
	}

	// Space returns: the store notices by itself.
	if mounted {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	} else if err := s.Ack(signal.StreamSamples, last.Seq); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the disk error to clear", func() bool { return s.Stats().Err == nil })
	if _, err := s.Append(context.Background(), signal.StreamSamples, bigRec(-1)); err != nil {
		t.Fatalf("append after space returned: %v", err)
	}
}
