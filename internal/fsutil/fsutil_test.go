package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")

	check := func(want string, perm os.FileMode) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Fatalf("content %q, %v; want %q", got, err, want)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != perm {
			t.Fatalf("mode %v, %v; want %v", st.Mode().Perm(), err, perm)
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 {
			t.Fatalf("directory holds %v (%v); want only %s, no temporary file", entries, err, filepath.Base(path))
		}
	}

	if err := WriteFileAtomic(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("first", 0o600)

	// An open handle on the old file keeps seeing the old content: the new file was renamed over
	// it, not rewritten in place.
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := WriteFileAtomic(path, []byte("second, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("second, longer", 0o644)
	buf := make([]byte, 64)
	n, _ := old.Read(buf)
	if string(buf[:n]) != "first" {
		t.Fatalf("old handle reads %q; the file was rewritten in place", buf[:n])
	}
}

func TestWriteFileAtomicMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := WriteFileAtomic(path, []byte("x"), 0o600); err == nil {
		t.Fatal("no error for a missing directory")
	}
}
