package buffer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// appendMany is fullChild's "many" mode: it appends GEMBA_BUFFER_FULL_N records of
// GEMBA_BUFFER_FULL_SIZE bytes and closes the store cleanly: a backlog left by a long outage.
func appendMany(s *Store) {
	n, _ := strconv.Atoi(os.Getenv("GEMBA_BUFFER_FULL_N"))
	size, _ := strconv.Atoi(os.Getenv("GEMBA_BUFFER_FULL_SIZE"))
	batch := make([][]byte, 0, 100)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; len(batch) < cap(batch) && i < n; i++ {
			r := bytes.Repeat([]byte{'r'}, size)
			copy(r, fmt.Sprintf("%08d", i))
			batch = append(batch, r)
		}
		if _, err := s.Append(context.Background(), signal.StreamSamples, batch...); err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(5)
		}
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(4)
	}
	fmt.Println("done")
	os.Exit(0)
}

// TestDrainBacklogOnFullDisk: a store holding a large backlog (an LSM many times its reserve file)
// restarts on a disk another process has filled and forwards the backlog. The acks' deletions
// flush memtables and set off Badger's compactions, which write whole new tables through mmaps:
// on the full disk that was SIGBUS inside Badger (table.CreateTable from a compaction or a flush),
// every time. Every record must be read back once and acked, and the store must work again when
// space returns.
func TestDrainBacklogOnFullDisk(t *testing.T) {
	for _, c := range []struct {
		name          string
		records, size int
		fs            string
		defaults      bool
	}{
		// Records below value_threshold: keys and values fill the LSM (14 MiB of tables).
		{"lsm", 60000, 200, "96m", false},
		// Records in the value log, Badger sized as in production (max_bytes 2GiB): write-ahead logs
		// and value-log files of twice their configured size, allocated in full.
		{"value log, default sizes", 50000, 1000, "128m", true},
	} {
		t.Run(c.name, func(t *testing.T) { drainOnFullDisk(t, c.records, c.size, c.fs, c.defaults) })
	}
}

func drainOnFullDisk(t *testing.T, records, size int, fsSize string, defaults bool) {
	mnt, mounted := smallFS(t, fsSize)
	if !mounted {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: cannot mount a tmpfs for the full-disk test")
		}
		t.Skip("cannot mount a tmpfs (needs root): this test needs a real full filesystem")
	}
	dir := filepath.Join(mnt, "buf")
	env := []string{"GEMBA_BUFFER_FULL_N=" + strconv.Itoa(records), "GEMBA_BUFFER_FULL_SIZE=" + strconv.Itoa(size)}
	if defaults {
		env = append(env, fullDefaultsEnv+"=1")
	}
	var stderr bytes.Buffer
	cmd := fullCmd(dir, "many")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "done") {
		t.Fatalf("appending the backlog: %v %s\n%.2000s", err, out, stderr.String())
	}
	filler := fill(t, mnt)

	var out bytes.Buffer
	stderr.Reset()
	cmd = fullCmd(dir, "drain")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("draining the backlog on the full disk: %v\n%s", err, lastLines(stderr.String(), 1500))
	}
	ls := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rep struct {
		Read    []uint64          `json:"read"`
		Dropped map[string]uint64 `json:"dropped"`
	}
	if err := json.Unmarshal([]byte(ls[len(ls)-1]), &rep); err != nil {
		t.Fatalf("drain output %q: %v", out.String(), err)
	}
	seen := map[uint64]bool{}
	for _, s := range rep.Read {
		if seen[s] {
			t.Fatalf("record %d read twice", s)
		}
		seen[s] = true
	}
	if len(seen) != records {
		t.Fatalf("read back %d records of %d (dropped %v)", len(seen), records, rep.Dropped)
	}

	// Space returns: the store opens, its backlog is gone (acked), and it takes and serves records.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if defaults {
		t.Setenv(fullDefaultsEnv, "1")
	}
	s, err := Open(fullConfig(dir), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats().Streams[signal.StreamSamples]; st.Records != 0 {
		t.Fatalf("%d records still waiting after the drain acked them all", st.Records)
	}
	seqs, err := s.Append(context.Background(), signal.StreamSamples, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := s.Read(ctx, signal.StreamSamples, seqs[0]-1, 10)
	if err != nil || len(recs) != 1 || string(recs[0].Data) != "after" {
		t.Fatalf("read after the drain: %v %v", recs, err)
	}
	if err := s.Ack(signal.StreamSamples, seqs[0]); err != nil {
		t.Fatal(err)
	}
}

// lastLines returns the end of a long output (a Go crash dump puts the goroutine that died first,
// but the signal line is what matters).
func lastLines(s string, n int) string {
	if i := strings.Index(s, "SIGBUS"); i >= 0 {
		return s[max(0, i-200):min(len(s), i+n)]
	}
	return s[max(0, len(s)-n):]
}
