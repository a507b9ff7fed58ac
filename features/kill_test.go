package features

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// fileStore keeps meta values in files (write to a temp file, then rename), so a process killed
// with SIGKILL leaves either the old or the new value, like the buffer's Badger store.
type fileStore struct{ dir string }

func (f fileStore) path(key string) string {
	return filepath.Join(f.dir, hex.EncodeToString([]byte(key)))
}

func (f fileStore) GetMeta(key string) ([]byte, bool, error) {
	b, err := os.ReadFile(f.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	return b, err == nil, err
}

func (f fileStore) PutMeta(key string, value []byte) error {
	tmp := f.path(key) + ".tmp"
	if err := os.WriteFile(tmp, value, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, f.path(key))
}

const killCfg = "features:\n  - {signal: s, window: 10s, compute: [count, sum]}\n  - {signal: c, kind: counter, window: 10s, compute: [delta]}\n"

// TestKillChild is the child process of TestRestartAfterSIGKILL: it folds samples, checkpoints,
// folds more, says READY and waits to be killed.
func TestKillChild(t *testing.T) {
	dir := os.Getenv("FEATURES_KILL_DIR")
	if dir == "" {
		t.Skip("child process of TestRestartAfterSIGKILL")
	}
	e, err := New(parseConfig(t, killCfg), Options{Store: fileStore{dir}})
	if err != nil {
		t.Fatal(err)
	}
	e.Add([]signal.Sample{gauge("s", t0, 1), gauge("s", t0.Add(2*time.Second), 2),
		{Signal: "c", Time: t0, Value: signal.Int(100)}})
	if err := e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	e.Add([]signal.Sample{gauge("s", t0.Add(5*time.Second), 3), {Signal: "c", Time: t0.Add(5 * time.Second), Value: signal.Int(130)}})
	os.Stdout.WriteString("READY\n")
	_, _ = io.Copy(io.Discard, os.Stdin) // block until killed
}

// TestRestartAfterSIGKILL: a real process is killed mid-window after a periodic checkpoint. The
// restarted engine continues from the checkpoint: the window is emitted, marked partial, without
// the sample folded after the checkpoint; the counter delta is exact across the crash.
func TestRestartAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FEATURES_KILL_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "READY\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child: %q %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()

	var got []signal.Feature
	e, err := New(parseConfig(t, killCfg), Options{Store: fileStore{dir}, Emit: func(fs []signal.Feature) { got = append(got, fs...) }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Add([]signal.Sample{gauge("s", t0.Add(7*time.Second), 4), gauge("s", t0.Add(10*time.Second), 0),
		{Signal: "c", Time: t0.Add(7 * time.Second), Value: signal.Int(140)}, {Signal: "c", Time: t0.Add(10 * time.Second), Value: signal.Int(150)}})
	sortFeatures(got)
	want := []signal.Feature{
		{Signal: "c", Name: "delta", Value: 40, Count: 2, Partial: true},
		{Signal: "s", Name: "count", Value: 3, Count: 3, Partial: true},
		{Signal: "s", Name: "sum", Value: 7, Count: 3, Partial: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %v", len(got), len(want), render(got))
	}
	for i, w := range want {
		g := got[i]
		if g.Signal != w.Signal || g.Name != w.Name || g.Value != w.Value || g.Count != w.Count || g.Partial != w.Partial ||
			!g.WindowStart.Equal(t0) || !g.WindowEnd.Equal(t0.Add(10*time.Second)) {
			t.Errorf("record %d: got %s, want %+v", i, render(got[i:i+1]), w)
		}
	}
}
