package buffer

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// putMetaUntilKilled is fullChild's "meta" mode: the feature engine's checkpoints and the MQTT
// journal (PutMeta) go on while the disk is full. It prints "ok" or "refused" for every call.
func putMetaUntilKilled(s *Store) {
	fmt.Println("ready")
	v := make([]byte, 4<<10) // above value_threshold: into the value log
	for i := 0; ; i++ {
		_, _ = rand.Read(v)
		if err := s.PutMeta(fmt.Sprintf("k%d", i%64), v); err != nil {
			fmt.Println("refused", err)
			continue
		}
		fmt.Println("ok")
	}
}

// TestPutMetaDiskFull: PutMeta writes through Badger's mmaps like an append. On a filesystem that
// another process filled to the last block it must be refused with an error, not crash the agent
// (SIGBUS writing into a new, unallocated log file).
func TestPutMetaDiskFull(t *testing.T) {
	mnt, mounted := smallFS(t, "40m")
	if !mounted {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: cannot mount a tmpfs for the full-disk test")
		}
		t.Skip("cannot mount a tmpfs (needs root): the test needs a real full filesystem")
	}
	cmd := fullCmd(filepath.Join(mnt, "buf"), "meta")
	stdout, stderr := startPiped(t, cmd)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // before the unmount
	lines := make(chan string, 1<<16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// next waits for the child's next line; "" when it is gone.
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				return ""
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("child silent for 30s: %s", stderr.String())
			return ""
		}
	}
	if l := next(); l != "ready" {
		t.Fatalf("child: %q %s", l, stderr.String())
	}
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
	// 32 MiB of checkpoints after the disk filled: many value-log files' worth.
	var ok, refused int
	for ok+refused < 8192 {
		l := next()
		switch {
		case l == "":
			t.Fatalf("the store died on the full disk after %d puts and %d refusals: %v\n%.1500s", ok, refused, cmd.Wait(), stderr.String())
		case l == "ok":
			ok++
		case strings.HasPrefix(l, "refused"):
			refused++
		}
	}
	if refused == 0 {
		t.Fatalf("%d puts on a full disk, none refused", ok)
	}
	t.Logf("%d puts, %d refused on the full disk", ok, refused)
}
