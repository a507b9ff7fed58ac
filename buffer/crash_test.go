package buffer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/gemba-io/gemba/signal"
)

const crashChildEnv = "GEMBA_BUFFER_CRASH_DIR"

// crashChild appends from four goroutines with sync: always and prints "<seq> <payload>" for every
// record whose Append returned, until it is killed.
func crashChild() {
	cfg := DefaultConfig()
	cfg.Dir = os.Getenv(crashChildEnv)
	cfg.Sync = SyncAlways
	if m := os.Getenv("GEMBA_BUFFER_CRASH_SYNC"); m != "" {
		cfg.Sync = m // a SIGKILL (unlike a power cut) loses nothing in any mode: try batch or none
	}
	cfg.MaxBytes = 1 << 30
	s, err := Open(cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	round := os.Getenv("GEMBA_BUFFER_CRASH_ROUND")
	var out sync.Mutex
	fmt.Println("ready")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				n := 1 + i%3
				recs := make([][]byte, n)
				for j := range recs {
					recs[j] = fmt.Appendf(nil, "r%s-g%d-%d-%d-%s", round, g, i, j, strings.Repeat("p", rand.IntN(1500)))
				}
				seqs, err := s.Append(context.Background(), signal.StreamSamples, recs...)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				var b bytes.Buffer
				for j, seq := range seqs {
					fmt.Fprintf(&b, "%d %s\n", seq, recs[j])
				}
				out.Lock()
				os.Stdout.Write(b.Bytes()) // one write per Append: a pipe write under 4 KiB is atomic
				out.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestCrash kills a child that appends continuously with SIGKILL at a random moment, 20 times on
// the same directory. After each kill the reopened store must hold every record whose Append had
// returned, in order, exactly once; records acked by the test must not come back.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary 20 times")
	}
	dir := filepath.Join(t.TempDir(), "buf")
	acknowledged := map[uint64]string{}
	var ackedUpTo uint64
	for round := range 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "GEMBA_BUFFER_CRASH_ROUND="+strconv.Itoa(round))
		stdout, stderr := startPiped(t, cmd)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		if !sc.Scan() || sc.Text() != "ready" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("round %d: child did not start: %q %s", round, sc.Text(), stderr.String())
		}
		lines, first := make(chan []string, 1), make(chan struct{})
		go func() {
			var l []string
			for sc.Scan() {
				if l = append(l, sc.Text()); len(l) == 1 {
					close(first)
				}
			}
			lines <- l
		}()
		select { // appends are flowing
		case <-first:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: child appended nothing: %s", round, stderr.String())
		}
		<-time.After(time.Duration(20+rand.IntN(300)) * time.Millisecond) // the random moment
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		got := <-lines
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: child ended with %v, stderr %s", round, err, stderr.String())
		}
		for _, l := range got {
			seqStr, payload, ok := strings.Cut(l, " ")
			seq, err := strconv.ParseUint(seqStr, 10, 64)
			if !ok || err != nil {
				t.Fatalf("round %d: bad line from child %q", round, l)
			}
			acknowledged[seq] = payload
		}

		s, err := Open(crashConfig(dir), Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		recs := readAll(t, s, signal.StreamSamples)
		seen := map[string]bool{}
		present := map[uint64]string{}
		var prev uint64
		for _, r := range recs {
			if r.Seq <= prev || r.Seq <= ackedUpTo {
				t.Fatalf("round %d: sequence %d after %d (acked up to %d)", round, r.Seq, prev, ackedUpTo)
			}
			prev = r.Seq
			if seen[string(r.Data)] {
				t.Fatalf("round %d: record %q is duplicated", round, r.Data[:20])
			}
			seen[string(r.Data)] = true
			present[r.Seq] = string(r.Data)
		}
		for seq, p := range acknowledged {
			if seq <= ackedUpTo {
				continue
			}
			if present[seq] != p {
				t.Fatalf("round %d: acknowledged record %d lost or changed (%d present, %d acknowledged)", round, seq, len(present), len(acknowledged))
			}
		}
		// A sequence handed out before the crash is never handed out again.
		maxSeen := prev
		for seq := range acknowledged {
			maxSeen = max(maxSeen, seq)
		}
		if seqs := appendT(t, s, signal.StreamSamples, fmt.Appendf(nil, "parent-%d", round)); seqs[0] <= maxSeen {
			t.Fatalf("round %d: sequence %d reused (seen up to %d)", round, seqs[0], maxSeen)
		}
		recs = readAll(t, s, signal.StreamSamples)
		if len(recs) > 0 { // ack a random prefix: it must stay acked across the next crash
			ackedUpTo = recs[rand.IntN(len(recs))].Seq
			if err := s.Ack(signal.StreamSamples, ackedUpTo); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d records acknowledged by the child, %d waiting after reopen, acked up to %d", round, len(got), len(recs), ackedUpTo)
	}
}

// crashConfig is DefaultConfig on dir.
func crashConfig(dir string) Config {
	c := DefaultConfig()
	c.Dir = dir
	c.MaxBytes = 1 << 30
	return c
}

// TestUncleanRestartSkipsSequences: without the clean-shutdown marker (a crash or power cut), the
// next sequences jump by uncleanGap, durably, so a sequence that a lost record had is never reused;
// after a clean close they continue normally.
func TestUncleanRestartSkipsSequences(t *testing.T) {
	cfg := testConfig(t)
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	appendT(t, s, signal.StreamSamples, rec("a"), rec("b"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Remove the marker as a crash would have left it.
	db, err := badger.Open(badgerOptions(cfg.withDefaults(), testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Delete(metaKey(0xff, metaClean)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint64{3 + uncleanGap, 4 + uncleanGap} { // unclean, then clean
		s, err := Open(cfg, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if seqs := appendT(t, s, signal.StreamSamples, rec("c")); seqs[0] != want {
			t.Fatalf("open %d: sequence %d, want %d", i, seqs[0], want)
		}
		if got := readAll(t, s, signal.StreamSamples); len(got) != 3+i || got[0].Seq != 1 {
			t.Fatalf("open %d: records %v", i, got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
