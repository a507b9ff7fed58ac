package buffer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const smallRecs = 2000

// A store killed with records in its write-ahead log starts again on a disk another process has
// filled. Badger flushes that log to a table through an mmap at open, which on a full disk dies
// of SIGBUS. With its reserve file held the store opens in the space it
// gives back and reads every record back; without, Open fails with an error that says so, and
// opens once there is room.
func TestOpenReplaysOnFullDisk(t *testing.T) {
	t.Run("reserve held", func(t *testing.T) {
		dir, mnt := killedWithLog(t, true)
		fill(t, mnt)
		if got := drain(t, dir); got != smallRecs {
			t.Fatalf("read back %d records, want %d", got, smallRecs)
		}
	})
	t.Run("no room", func(t *testing.T) {
		dir, mnt := killedWithLog(t, false)
		trimTails(dir)         // what Open gives back when short of room
		filler := fill(t, mnt) // is taken too
		var stderr bytes.Buffer
		cmd := fullCmd(dir, "drain")
		cmd.Stderr = &stderr
		err := cmd.Run()
		if strings.Contains(stderr.String(), "SIGBUS") || err == nil || !strings.Contains(stderr.String(), "disk full: replaying") {
			t.Fatalf("open on the full disk: %v, want the replay refused with a clear error:\n%.2000s", err, stderr.String())
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if got := drain(t, dir); got != smallRecs {
			t.Fatalf("read back %d records, want %d", got, smallRecs)
		}
	})
}

// startPiped starts a child test binary with its stdout as a pipe and its stderr collected; it
// never outlives the test binary.
func startPiped(t *testing.T, cmd *exec.Cmd) (io.ReadCloser, *bytes.Buffer) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return stdout, &stderr
}

func fullCmd(dir, mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fullChildEnv+"="+dir, "GEMBA_BUFFER_FULL_MODE="+mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// killedWithLog leaves a store on a fresh small filesystem killed with smallRecs records in its
// write-ahead log, its reserve file removed unless reserve.
func killedWithLog(t *testing.T, reserve bool) (dir, mnt string) {
	mnt, mounted := smallFS(t, "32m") // room for the reserve file besides the reserve
	if !mounted {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: cannot mount a tmpfs for the full-disk test")
		}
		t.Skip("cannot mount a tmpfs (needs root): this test needs a real full filesystem")
	}
	dir = filepath.Join(mnt, "buf")
	cmd := fullCmd(dir, "small")
	stdout, stderr := startPiped(t, cmd)
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	done := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "done" {
				done <- true
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(done)
	}()
	select {
	case ok := <-done:
		if !ok {
			t.Fatalf("the store ended before appending: %.2000s", stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the store did not append its records within 60 s")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if replayNeed(dir, memFiles(dir)) == 0 {
		t.Fatalf("no write-ahead log with data left by the killed store: %v", memFiles(dir))
	}
	if _, err := os.Stat(filepath.Join(dir, reserveName)); err != nil {
		t.Fatalf("the store held no reserve file: %v", err)
	}
	if !reserve {
		_ = os.Remove(filepath.Join(dir, reserveName))
	}
	return dir, mnt
}

// fill writes a file into mnt until the filesystem is full.
func fill(t *testing.T, mnt string) string {
	path := filepath.Join(mnt, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// drain opens the store in a child, reads and acks everything, and returns how many it read.
func drain(t *testing.T, dir string) int {
	var out, stderr bytes.Buffer
	cmd := fullCmd(dir, "drain")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("open: %v\n%.3000s", err, stderr.String())
	}
	ls := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rep struct {
		Read []uint64 `json:"read"`
	}
	if err := json.Unmarshal([]byte(ls[len(ls)-1]), &rep); err != nil {
		t.Fatalf("drain output %q: %v", out.String(), err)
	}
	return len(rep.Read)
}
