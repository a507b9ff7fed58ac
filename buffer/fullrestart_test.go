package buffer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

const fullChildEnv = "GEMBA_BUFFER_FULL_DIR"

func fullConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.MaxBytes = 1 << 30 // the filesystem, not the cap, is the limit
	cfg.MaxAge = 0
	cfg.Badger.MemTableSize = 1 << 20
	cfg.Badger.ValueLogFileSize = 1 << 20
	if os.Getenv(fullDefaultsEnv) != "" { // Badger sized as in production (max_bytes 2GiB)
		d := DefaultConfig().Badger
		cfg.Badger.MemTableSize, cfg.Badger.ValueLogFileSize = d.MemTableSize, maxDefaultVlog
	}
	return cfg
}

// fullDefaultsEnv gives the child Badger's default sizes instead of fullConfig's small ones.
const fullDefaultsEnv = "GEMBA_BUFFER_FULL_DEFAULTS"

// fullChild is the process under test. Mode "append" appends (drop_oldest) until killed, printing
// the sequence of every record whose Append returned. Mode "drain" reads and acks the whole
// backlog, as the uplink forwarding it would, and prints what it read and the drop counters. Mode
// "meta" calls PutMeta until killed (see putMetaUntilKilled).
func fullChild() {
	cfg := fullConfig(os.Getenv(fullChildEnv))
	s, err := Open(cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	if os.Getenv("GEMBA_BUFFER_FULL_MODE") == "small" {
		// Records small enough to stay in the LSM: the write-ahead log fills, no flush yet.
		for i := range smallRecs {
			if _, err := s.Append(context.Background(), signal.StreamSamples, []byte(fmt.Sprintf("%08d%0190d", i, 0))); err != nil {
				fmt.Fprintln(os.Stderr, "append:", err)
				os.Exit(5)
			}
		}
		fmt.Println("done")
		select {} // killed: what is in the write-ahead log is replayed at the next open
	}
	if os.Getenv("GEMBA_BUFFER_FULL_MODE") == "many" {
		appendMany(s)
	}
	if os.Getenv("GEMBA_BUFFER_FULL_MODE") == "meta" {
		putMetaUntilKilled(s)
	}
	if os.Getenv("GEMBA_BUFFER_FULL_MODE") == "append" {
		fmt.Println("ready")
		for i := 0; ; i++ {
			seqs, err := s.Append(context.Background(), signal.StreamSamples, bigRec(i))
			if err == nil {
				fmt.Println(seqs[0])
			}
		}
	}
	var read []uint64
	var after uint64
	for after < s.LastSeq(signal.StreamSamples) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		recs, err := s.Read(ctx, signal.StreamSamples, after, 50)
		cancel()
		if err != nil {
			break
		}
		for _, r := range recs {
			read = append(read, r.Seq)
			after = r.Seq
		}
		if err := s.Ack(signal.StreamSamples, after); err != nil {
			fmt.Fprintln(os.Stderr, "ack:", err)
			os.Exit(3)
		}
	}
	st := s.Stats()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(4)
	}
	out, _ := json.Marshal(map[string]any{"read": read, "dropped": st.Streams[signal.StreamSamples].Dropped})
	fmt.Println(string(out))
}

// TestDiskFullRestart fills the filesystem (another process's file, written until ENOSPC) while the
// store appends with drop_oldest: its appends, evictions and reclaims must not die of SIGBUS
// (Badger writes through mmaps into sparse files). Killed, it must start again on the still-full
// disk (and survive appending there), then forward its backlog, and every record whose Append had
// returned is either read back or counted as dropped: the counters survive the restarts. Needs a tmpfs (root): skipped elsewhere, but a failed mount fails the test under CI.
func TestDiskFullRestart(t *testing.T) {
	mnt, mounted := smallFS(t, "40m")
	if !mounted {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: cannot mount a tmpfs for the full-disk test")
		}
		t.Skip("cannot mount a tmpfs (needs root): the full-disk restart test needs a real full filesystem")
	}
	dir := filepath.Join(mnt, "buf")
	appended := map[uint64]bool{}
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fullChildEnv+"="+dir, "GEMBA_BUFFER_FULL_MODE=append")
		stdout, stderr := startPiped(t, cmd) // never outlives a test binary that died
		lines := make(chan uint64, 1<<16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if n, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
					lines <- n
				}
			}
			close(lines)
		}()
		count := func(within time.Duration, n int) int {
			deadline := time.After(within)
			got := 0
			for got < n {
				select {
				case seq, ok := <-lines:
					if !ok {
						return got
					}
					appended[seq] = true
					got++
				case <-deadline:
					return got
				}
			}
			return got
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() }) // before the unmount
		if round > 0 {                               // on the full disk appends are refused: a moment is enough
			count(time.Second, 1<<30)
		} else if got := count(30*time.Second, 200); got < 200 {
			t.Fatalf("round %d: child appended %d records: %s", round, got, stderr.String())
		}
		if round == 0 {
			// Another process fills the filesystem to the last block.
			f, err := os.Create(filepath.Join(mnt, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			chunk := make([]byte, 64<<10)
			for {
				if _, err := f.Write(chunk); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatal(err)
					}
					break
				}
			}
			f.Close()
		}
		// Let it run on the full disk: evictions, reclaims, refusals.
		count(3*time.Second, 1<<30)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("round %d: the child is gone before the kill: %v %s", round, err, stderr.String())
		}
		for range lines {
		}
		werr := cmd.Wait()
		if werr == nil || !strings.Contains(werr.Error(), "killed") {
			t.Fatalf("round %d: child died by itself on the full disk: %v\n%.2000s", round, werr, stderr.String())
		}
	}
	// Start on the full disk and forward the backlog.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fullChildEnv+"="+dir, "GEMBA_BUFFER_FULL_MODE=drain")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("restart on the full disk: %v\n%.3000s", err, stderr.String())
	}
	var rep struct {
		Read    []uint64          `json:"read"`
		Dropped map[string]uint64 `json:"dropped"`
	}
	out, _ := io.ReadAll(&stdout)
	ls := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(ls[len(ls)-1]), &rep); err != nil {
		t.Fatalf("drain output %q: %v", out, err)
	}
	var missing uint64
	read := map[uint64]bool{}
	for _, s := range rep.Read {
		read[s] = true
	}
	for s := range appended {
		if !read[s] {
			missing++
		}
	}
	dropped := rep.Dropped["max_bytes"] + rep.Dropped["corrupt"] + rep.Dropped["store_lost"]
	t.Logf("%d appended, %d read back, %d missing, dropped %v", len(appended), len(rep.Read), missing, rep.Dropped)
	if missing > dropped {
		t.Fatalf("%d appended records neither read back nor counted as dropped (dropped %v)", missing-dropped, rep.Dropped)
	}
	if dropped+rep.Dropped["full"] == 0 {
		t.Fatal("nothing was evicted or refused: the disk never filled")
	}
}
