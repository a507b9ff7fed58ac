package testutil

import (
	"strings"
	"sync"
	"testing"
)

// Writers and a reader at once (the race detector checks the locking); every write is kept whole.
func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				if _, err := b.Write([]byte("line\n")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			if s := b.String(); strings.Count(s, "line\n")*5 != len(s) {
				t.Errorf("torn write in %q", s)
				return
			}
		}
	})
	wg.Wait()
	if n := strings.Count(b.String(), "line\n"); n != 400 {
		t.Fatalf("%d lines, want 400", n)
	}
}
