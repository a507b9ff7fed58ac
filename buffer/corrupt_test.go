package buffer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

func marked(i int) []byte {
	return append(fmt.Appendf(nil, "MARK-%04d-", i), bytes.Repeat([]byte("v"), 2000)...)
}

// damage flips a byte inside record i in the value log and reports whether the file it was in is
// the newest one (the one Badger checks and truncates on open).
func damage(t *testing.T, dir string, i int) (newest bool) {
	t.Helper()
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	for n, f := range vlogs {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if j := bytes.Index(data, marked(i)[:10]); j >= 0 {
			data[j+100] ^= 0xff
			if err := os.WriteFile(f, data, 0o600); err != nil {
				t.Fatal(err)
			}
			return n == len(vlogs)-1
		}
	}
	t.Fatalf("record %d not found in the value log files %v", i, vlogs)
	return false
}

// TestCorruptValue damages one record's bytes in an older value-log file: that record is skipped,
// counted and dropped once; every other record is served.
func TestCorruptValue(t *testing.T) {
	cfg := testConfig(t)
	cfg.Badger.ValueLogFileSize = 1 << 20
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1500 // ~3 MiB: three value-log files
	for i := 1; i <= n; i++ {
		appendT(t, s, signal.StreamSamples, marked(i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if damage(t, cfg.Dir, 5) {
		t.Fatal("record 5 is in the newest value-log file; the test needs it in an older one")
	}
	s, err = Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open with a damaged value: %v", err)
	}
	defer s.Close()
	recs := readT(t, s, signal.StreamSamples, 4, 1)
	if len(recs) != 1 || recs[0].Seq != 6 || !bytes.Equal(recs[0].Data, marked(6)) {
		t.Fatalf("read after 4 = %v, want record 6", recs)
	}
	for range 2 { // the second pass must not count the record again
		all := readAll(t, s, signal.StreamSamples)
		if len(all) != n-1 {
			t.Fatalf("read %d records, want the %d undamaged ones", len(all), n-1)
		}
		for _, r := range all {
			if r.Seq == 5 || !bytes.Equal(r.Data, marked(int(r.Seq))) {
				t.Fatalf("record %d = %.12q", r.Seq, r.Data)
			}
		}
		st := s.Stats().Streams[signal.StreamSamples]
		if st.Dropped["corrupt"] != 1 || st.Records != n-1 {
			t.Fatalf("stats = %+v, want 1 corrupt and %d waiting", st, n-1)
		}
	}
	// The dropped record is garbage the next reclaim gives back, like an acked one.
	s.mu.Lock()
	garbage := s.garbage
	s.mu.Unlock()
	if want := int64(len(marked(5)) + entryOverhead); garbage != want {
		t.Fatalf("garbage after dropping one corrupt record = %d, want %d", garbage, want)
	}
}

// TestCorruptTail damages a record in the newest value-log file. Badger truncates that file at the
// damage when it opens, so the records from there on are gone: each is counted as corrupt, the ones
// before are served, reads do not hang, and new appends work.
func TestCorruptTail(t *testing.T) {
	cfg := testConfig(t)
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		appendT(t, s, signal.StreamSamples, marked(i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damage(t, cfg.Dir, 5)
	s, err = Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open with a damaged tail: %v", err)
	}
	defer s.Close()
	seqs := appendT(t, s, signal.StreamSamples, marked(11))
	all := readAll(t, s, signal.StreamSamples)
	var got []uint64
	for _, r := range all {
		if !bytes.Equal(r.Data, marked(int(r.Seq))) {
			t.Fatalf("record %d = %.12q", r.Seq, r.Data)
		}
		got = append(got, r.Seq)
	}
	st := s.Stats().Streams[signal.StreamSamples]
	if len(got) < 5 || got[0] != 1 || got[3] != 4 || got[len(got)-1] != seqs[0] || st.Dropped["corrupt"] != uint64(11-len(got)) {
		t.Fatalf("served %v, stats %+v", got, st)
	}
}

// TestRefusedStoreMovedAside damages Badger's manifest: Open moves the directory aside, starts a
// new store with what it salvaged from the old one, and counts the recovery in metrics.
func TestRefusedStoreMovedAside(t *testing.T) {
	cfg := testConfig(t)
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	appendT(t, s, signal.StreamSamples, rec("lost in the damaged store"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "MANIFEST"), []byte("this is not a manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	s, err = Open(cfg, Options{Logger: slogTo(&logs), Metrics: reg})
	if err != nil {
		t.Fatalf("open of a damaged store: %v", err)
	}
	defer s.Close()
	aside, _ := filepath.Glob(cfg.Dir + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("moved-aside directories: %v", aside)
	}
	if _, err := os.Stat(filepath.Join(aside[0], "MANIFEST")); err != nil {
		t.Fatalf("the damaged store was not kept: %v", err)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), aside[0]) {
		t.Fatalf("no loud log naming %s: %s", aside[0], logs.String())
	}
	if got := gauge(t, reg, "gemba_buffer_recoveries_total", nil); got != 1 {
		t.Fatalf("gemba_buffer_recoveries_total = %v", got)
	}
	// The record is salvaged from the damaged store's files, under its sequence; new ones skip
	// ahead (the salvage cannot be sure it found the last).
	if got := readAll(t, s, signal.StreamSamples); len(got) != 1 || got[0].Seq != 1 || string(got[0].Data) != "lost in the damaged store" {
		t.Fatalf("salvaged records: %v", got)
	}
	if seqs := appendT(t, s, signal.StreamSamples, rec("fresh")); seqs[0] <= 1 {
		t.Fatalf("first sequence in the new store = %d", seqs[0])
	}
}

// TestMovedAsidePruned: repeated damage keeps only the newest moved-aside stores.
func TestMovedAsidePruned(t *testing.T) {
	cfg := testConfig(t)
	for i := range keepMovedAside + 2 {
		if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, "MANIFEST"), []byte("damaged"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(cfg, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(cfg.Dir); err != nil {
			t.Fatal(err)
		}
		aside, _ := filepath.Glob(cfg.Dir + ".corrupt-*")
		if want := min(i+1, keepMovedAside); len(aside) != want {
			t.Fatalf("after %d recoveries: %d moved-aside stores kept, want %d", i+1, len(aside), want)
		}
	}
}

// TestStoreInUseNotMovedAside: a lock held by another user of the directory is not damage.
func TestStoreInUseNotMovedAside(t *testing.T) {
	cfg := testConfig(t)
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(cfg, Options{Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), cfg.Dir) {
		t.Fatalf("second open of a directory in use = %v, want an error naming it", err)
	}
	if aside, _ := filepath.Glob(cfg.Dir + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("a store in use was moved aside: %v", aside)
	}
	appendT(t, s, signal.StreamSamples, rec("still works"))
}
