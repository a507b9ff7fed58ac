package buffer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

const damageChildEnv = "GEMBA_BUFFER_DAMAGE_DIR"

// damageRecord is record i of the damage corpus: small ones stay in Badger's LSM (tables and
// write-ahead log), large ones go to the value log, so damage to either kind of file loses some.
func damageRecord(i int) []byte {
	n := 40
	if i%2 == 0 {
		n = 900
	}
	return append(fmt.Appendf(nil, "DMG-%05d-", i), bytes.Repeat([]byte{byte('a' + i%26)}, n)...)
}

const (
	damageWritten = 300 // records appended to samples
	damageAcked   = 60  // the first ones are acked before the damage
)

// damageReport is what a child that opened a (damaged) store saw.
type damageReport struct {
	Read    []uint64          `json:"read"` // sequences read back intact
	Bad     []uint64          `json:"bad"`  // sequences read back with other content
	Dropped map[string]uint64 `json:"dropped"`
	Err     string            `json:"err"`
	Moved   int               `json:"moved"`
}

// damageChild opens the store in GEMBA_BUFFER_DAMAGE_DIR, reads everything, prints a damageReport
// and closes. A panic anywhere (Badger's goroutines included) kills it: the parent sees that.
func damageChild() {
	cfg := crashConfig(os.Getenv(damageChildEnv))
	cfg.Badger.ValueLogFileSize = 1 << 20
	s, err := Open(cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var rep damageReport
	after := uint64(0)
	for after < s.LastSeq(signal.StreamSamples) {
		// The timeout ends a read whose remaining records are all corrupt (skipped and counted).
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		recs, err := s.Read(ctx, signal.StreamSamples, after, 1000)
		cancel()
		if err != nil {
			break
		}
		for _, r := range recs {
			if i := int(r.Seq); i <= damageWritten && bytes.Equal(r.Data, damageRecord(i)) {
				rep.Read = append(rep.Read, r.Seq)
			} else {
				rep.Bad = append(rep.Bad, r.Seq)
			}
			after = r.Seq
		}
	}
	st := s.Stats()
	rep.Dropped = st.Streams[signal.StreamSamples].Dropped
	if st.Err != nil {
		rep.Err = st.Err.Error()
	}
	rep.Moved = int(s.recoveries)
	if os.Getenv("GEMBA_BUFFER_DAMAGE_BUILD") != "" {
		for i := 1; i <= damageWritten; i++ {
			if _, err := s.Append(context.Background(), signal.StreamSamples, damageRecord(i)); err != nil {
				fmt.Fprintln(os.Stderr, "append:", err)
				os.Exit(3)
			}
		}
		if err := s.Ack(signal.StreamSamples, damageAcked); err != nil {
			fmt.Fprintln(os.Stderr, "ack:", err)
			os.Exit(3)
		}
		if os.Getenv("GEMBA_BUFFER_DAMAGE_BUILD") == "crash" {
			// A crash: no Close, the write-ahead log keeps the keys; the state file is as the
			// maintenance pass leaves it.
			s.saveSidecar(true)
			if err := s.db.Sync(); err != nil {
				os.Exit(3)
			}
			os.Exit(0)
		}
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(4)
	}
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
}

func runDamageChild(t *testing.T, dir string, env ...string) (damageReport, string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), damageChildEnv+"="+dir), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a test binary that died
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var rep damageReport
	if out := strings.TrimSpace(stdout.String()); err == nil && out != "" {
		lines := strings.Split(out, "\n")
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); jerr != nil {
			return rep, stderr.String(), fmt.Errorf("child output %q: %w", out, jerr)
		}
	}
	return rep, stderr.String(), err
}

// damageBase builds the undamaged store: damageWritten records, the first damageAcked acked, then
// a clean close or a crash.
func damageBase(t *testing.T, mode string) string {
	dir := filepath.Join(t.TempDir(), "base")
	if _, stderr, err := runDamageChild(t, dir, "GEMBA_BUFFER_DAMAGE_BUILD="+mode); err != nil {
		t.Fatalf("building the %s base store: %v %s", mode, err, stderr)
	}
	return dir
}

// damageCase is one damage applied to a copy of a base store.
type damageCase struct {
	name  string
	apply func(dir string) error
}

func flipAt(file string, frac float64) func(string) error {
	return func(dir string) error {
		path := filepath.Join(dir, file)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return fmt.Errorf("%s is empty", file)
		}
		i := min(int(frac*float64(len(b))), len(b)-1)
		b[i] ^= 0x5a
		return os.WriteFile(path, b, 0o600)
	}
}

func truncateTo(file string, frac float64) func(string) error {
	return func(dir string) error {
		path := filepath.Join(dir, file)
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		return os.Truncate(path, int64(frac*float64(st.Size())))
	}
}

func deleteFile(file string) func(string) error {
	return func(dir string) error { return os.Remove(filepath.Join(dir, file)) }
}

// damageCases lists, for every file of base larger than a header, flips at several offsets, two
// truncations and a deletion. long adds more offsets.
func damageCases(t *testing.T, base string, long bool) []damageCase {
	entries, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	fracs := []float64{0.01, 0.5, 0.99}
	if raceEnabled { // each child open is ~5x slower: one offset per file keeps the run short
		fracs = []float64{0.5}
	}
	if long {
		fracs = nil
		for f := 0.0; f < 1; f += 0.02 {
			fracs = append(fracs, f)
		}
	}
	var cases []damageCase
	for _, e := range entries {
		name := e.Name()
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() == 0 || name == "LOCK" || name == reserveName || strings.HasSuffix(name, ".tmp") {
			continue
		}
		for _, f := range fracs {
			cases = append(cases, damageCase{fmt.Sprintf("%s/flip@%.3f", name, f), flipAt(name, f)})
		}
		cases = append(cases,
			damageCase{name + "/truncate-half", truncateTo(name, 0.5)},
			damageCase{name + "/truncate-empty", truncateTo(name, 0)},
			damageCase{name + "/delete", deleteFile(name)})
	}
	cases = append(cases, damageCase{"all-badger-files/delete", func(dir string) error {
		es, _ := os.ReadDir(dir)
		for _, e := range es {
			if e.Name() != sidecarName {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}})
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	return cases
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o750); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Name() == reserveName {
			continue // space held, not data
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDamageCorpus damages every file of a store (Badger's tables, value and write-ahead logs,
// MANIFEST, KEYREGISTRY, DISCARD, the state file) in many ways: flipped bytes at several offsets,
// truncation, deletion. Each damaged store is opened twice in a child process: it must open
// (never a panic, never a refusal that would crash-loop the agent), and every record that was
// waiting is either read back intact or counted as lost (corrupt or store_lost). The second
// open finds nothing new to count. GEMBA_BUFFER_DAMAGE_LONG=1 flips at 50 offsets per file; under
// the race detector one offset per file and one open.
func TestDamageCorpus(t *testing.T) {
	long := os.Getenv("GEMBA_BUFFER_DAMAGE_LONG") != ""
	for _, mode := range []string{"clean", "crash"} {
		t.Run(mode, func(t *testing.T) {
			base := damageBase(t, mode)
			for _, c := range damageCases(t, base, long) {
				t.Run(c.name, func(t *testing.T) {
					dir := filepath.Join(t.TempDir(), "buf")
					copyDir(t, base, dir)
					if err := c.apply(dir); err != nil {
						t.Fatal(err)
					}
					checkDamaged(t, dir)
				})
			}
		})
	}
}

func checkDamaged(t *testing.T, dir string) {
	t.Helper()
	var reps [2]damageReport
	opens := len(reps)
	if raceEnabled {
		opens = 1
	}
	for i := range opens {
		rep, stderr, err := runDamageChild(t, dir)
		if err != nil {
			t.Fatalf("open %d of the damaged store failed: %v\n%.3000s", i+1, err, stderr)
		}
		reps[i] = rep
	}
	rep := reps[0]
	waiting := map[uint64]bool{}
	for i := uint64(damageAcked + 1); i <= damageWritten; i++ {
		waiting[i] = true
	}
	var intact uint64
	for _, seq := range rep.Read {
		if waiting[seq] {
			intact++
		}
	}
	lost := rep.Dropped["corrupt"] + rep.Dropped["store_lost"]
	t.Logf("read %d intact (%d of them waiting), %d with other content, dropped %v, moved aside %d, err %q",
		len(rep.Read), intact, len(rep.Bad), rep.Dropped, rep.Moved, rep.Err)
	if len(rep.Bad) > 0 {
		t.Errorf("records served with content that was never written under their sequence: %v", rep.Bad)
	}
	if intact+lost != uint64(len(waiting)) {
		t.Errorf("%d waiting records: %d read intact + %d reported lost (%v) = %d", len(waiting), intact, lost, rep.Dropped, intact+lost)
	}
	if rep.Dropped["store_lost"] > 0 && rep.Err == "" {
		t.Error("records lost to the damage, but Stats.Err does not say so")
	}
	again := reps[opens-1]
	if opens > 1 && (again.Dropped["store_lost"] != rep.Dropped["store_lost"] || again.Moved != 0) {
		t.Errorf("second open: dropped %v moved %d; first: %v", again.Dropped, again.Moved, rep.Dropped)
	}
}

// TestManifestLost: a deleted or truncated MANIFEST no longer loses the backlog without a word.
// The store is moved aside and salvaged from its files: every waiting record is read back, under
// the same incarnation (so the message ids of records already sent do not change). With the
// Badger files gone altogether, the state file says what was lost: ERROR log, counter, Stats.Err.
func TestManifestLost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   func(dir string) error
		wantLost uint64
	}{
		{"deleted", deleteFile("MANIFEST"), 0},
		{"truncated", truncateTo("MANIFEST", 0), 0},
		{"truncated-half", truncateTo("MANIFEST", 0.5), 0},
		{"store-files-deleted", func(dir string) error {
			es, _ := os.ReadDir(dir)
			for _, e := range es {
				if e.Name() != sidecarName {
					if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
						return err
					}
				}
			}
			return nil
		}, 340},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			s, err := Open(cfg, Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			inc := s.Incarnation()
			for i := 1; i <= 400; i++ {
				appendT(t, s, signal.StreamSamples, damageRecord(i))
			}
			if err := s.Ack(signal.StreamSamples, 60); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(cfg.Dir); err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			var logs bytes.Buffer
			s, err = Open(cfg, Options{Logger: slogTo(&logs), Metrics: reg})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			recs := readAll(t, s, signal.StreamSamples)
			st := s.Stats()
			lost := st.Streams[signal.StreamSamples].Dropped["store_lost"]
			t.Logf("read %d, lost %d, err %v", len(recs), lost, st.Err)
			if uint64(len(recs))+lost != 340 || lost != tc.wantLost {
				t.Fatalf("read %d + lost %d, want %d lost of 340 waiting", len(recs), lost, tc.wantLost)
			}
			for _, r := range recs {
				if !bytes.Equal(r.Data, damageRecord(int(r.Seq))) {
					t.Fatalf("record %d = %.20q", r.Seq, r.Data)
				}
			}
			if tc.wantLost == 0 {
				if s.Incarnation() != inc {
					t.Fatalf("salvaged store has incarnation %s, was %s", s.Incarnation(), inc)
				}
				return
			}
			if st.Err == nil || !strings.Contains(st.Err.Error(), "lost") {
				t.Fatalf("Stats.Err = %v, want the loss", st.Err)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "lost=340") {
				t.Fatalf("no ERROR log with the count: %s", logs.String())
			}
			if got := gauge(t, reg, "gemba_buffer_lost_records_total", map[string]string{"stream": "samples", "reason": lostMovedAside}); got != 340 {
				t.Fatalf("gemba_buffer_lost_records_total = %v", got)
			}
			// The state file keeps the incarnation: sequences go on past every one handed out.
			if seqs := appendT(t, s, signal.StreamSamples, rec("new")); seqs[0] <= 400 || s.Incarnation() != inc {
				t.Fatalf("after the loss: sequence %d, incarnation %s (was %s)", seqs[0], s.Incarnation(), inc)
			}
		})
	}
}
